"""The deployment files (deploy/): the systemd units load (systemd-analyze verify) and every
option they pass exists in the command they start."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cranewatch.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
BINARY = "/opt/cranewatch/.venv/bin/cranewatch"


def _exec_start(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def _environment(unit: Path) -> dict[str, str]:
    """The example environment file of a unit, as systemd would read it."""
    example = unit.parent / (unit.name.split("@")[0].split(".")[0].removeprefix("cranewatch-") + ".env.example")
    values = {}
    for line in example.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_there_are_units_for_the_sensor_and_the_console() -> None:
    assert {u.name for u in UNITS} == {"cranewatch-monitor@.service", "cranewatch-serve.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_every_option_a_unit_passes_is_one_the_command_takes(unit: Path) -> None:
    argv = _exec_start(unit)
    assert argv[0] == BINARY
    env = {**_environment(unit), "i": "sts-07"}
    args = [re.sub(r"\$\{(\w+)\}|%(i)", lambda m: env[m.group(1) or m.group(2)], a) for a in argv[1:]]
    parsed = build_parser().parse_args(args)  # exits 2 on an unknown option
    assert parsed.command == args[0]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_loads_the_unit(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    binary = Path(sys.executable).parent / "cranewatch"
    if not binary.exists():
        pytest.skip("the cranewatch entry point is not installed in this environment")
    name = unit.name.replace("@.", "@sts-07.")
    (tmp_path / name).write_text(unit.read_text().replace(BINARY, str(binary)))
    done = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / name)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


# -- deploy/postgres/roles.sql on a real PostgreSQL ---------------------------------------------

ROLES = REPO / "deploy" / "postgres" / "roles.sql"
LAB = REPO / "src" / "cranewatch" / "data"
FLEET = REPO / "profiles" / "fleet-example.toml"
PROFILE = REPO / "profiles" / "sts-07.toml"
BYPASS = LAB / "lab" / "safety-bypass" / "crane-lan.pcap"


def test_the_roles_each_part_logs_in_through_allow_what_it_needs_and_no_more(
        pg_cluster: Any, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from cranewatch.cli import main
    from cranewatch.store import open_store

    assert main(["fleet", "import", str(FLEET), "--db", pg_url]) == 0  # the owner makes the tables
    for state in ("quarantined", "under-analysis"):
        assert main(["fleet", "set-state", "STS-07", state, "--reason", "t", "--db", pg_url]) == 0
    database = pg_url.split("/")[3].split("?")[0]
    pg_cluster.admin(ROLES.read_text(), database=database)
    pg_cluster.admin(ROLES.read_text(), database=database)  # it can be run again
    logins = {part: f"{part}_{database}" for part in ("sensor", "console", "viewer")}
    for part, login in logins.items():
        pg_cluster.admin(f'CREATE ROLE "{login}" LOGIN IN ROLE cranewatch_{part}',
                         f'GRANT CONNECT ON DATABASE "{database}" TO "{login}"')
    url = {part: pg_cluster.url(database, user=login) for part, login in logins.items()}
    try:
        capsys.readouterr()
        # the sensor records an analysis
        assert main(["analyze", str(BYPASS), "--crane", "STS-07", "--profile", str(PROFILE),
                     "--db", url["sensor"], "--format", "jsonl"]) == 0
        with open_store(pg_url) as store:
            fid = store.findings("STS-07")[0].id
        capsys.readouterr()
        # ... but may not dispose of a finding (row-level security), nor move the crane
        for argv in (["triage", fid, "--state", "false-positive", "--reason", "x", "--by", "s"],
                     ["fleet", "set-state", "STS-07", "rejected", "--reason", "x"]):
            assert main([*argv, "--db", url["sensor"]]) == 4, argv
            assert "may not do that" in capsys.readouterr().err
        # the viewer reads and writes nothing
        assert main(["triage", "--list", "STS-07", "--db", url["viewer"]]) == 0
        capsys.readouterr()
        assert main(["analyze", str(BYPASS), "--crane", "STS-07", "--profile", str(PROFILE),
                     "--db", url["viewer"], "--format", "jsonl"]) == 4
        capsys.readouterr()
        # the console triages
        assert main(["triage", fid, "--state", "false-positive", "--reason", "lab key", "--by", "ana",
                     "--db", url["console"]]) == 0
        with open_store(pg_url) as store:
            assert [d.state for d in store.dispositions("STS-07")] == ["false-positive"]
            assert len(store.runs("STS-07")) == 1
        # password hashes are the console's alone
        denied = pg_cluster.admin("SELECT has_table_privilege('cranewatch_sensor', 'users', 'SELECT'),"
                                  " has_table_privilege('cranewatch_viewer', 'sessions', 'SELECT'),"
                                  " has_table_privilege('cranewatch_console', 'users', 'SELECT')",
                                  database=database)[0]
        assert tuple(denied) == (False, False, True)
    finally:
        for login in logins.values():
            pg_cluster.admin(f'DROP OWNED BY "{login}"', database=database)
            pg_cluster.admin(f'DROP ROLE "{login}"')
