"""Bounded fuzzing of the configuration loaders and the ruleset generator (issue 19).

Mutated profiles, fleet files and baselines (fixed seeds, see ``config_mutations``) either
load or fail with a located cranewatch error, never another exception; what loads is usable
downstream (a ruleset, process envelopes). Hypothesis checks that an unknown key in any table
never loads and that no interface name, crane name or station yields an injectable ruleset.
The long run with counts is ``benchmarks/fuzz/fuzz_config.py``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config_mutations import located, mutate_json, mutate_toml, outcome
from cranewatch.baseline import from_json, save_baseline
from cranewatch.configschema import Table
from cranewatch.errors import CranewatchError, EnvironmentProblem, ProfileError, UsageError
from cranewatch.fleet.fleetfile import load_fleet
from cranewatch.policy import check_ruleset, inservice_ruleset, quarantine_ruleset
from cranewatch.policy.nft import INTERFACE_RE
from cranewatch.process.envelope import ProcessBaseline
from cranewatch.profile import PROFILE_SHAPE, parse_profile
from cranewatch.store import Crane

REPO = Path(__file__).resolve().parents[1]
STS07 = (REPO / "profiles" / "sts-07.toml").read_text()
FLEET = (REPO / "profiles" / "fleet-example.toml").read_text()


def statements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def assert_safe_ruleset(text: str) -> None:
    """Only our constructs at top level; every quoted interface is a legal one."""
    top = [line for line in text.splitlines() if line and not line.startswith(("#", "\t", "}"))]
    assert all(re.fullmatch(r"(table|delete table) inet cranewatch[a-z0-9_]*( \{)?", t) for t in top), top
    for name in re.findall(r'[io]ifname "([^"]*)"', text):
        assert INTERFACE_RE.fullmatch(name)
    assert all("#" not in s for s in statements(text))


def test_mutated_profiles_load_or_fail_located() -> None:
    rng = random.Random(19)
    kinds: dict[str, int] = {}
    for _ in range(300):
        text = mutate_toml(STS07, rng)
        kind, result = outcome(lambda text=text: parse_profile(text, "sts-07.toml"))
        kinds[kind.split(":")[0]] = kinds.get(kind.split(":")[0], 0) + 1
        assert not kind.startswith("crash"), (kind, result, text)
        if kind == "ok":
            follow, ruleset = outcome(lambda result=result: inservice_ruleset(result))
            assert not follow.startswith("crash"), (follow, ruleset, text)
            if follow == "ok":
                assert_safe_ruleset(ruleset)
        else:
            assert located(result), (str(result), text)
    assert kinds["error"] > 150 and kinds.get("ok", 0) > 5  # both paths exercised


def test_mutated_fleet_files_load_or_fail_located(tmp_path: Path) -> None:
    rng = random.Random(12)
    path = tmp_path / "fleet.toml"
    for _ in range(200):
        text = mutate_toml(FLEET, rng)
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        kind, result = outcome(lambda: load_fleet(path))
        assert not kind.startswith("crash"), (kind, result, text)
        if kind == "ok":
            for crane in result:
                if crane.zone:
                    follow, ruleset = outcome(lambda crane=crane: quarantine_ruleset(crane, "10.20.0.100"))
                    assert not follow.startswith("crash"), (follow, ruleset)
        else:
            assert located(result), (str(result), text)


@pytest.fixture(scope="module")
def saved_baseline(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    from dataclasses import replace

    import numpy as np

    from cranewatch.process.learned import LearnedModel
    from detect_helpers import learn, normal_crane

    learned = LearnedModel(("wind_speed", "hoist_load"), np.zeros(2), np.ones(2), np.zeros((5, 2)),
                           np.ones(2), np.ones(2), 0.5, 1.0, 86400.0, np.ones(2))
    process = ProcessBaseline({"hoist_load": (0.0, 61.0)}, {"hoist_load": {1: 2.0, 3: 1.0}},
                              {"hoist_load": 4.0}, (1.0, 0.0, 0.1), learned, 600.0, {"hoist_load": 2.0})
    path = tmp_path_factory.mktemp("baseline") / "b.json"
    save_baseline(replace(learn(normal_crane()), process=process.to_json()), path)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_mutated_baselines_load_or_fail_located(saved_baseline: dict) -> None:  # type: ignore[type-arg]
    rng = random.Random(70)
    profile = parse_profile(STS07, "sts-07.toml")
    for _ in range(300):
        text = mutate_json(saved_baseline, rng)

        def load(text: str = text) -> object:
            try:
                data = json.loads(text)
            except ValueError as exc:  # read_baseline's own JSON error path is tested elsewhere
                raise ProfileError(f"not JSON: {exc}") from None
            return from_json(data, "b.json", text)

        kind, result = outcome(load)
        assert not kind.startswith("crash"), (kind, result, text)
        if kind == "ok":  # `policy --baseline` (before: ValueError on a host that is no address)
            assert_safe_ruleset(inservice_ruleset(profile, result))
        if kind == "ok" and result.process is not None:  # type: ignore[attr-defined]
            # what loads is usable: the envelopes build (before: AttributeError here, exit 70)
            ProcessBaseline.from_json(result.process)  # type: ignore[attr-defined]


ENTRIES = {"allow": 'client = "cms"\nserver = "plc"\nprotocol = "modbus"',
           "outside": 'name = "v"\naddress = "203.0.113.4"\nclients = ["cms"]',
           "hosts": 'name = "new"\nip = "10.20.7.77"'}


@settings(max_examples=60, deadline=None)
@given(table=st.sampled_from(["crane", "zones", "gateway", "safety", "data", "allow", "outside", "hosts"]),
       key=st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True))
def test_an_unknown_key_in_any_table_never_loads(table: str, key: str) -> None:
    shape = PROFILE_SHAPE.fields[table]  # type: ignore[attr-defined]
    fields = shape.fields if isinstance(shape, Table) else shape.item.fields
    if key in fields:
        return
    if table in ENTRIES:
        text = f'{STS07}\n[[{table}]]\n{ENTRIES[table]}\n{key} = "x"\n'
    elif f"[{table}]\n" in STS07:
        text = STS07.replace(f"[{table}]\n", f'[{table}]\n{key} = "x"\n', 1)
    else:
        text = f'{STS07}\n[{table}]\n{key} = "x"\n'
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.toml")
    assert any(f"unknown key {key!r}" in p.message for p in caught.value.problems)


@pytest.fixture(scope="module")
def nft_works() -> bool:
    if shutil.which("nft") is None:
        return False
    try:
        check_ruleset("table inet cw_probe {\n}\n")
    except EnvironmentProblem:
        return False
    return True


networks = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(crane=st.text(max_size=30), interface=st.one_of(st.none(), st.text(max_size=20)),
       stations=st.lists(networks, min_size=1, max_size=3), zones=st.lists(networks, min_size=1, max_size=2),
       force=st.booleans(), check=st.integers(0, 9))
def test_no_input_gives_an_injectable_or_unparsable_ruleset(nft_works: bool, crane: str, interface: str | None,
                                                            stations: list[str], zones: list[str],
                                                            force: bool, check: int) -> None:
    try:
        text = quarantine_ruleset(Crane(crane or "X"), stations, zone=zones, interface=interface, force=force)
    except UsageError:
        return
    assert_safe_ruleset(text)
    if interface is not None:
        assert INTERFACE_RE.fullmatch(interface)
    if nft_works and check == 0:  # one in ten through the real parser
        check_ruleset(text)


def test_every_loader_error_of_the_fuzz_is_a_cranewatch_error() -> None:
    """The shapes themselves: what ``check`` reports on values of every type is a message, no
    exception (a guard for new shapes)."""
    from cranewatch.configschema import check

    for value in (None, 1, "x", [], {}, [[[]]], {"crane": []}, {"allow": [1, "x", {"port": {}}]}):
        cleaned, problems = check(value, PROFILE_SHAPE)
        assert isinstance(cleaned, dict) and all(isinstance(p.message, str) for p in problems)
    with pytest.raises(CranewatchError):
        parse_profile("allow = 5\n")
