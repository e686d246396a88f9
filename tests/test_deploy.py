"""The deployment files (deploy/): the systemd units load (systemd-analyze verify) and every
option they pass exists in the command they start."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

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
