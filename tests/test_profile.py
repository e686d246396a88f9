"""Crane profiles: the shipped STS-07 profile loads, broken ones report every problem located."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cranewatch.errors import ProfileError
from cranewatch.profile import bundled_profile, load_profile, parse_profile

REPO = Path(__file__).resolve().parents[1]
STS07 = REPO / "profiles" / "sts-07.toml"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def test_reference_profile_loads_with_the_reference_crane() -> None:
    p = load_profile(STS07)
    assert p.crane_id == "STS-07"
    assert p.host_by_ip("10.20.7.10").role == "plc"  # type: ignore[union-attr]
    assert p.zone_of("10.20.7.20") == "crane"
    assert p.zone_of("10.20.0.5") == "terminal"
    assert p.zone_of("198.51.100.7") == "outside"
    assert p.gateway is not None and p.gateway.ip == "10.20.7.254"
    assert {r.name for r in p.registers} >= {"hoist_load", "safety_bypass", "overload_limit"}
    assert p.point_at("IR", 1).scale == 0.1  # type: ignore[union-attr]


def test_bundled_copy_is_the_same_profile() -> None:
    assert bundled_profile().read_text() == STS07.read_text()


def test_writes_are_bounded_per_client_and_range() -> None:
    p = load_profile(STS07)
    plc, cms, ocr, ews = "10.20.7.10", "10.20.7.30", "10.20.7.20", "10.20.0.50"
    assert p.may_write(cms, plc, "CO", 1, 1)  # fault_reset pulse
    assert not p.may_write(cms, plc, "CO", 0, 1)  # safety_bypass is not the CMS's to touch
    assert not p.may_write(ocr, plc, "HR", 0, 1)
    assert p.may_write(ews, plc, "HR", 0, 2)
    assert not p.may_write("10.20.7.99", plc, "HR", 0, 1)
    assert [x.name for x in p.safety_points_in("CO", 0, 2)] == ["safety_bypass"]


def test_maintenance_window_in_local_time() -> None:
    p = load_profile(STS07)
    ews = "10.20.0.50"
    # Tuesday 2026-11-24 07:30 in New York is 12:30 UTC.
    assert p.in_maintenance(ews, ts("2026-11-24T12:30:00+00:00")) is True
    assert p.in_maintenance(ews, ts("2026-11-24T16:00:00+00:00")) is False  # 11:00 local
    assert p.in_maintenance(ews, ts("2026-11-25T12:30:00+00:00")) is False  # Wednesday
    assert p.in_maintenance("10.20.7.30", ts("2026-11-24T12:30:00+00:00")) is None


def test_dated_window_and_allowed_outside_endpoint() -> None:
    text = STS07.read_text() + """
[[maintenance]]
hosts = ["ews"]
from = 2026-12-01T08:00:00Z
until = 2026-12-01T09:00:00Z

[[outside]]
name = "vendor"
address = "203.0.113.40/32"
port = 443
clients = ["cms"]
"""
    p = parse_profile(text)
    assert p.in_maintenance("10.20.0.50", ts("2026-12-01T08:30:00+00:00")) is True
    assert p.in_maintenance("10.20.0.50", ts("2026-12-01T09:30:00+00:00")) is False
    assert p.allows("10.20.7.30", "203.0.113.40", "tls", 443)
    assert not p.allows("10.20.7.20", "203.0.113.40", "tls", 443)
    assert not p.allows("10.20.7.30", "203.0.113.40", "tls", 22)


BROKEN = """\
[crane]
id = "STS-09"

[zones]
crane = ["10.20.9.0/33"]
moon = ["1.2.3.0/24"]

[gateway]
ip = "10.20.9.254"
mac = "02:00:zz:00:00:01"

[[hosts]]
name = "plc"
ip = "10.20.9.300"

[[hosts]]
name = "plc"
ip = "10.20.9.11"

[[allow]]
client = "nobody"
server = "plc"
protocol = "modbus"
port = 70000
registers = ["XX:1-2"]

[[maintenance]]
hosts = ["ews"]
start = "25:00"
end = "10:00"
timezone = "Mars/Olympus"

[[registers]]
table = "HR"
address = 0
name = "overload_limit"
min = 80
max = 10
"""


def test_broken_profile_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sts-09.toml"
    path.write_text(BROKEN)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    found = {(p.location.line, p.message.split(":")[0]) for p in caught.value.problems if p.location}
    # Lines checked by reading BROKEN above.
    expected = {
        (5, "zones.crane"),  # /33
        (6, "zones"),  # unknown zone moon
        (10, "gateway.mac"),
        (14, "hosts.ip"),
        (17, "hosts"),  # duplicate name
        (21, "allow.client"),  # nobody
        (24, "allow.port"),
        (25, "allow.registers"),
        (28, "maintenance.hosts"),
        (29, "maintenance.start"),
        (31, "maintenance.timezone"),
        (38, "registers"),  # min above max
    }
    assert expected <= found, sorted(found)
    assert all(p.location and p.location.file == str(path) for p in caught.value.problems)


def test_toml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[crane]\nid = "x"\nmodel = \n')
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.location is not None and caught.value.location.line == 3


def test_profile_check_command(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "cranewatch"]
    ok = subprocess.run([*exe, "profile", "check", str(STS07)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
    path = tmp_path / "sts-09.toml"
    path.write_text(BROKEN)
    bad = subprocess.run([*exe, "profile", "check", str(path)], capture_output=True, text=True)
    assert bad.returncode == 3
    assert f"{path}:24" in bad.stderr and f"{path}:10" in bad.stderr
    assert "Traceback" not in bad.stderr


MODEL = """\
# a crane model: what every crane of the type has
[crane]
model = "STS, single hoist, 65 t"

[zones]
crane = ["10.20.0.0/16"]

[[hosts]]
name = "plc"
role = "plc"
ip = "10.20.99.10"

[[hosts]]
name = "ews"
role = "ews"
ip = "10.20.0.50"

[[allow]]
client = "ews"
server = "plc"
protocol = "modbus"
port = 502
write = true

[safety]
points = ["safety_bypass"]

[[registers]]
table = "CO"
address = 0
name = "safety_bypass"
"""

CRANE = """\
[crane]
id = "STS-11"
extends = "model.toml"

[zones]
crane = ["10.20.11.0/24"]
terminal = ["10.20.0.0/24"]

[[hosts]]
name = "plc"
role = "plc"
ip = "10.20.11.10"

[[registers]]
table = "CO"
address = 1
name = "fault_reset"
"""


def test_a_crane_extends_its_model_profile(tmp_path: Path) -> None:
    (tmp_path / "model.toml").write_text(MODEL)
    (tmp_path / "sts-11.toml").write_text(CRANE)
    p = load_profile(tmp_path / "sts-11.toml")
    assert (p.crane_id, p.model) == ("STS-11", "STS, single hoist, 65 t")
    assert p.host_by_name("plc").ip == "10.20.11.10"  # type: ignore[union-attr]  # the crane's own
    assert p.host_by_name("ews").ip == "10.20.0.50"  # type: ignore[union-attr]  # from the model
    assert p.zone_of("10.20.99.10") == "outside"  # the crane's zones replace the model's
    assert [r.name for r in p.registers] == ["safety_bypass", "fault_reset"]
    assert p.may_write("10.20.0.50", "10.20.11.10", "CO", 0, 1)
    assert [x.name for x in p.safety_points_in("CO", 0, 2)] == ["safety_bypass"]


def test_problems_are_located_in_the_file_that_says_them(tmp_path: Path) -> None:
    (tmp_path / "model.toml").write_text(MODEL.replace('port = 502', 'port = 99999'))
    (tmp_path / "sts-11.toml").write_text(CRANE.replace('ip = "10.20.11.10"', 'ip = "10.20.11.300"'))
    with pytest.raises(ProfileError) as caught:
        load_profile(tmp_path / "sts-11.toml")
    where = {(Path(p.location.file).name, p.location.line) for p in caught.value.problems if p.location}
    assert where == {("model.toml", 22), ("sts-11.toml", 12)}  # port; ip (counted by hand)


def test_extends_errors(tmp_path: Path) -> None:
    (tmp_path / "loop.toml").write_text('[crane]\nid = "X"\nextends = "loop.toml"\n')
    with pytest.raises(ProfileError, match="extends itself") as caught:
        load_profile(tmp_path / "loop.toml")
    assert caught.value.location is not None and caught.value.location.line == 3
    (tmp_path / "lost.toml").write_text('[crane]\nid = "X"\nextends = "nowhere.toml"\n')
    with pytest.raises(ProfileError, match="cannot read model profile"):
        load_profile(tmp_path / "lost.toml")


# -- strict profiles (issue 19 case 7): a misspelt key can never widen an allow-list -----------

OUTSIDE_PROFILE = """\
[crane]
id = "STS-11"
[zones]
crane = ["10.30.11.0/24"]
[[hosts]]
name = "cms"
ip = "10.30.11.30"
[[hosts]]
name = "plc"
role = "plc"
ip = "10.30.11.10"
[[outside]]
name = "vendor-diagnostics"
address = "203.0.113.40/32"
port = 443
protocol = "https"
clients = ["cms"]
"""


def test_a_misspelt_registers_key_is_an_error_not_a_lifted_limit() -> None:
    text = STS07.read_text()
    first = 'registers = ["IR:0-11", "DI:0-6", "HR:0-3", "CO:1"]'
    line = text.splitlines().index(first) + 1
    # before: loaded, and cms (write = true) could then write any register of the PLC
    assert not load_profile(STS07).may_write("10.20.7.30", "10.20.7.10", "HR", 100, 1)
    with pytest.raises(ProfileError) as caught:
        parse_profile(text.replace(first, first.replace("registers", "regsiters")), "sts-07.toml")
    (problem,) = caught.value.problems
    assert problem.location is not None and problem.location.line == line
    assert problem.message.startswith("allow[0]: unknown key 'regsiters' (did you mean 'registers'?")


def test_a_misspelt_clients_key_in_outside_is_an_error_not_the_whole_crane_zone() -> None:
    from cranewatch.policy import inservice_ruleset

    good = inservice_ruleset(parse_profile(OUTSIDE_PROFILE, "sts-11.toml"))
    assert "ip saddr 10.30.11.30 ip daddr 203.0.113.40 tcp dport 443" in good
    # before: `client` was ignored and the rule read `ip saddr 10.30.11.0/24` (the PLC included)
    with pytest.raises(ProfileError) as caught:
        parse_profile(OUTSIDE_PROFILE.replace("clients = ", "client = "), "sts-11.toml")
    (problem,) = caught.value.problems
    assert problem.location is not None and problem.location.line == 17
    assert "outside[0]: unknown key 'client' (did you mean 'clients'?" in problem.message


@pytest.mark.parametrize(("old", "new", "message"), [
    ('hosts = ["ews"]', 'hosts = "ews"',
     "maintenance[0].hosts: expected a list (a string without control characters each), got a string 'ews'"),
    ('weekdays = ["tue"]', 'weekdays = "tue"',
     "maintenance[0].weekdays: expected a list (a string without control characters each), got a string 'tue'"),
    ('registers = ["IR:0-11", "DI:0-6"]', 'registers = "IR:0-11"',
     "allow[1].registers: expected a list (a string without control characters each), got a string 'IR:0-11'"),
])
def test_non_list_values_are_located_errors_not_exit_70(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = STS07.read_text()
    assert old in text
    path = tmp_path / "sts-07.toml"
    path.write_text(text.replace(old, new, 1))
    expected = text.splitlines().index(next(x for x in text.splitlines() if x.startswith(old))) + 1
    done = subprocess.run([sys.executable, "-m", "cranewatch", "profile", "check", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # before: 70, a TypeError
    assert done.stderr.splitlines()[1:] == [f"  {path}:{expected}: {message}"]


def test_wrong_types_and_unknown_keys_are_all_reported_at_once_in_line_order() -> None:
    text = OUTSIDE_PROFILE.replace("port = 443", 'port = "443"').replace(
        'role = "plc"', 'role = "plc"\nwrite = "yes"') + '\n[[alow]]\nclient = "cms"\n[crane2]\nid = 3\n'
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.toml")
    found = [(p.location.line if p.location else None, p.message.split(" (")[0]) for p in caught.value.problems]
    assert found == [
        (11, "hosts[1]: unknown key 'write'"),
        (16, "outside[0].port: expected an integer, got a string '443'"),
        (20, "top level: unknown key 'alow'"),
        (22, "top level: unknown key 'crane2'"),
    ]


def test_text_that_is_not_a_profile_is_a_located_error(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[crane]\nid = "Kr\xe4n"\n'.encode("latin-1"))
    with pytest.raises(ProfileError, match="not UTF-8 text"):
        load_profile(latin)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(deep)
    with pytest.raises(ProfileError, match=r"crane\.id: expected a string without control characters"):
        parse_profile('[crane]\nid = "STS\\u001b[31m"\n[zones]\ncrane = ["10.0.0.0/24"]\n')


def test_what_the_long_fuzz_run_found_is_located(tmp_path: Path) -> None:
    """benchmarks/fuzz/fuzz_config.py seed 19: an over-long `extends` raised OSError (exit 70),
    an unterminated string at the end of the file gave an error without a line."""
    with pytest.raises(ProfileError, match=r"crane\.extends.*File name too long") as caught:
        parse_profile(f'[crane]\nid = "X"\nextends = "{"m" * 5000}.toml"\n', str(tmp_path / "p.toml"))
    assert caught.value.location is not None and caught.value.location.line == 3
    with pytest.raises(ProfileError, match="Unterminated string") as caught:
        parse_profile('[crane]\nid = """X\n', "p.toml")
    assert caught.value.location is not None and caught.value.location.line == 2


def test_an_over_long_timezone_is_an_unknown_timezone() -> None:
    """Fuzz seed 19 case 2380: ZoneInfo("a" * 5000) raised OSError (exit 70)."""
    text = STS07.read_text().replace('timezone = "America/New_York"', f'timezone = "{"a" * 5000}"', 1)
    assert "a" * 5000 in text
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "sts-07.toml")
    assert [p.message[:40] for p in caught.value.problems] == ["maintenance.timezone: unknown timezone '"]
