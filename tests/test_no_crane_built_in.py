"""No crane is built into the library: STS-07 lives in its profile (src/cranewatch/data), the
lab, the demo and the tests. Without a profile the library runs generically and says so."""

from __future__ import annotations

import re
from pathlib import Path

from cranewatch.forensics.api import NO_ZONE_WARNING, endpoint_policy
from cranewatch.forensics.checks.base import EndpointPolicy
from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.lab.faults import Tamper
from cranewatch.lab.registers import STS07_LIMITS, STS07_REGISTER_MAP
from cranewatch.process.checks import CraneLimits
from cranewatch.process.engine import ProcessConfig, config_from_profile, run_checks
from cranewatch.process.signals import RegisterMap
from cranewatch.process.simulate import simulate
from cranewatch.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "src" / "cranewatch"
PROFILE = LIBRARY / "data" / "profiles" / "sts-07.toml"
T0 = 1_700_000_000.0

# Modules that legitimately build STS-07, and why.
ALLOWED = {
    "data": "the bundled profiles, fleet and lab data: where STS-07 is meant to live",
    "lab": "the lab runs the reference crane STS-07 (its map: lab/registers.py)",
    "demo.py": "the demo builds STS-07's fleet, captures and images",
    "commands/demo.py": "the demo command",
    "forensics/demo_image.py": "the demo CMS image of STS-07",
    "forensics/artefacts.py": "artefacts planted into the demo image (its CMS config names STS-07's PLC)",
    "process/simulate.py": "the lab model's poll generator (tests, benchmarks) with STS-07's PLC and CMS",
}
# STS-07's addresses, the names of its tables and its limits (rated 65 t, overload 71.5 t).
PATTERNS = {
    "STS-07 crane LAN address": re.compile(r"\b10\.20\.7\.\d"),
    "STS-07 terminal address": re.compile(r"\b10\.20\.0\.\d"),
    "STS-07 register map or limits by name": re.compile(r"STS07_(REGISTER_MAP|LIMITS)\s*="),
    "STS-07's overload limit 71.5": re.compile(r"(?<![\d.])71\.5(?![\d])"),
    "STS-07's rated load as a default": re.compile(r"rated_load\b[^\n]*=\s*65(\.0)?\b"),
}


def _allowed(path: Path) -> bool:
    rel = path.relative_to(LIBRARY).as_posix()
    return any(rel == key or rel.startswith(key + "/") for key in ALLOWED)


def test_library_code_knows_no_crane() -> None:
    hits = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if _allowed(path):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            # Allowed: comments, and help/doc examples that show an address or a command line
            # ("e.g. ...", "cranewatch quarantine STS-07 --station 10.20.0.100"): words, not defaults.
            if stripped.startswith("#") or "e.g." in line or "cranewatch " in line or "``" in line:
                continue
            for what, pattern in PATTERNS.items():
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {what}: {stripped}")
    assert hits == [], "\n".join(hits)


def test_the_grep_would_catch_the_old_defaults(tmp_path: Path) -> None:
    """The patterns match what the library used to carry (so the test above can fail)."""
    old = [
        '    crane_nets: tuple = (ipaddress.ip_network("10.20.7.0/24"),)',
        '    terminal_nets: tuple = (ipaddress.ip_network("10.20.0.0/24"),)',
        "STS07_REGISTER_MAP = RegisterMap(",
        "    overload_limit: float = 71.5  # t",
        "    rated_load: float = 65.0  # t",
    ]
    assert all(any(p.search(line) for p in PATTERNS.values()) for line in old)


def test_no_default_register_map_or_limits() -> None:
    assert RegisterMap.from_profile(object()).registers == ()
    assert ProcessConfig().register_map.registers == ()
    assert CraneLimits().missing() == ("rated_load", "overload_limit", "wind_stop_limit",
                                       "hoist_speed_limit", "trolley_speed_limit")
    # the profile gives them: the same values as the lab's STS-07
    config = config_from_profile(load_profile(PROFILE))
    assert config.limits == STS07_LIMITS
    assert {s.name for s in config.register_map.registers} == {s.name for s in STS07_REGISTER_MAP.registers}


def test_without_limits_the_limit_checks_are_skipped_not_judged_by_sts07() -> None:
    frame = simulate(120, seed=11, start=T0, tamper=Tamper("false-load", T0 + 10, T0 + 40))
    with_limits = {f.rule for f in run_checks(frame, ProcessConfig(limits=STS07_LIMITS), with_plots=False)}
    without = {f.rule for f in run_checks(frame, ProcessConfig(), with_plots=False)}
    assert "process-torque-load" in with_limits  # rated load 65 t gives the torque relation
    assert "process-torque-load" not in without  # no rated load, no learned fit: not judged


def test_endpoint_policy_without_zone_is_generic() -> None:
    policy, crane = endpoint_policy()
    assert policy == EndpointPolicy() and policy.crane_nets == () and crane is None
    assert classify_host("10.20.7.10", policy) == "private"
    assert classify_host("192.168.1.5", policy) == "private"
    assert classify_host("198.51.100.7", policy) == "public"
    zoned, _ = endpoint_policy(zone=["10.20.7.0/24"])
    assert classify_host("10.20.7.10", zoned) == "crane-lan"
    assert "no crane zone given" in NO_ZONE_WARNING
