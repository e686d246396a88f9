"""Fleet: every allowed and refused life-cycle step, the audit trail, fleet files, the CLI."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.errors import ProfileError, StateError
from cranewatch.fleet import NEXT, STATES, import_fleet, load_fleet, register, transition
from cranewatch.store import Crane, Store, open_store

REPO = Path(__file__).resolve().parents[1]
FLEET_EXAMPLE = REPO / "profiles" / "fleet-example.toml"

# Every step the life cycle allows (checked by hand against crane-reference.md and lifecycle.NEXT).
ALLOWED = {
    ("delivered", "quarantined"),
    ("quarantined", "under-analysis"),
    ("under-analysis", "cleared"),
    ("under-analysis", "rejected"),
    ("cleared", "in-service"),
    ("cleared", "quarantined"),
    ("rejected", "quarantined"),
    ("rejected", "retired"),
    ("in-service", "quarantined"),
    ("in-service", "retired"),
}


@pytest.fixture
def store(store_at: str) -> Iterator[Store]:
    """An empty store (closed afterwards): an SQLite file, then a PostgreSQL database."""
    with open_store(store_at) as s:
        yield s


def crane_in(store: Store, state: str, *, cleared_by_gate: bool = True) -> str:
    store.add_crane(Crane("STS-07", state=state), who="setup", why=f"test starts {state}")
    if cleared_by_gate:
        store.record_gate("STS-07", "cleared", [], {}, who="gate")
    return "STS-07"


def test_the_allowed_table_is_the_lifecycle_table() -> None:
    assert {(a, b) for a, nexts in NEXT.items() for b in nexts} == ALLOWED


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_step_is_made_and_recorded(store: Store, current: str, target: str) -> None:
    name = crane_in(store, current)
    before = time.time()
    entry = transition(store, name, target, by="ana", reason="because the test says so",
                       by_gate=target == "cleared")
    crane = store.crane(name)
    assert crane is not None and crane.state == target
    last = store.history(name)[-1]
    assert (last.who, last.why, last.from_state, last.to_state) == (
        "ana", "because the test says so", current, target)
    assert before <= last.at <= time.time()
    assert entry == last


REFUSED = sorted(set(itertools.product(STATES, STATES)) - ALLOWED)


def expected_reason(current: str, target: str) -> str:
    if current == target:
        return "is already"
    if current == "retired":
        return "retirement is final"
    if target == "in-service":
        return "in-service needs a clearance from `cranewatch gate`"
    if target == "cleared":
        return "decided by `cranewatch gate STS-07`"
    if target == "rejected":
        return "cleared or rejected after analysis"
    if target == "under-analysis":
        return "analysis happens in quarantine"
    return f"cannot go from {current} to {target}"


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_refused_step_is_explained_and_changes_nothing(store: Store, current: str, target: str) -> None:
    name = crane_in(store, current)
    with pytest.raises(StateError, match=expected_reason(current, target).replace("`", ".")):
        transition(store, name, target, by="ana", reason="try it")
    crane = store.crane(name)
    assert crane is not None and crane.state == current
    assert len(store.history(name)) == 1


def test_in_service_is_refused_without_a_recorded_clearance(store: Store) -> None:
    name = crane_in(store, "cleared", cleared_by_gate=False)
    with pytest.raises(StateError, match="in-service needs a clearance from `cranewatch gate`"):
        transition(store, name, "in-service", reason="hurry")
    store.record_gate(name, "rejected", [], {}, who="gate")
    with pytest.raises(StateError, match="in-service needs a clearance"):
        transition(store, name, "in-service", reason="hurry")
    store.record_gate(name, "cleared", [], {}, who="gate")
    assert transition(store, name, "in-service", reason="cleared now").to_state == "in-service"


def test_cleared_needs_the_gate_but_rejected_may_be_set_by_hand(store: Store) -> None:
    name = crane_in(store, "under-analysis")
    with pytest.raises(StateError, match="not set by hand"):
        transition(store, name, "cleared", reason="looks fine to me")
    assert transition(store, name, "rejected", reason="contract breach").to_state == "rejected"


def test_a_reason_is_required(store: Store) -> None:
    name = crane_in(store, "delivered")
    with pytest.raises(StateError, match="say why"):
        transition(store, name, "quarantined", reason="  ")


def test_the_whole_story_is_in_the_history(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "port-ot")
    register(store, Crane("STS-07", maker="Harbour Heavy"), reason="arrived by ship")
    for state in ("quarantined", "under-analysis"):
        transition(store, "STS-07", state, reason=f"to {state}")
    store.record_gate("STS-07", "cleared", [], {}, who="gate")
    transition(store, "STS-07", "cleared", reason="gate cleared", by_gate=True, by="cranewatch gate")
    transition(store, "STS-07", "in-service", reason="go live")
    transition(store, "STS-07", "retired", reason="end of life")
    steps = [(h.who, h.from_state, h.to_state) for h in store.history("STS-07")]
    assert steps == [
        ("port-ot", None, "delivered"),
        ("port-ot", "delivered", "quarantined"),
        ("port-ot", "quarantined", "under-analysis"),
        ("cranewatch gate", "under-analysis", "cleared"),
        ("port-ot", "cleared", "in-service"),
        ("port-ot", "in-service", "retired"),
    ]


def test_fleet_example_imports_both_cranes_with_components(store: Store) -> None:
    results = import_fleet(store, FLEET_EXAMPLE, by="ana")
    assert [(r.crane, r.action) for r in results] == [("STS-07", "added"), ("STS-08", "added")]
    sts07 = store.crane("STS-07")
    assert sts07 is not None
    assert sts07.state == "delivered" and sts07.zone == "10.20.7.0/24"
    assert sts07.profile_path == str(REPO / "profiles" / "sts-07.toml")
    parts = {c.name: c for c in sts07.components}
    assert parts["PLC"].ip == "10.20.7.10" and parts["PLC"].mac == "02:c7:07:00:00:0a"
    assert parts["MODEM-1"].kind == "modem" and parts["MODEM-1"].ip is None
    # a re-import updates facts but never the life-cycle state
    transition(store, "STS-07", "quarantined", reason="firewall up")
    assert [r.action for r in import_fleet(store, FLEET_EXAMPLE)] == ["updated", "updated"]
    again = store.crane("STS-07")
    assert again is not None and again.state == "quarantined"


def test_a_broken_fleet_file_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text(
        '[[crane]]\nname = "STS-07"\nzone = "10.20.7.0/33"\n\n'
        '[[crane]]\nname = "STS 08"\n\n'
        '[[crane]]\nname = "STS-09"\n  [[crane.component]]\n  name = "PLC"\n  kind = "toaster"\n'
    )
    with pytest.raises(ProfileError) as err:
        load_fleet(bad)
    text = str(err.value)
    assert len(err.value.problems) == 3
    assert f"{bad}:3: zone '10.20.7.0/33' is not a CIDR" in text
    assert f"{bad}:6: crane name 'STS 08'" in text
    assert f"{bad}:11: component PLC: kind 'toaster'" in text


def test_cli_fleet_commands(store_at: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = store_at
    assert main(["fleet", "import", str(FLEET_EXAMPLE), "--db", db]) == 0
    assert main(["fleet", "add", "STS-09", "--db", db, "--maker", "Harbour Heavy", "--zone", "10.20.9.0/24",
                 "--component", "name=PLC,kind=plc,ip=10.20.9.10,mac=02-00-5E-10-09-0A"]) == 0
    capsys.readouterr()
    assert main(["fleet", "set-state", "STS-09", "in-service", "--reason", "now", "--db", db]) == 2
    assert "in-service needs a clearance from `cranewatch gate`" in capsys.readouterr().err
    assert main(["fleet", "set-state", "STS-09", "quarantined", "--reason", "firewall up", "--by", "ben",
                 "--db", db]) == 0
    assert main(["fleet", "show", "STS-09", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "02:00:5e:10:09:0a" in out and "delivered → quarantined: firewall up" in out and " ben " in out
    assert main(["fleet", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "STS-07" in listing and "STS-08" in listing and "quarantined" in listing
    assert main(["fleet", "show", "STS-99", "--db", db]) == 2
    assert "not registered" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["fleet"], ["fleet", "add"], ["fleet", "import"], ["fleet", "list"], ["fleet", "show"],
    ["fleet", "set-state"], ["quarantine"], ["policy"], ["gate"], ["report"], ["serve"],
])
def test_every_command_of_the_fleet_story_has_an_example(command: list[str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "Example:\n  cranewatch " + command[0] in help_text


def test_list_and_show_mention_the_latest_gate_decision(store_at: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = store_at
    with open_store(db) as store:
        import_fleet(store, FLEET_EXAMPLE)
        store.record_gate("STS-07", "needs-review", [{"kind": "missing-evidence", "text": "x"}], {}, who="gate")
    capsys.readouterr()
    assert main(["fleet", "list", "--db", db]) == 0
    assert re.search(r"STS-07 +delivered +needs-review", capsys.readouterr().out)
    assert main(["fleet", "show", "STS-07", "--db", db]) == 0
    assert "gate:           needs-review" in capsys.readouterr().out


# -- strict fleet files (issue 19 case 7) and MACs that match the captures (issue 12) ----------


def test_fleet_example_macs_are_the_macs_in_the_bundled_captures(tshark: str) -> None:
    """Before: 02:00:5e:10:07:xx, which no bundled capture contains."""
    import subprocess

    from cranewatch.fleet.fleetfile import load_fleet

    seen: dict[str, set[str]] = {}
    for scenario in ("normal", "remote-ssh"):
        capture = Path(__file__).resolve().parents[1] / "src/cranewatch/data/lab" / scenario / "crane-lan.pcap"
        out = subprocess.run([tshark, "-r", str(capture), "-Y", "ip.src == 10.20.7.0/24 || arp",
                              "-T", "fields", "-e", "ip.src", "-e", "arp.src.proto_ipv4", "-e", "eth.src"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            ip, arp_ip, mac = line.split("\t")
            seen.setdefault(ip or arp_ip, set()).add(mac)
    (sts07,) = [c for c in load_fleet(FLEET_EXAMPLE) if c.name == "STS-07"]
    parts = {p.name: p.mac for p in sts07.components}
    for name, ip in (("PLC", "10.20.7.10"), ("OCR", "10.20.7.20"), ("CMS", "10.20.7.30"),
                     ("MODEM-1", "10.20.7.199")):  # the modem is registered without an address
        assert seen[ip] == {parts[name]}, name
    assert "10.20.7.21" not in seen and "10.20.7.22" not in seen  # the cameras are not in these captures


def test_unknown_keys_and_wrong_types_in_a_fleet_file_are_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text(
        '[[crane]]\nname = "STS-07"\nzoen = "10.20.7.0/24"\nmaker = 5\n'
        '  [[crane.component]]\n  name = "PLC"\n  kind = "plc"\n  macc = "02:c7:07:00:00:0a"\n'
        '  firmware = 4.2\n'
        '[[crane]]\nname = "STS-08"\ncommissioned = 2026\n')
    with pytest.raises(ProfileError) as err:
        load_fleet(bad)
    lines = [(p.location.line if p.location else None, p.message) for p in err.value.problems]
    assert lines == [
        (3, "crane[0]: unknown key 'zoen' (did you mean 'zone'? expected one of name, maker, model, "
            "commissioned, control_vendor, profile, zone, component)"),
        (4, "crane[0].maker: expected a string without control characters, got an integer 5"),
        (8, "crane[0].component[0]: unknown key 'macc' (did you mean 'mac'? expected one of name, kind, "
            "mac, ip, firmware)"),
        (9, "crane[0].component[0].firmware: expected a string without control characters, got a number 4.2"),
        (12, "crane[1].commissioned: expected a date (YYYY-MM-DD), got an integer 2026"),
    ]


def test_a_nul_in_a_fleet_file_is_a_located_error_not_a_crash(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "fleet.toml"
    bad.write_text('[[crane]]\nname = "STS-07"\nprofile = "sts\\u0000.toml"\n')
    assert main(["fleet", "import", str(bad), "--db", str(tmp_path / "cw.db")]) == 3  # before: 70
    assert f"{bad}:3: crane[0].profile: expected a string without control characters" in capsys.readouterr().err
    raw = tmp_path / "raw.toml"
    raw.write_bytes(b'[[crane]]\nname = "STS\x00"\n')
    assert main(["fleet", "import", str(raw), "--db", str(tmp_path / "cw.db")]) == 3
    assert f"{raw}:2:12: not valid TOML" in capsys.readouterr().err
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[[crane]]\nname = "STS-07"\nmaker = "Kr\xe4ne"\n'.encode("latin-1"))
    assert main(["fleet", "import", str(latin), "--db", str(tmp_path / "cw.db")]) == 3
    assert "not UTF-8 text" in capsys.readouterr().err
