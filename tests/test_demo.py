"""``cranewatch demo``: the README's first command, run for real as a subprocess.

The story runs twice on one workspace (text, then ``--keep --format jsonl``); the headline
findings are checked against the scenarios' labels and their evidence frames against tshark,
the report against the store, the rulesets against ``nft -c`` (as root).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cranewatch.demo import MARKER, capture_path, data_path, prepare_workspace
from cranewatch.errors import UsageError
from cranewatch.store import open_store

REPO = Path(__file__).resolve().parents[1]
CONTAINER_RE = re.compile(r"\b[A-Z]{3}U\d{7}\b")  # ISO 6346 owner code + U + serial + check digit


@dataclass(frozen=True)
class Run:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


@dataclass(frozen=True)
class DemoRuns:
    workspace: Path
    first: Run
    second: Run  # same workspace, --keep --format jsonl
    ids_after_first: frozenset[str]
    count_after_first: int


def run_demo_cli(*args: str, cwd: Path) -> Run:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cranewatch", "demo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=180)
    return Run(done.returncode, time.monotonic() - started, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRuns:
    root = tmp_path_factory.mktemp("demo")
    workspace = root / "ws"
    # run from elsewhere than the checkout: everything must come from the installed package data
    first = run_demo_cli("--workspace", str(workspace), cwd=root)
    assert first.returncode == 0, first.stderr
    with open_store(workspace / "cranewatch.db", readonly=True) as store:
        ids = frozenset(f.id for f in store.findings("STS-07"))
        count = store.count_findings("STS-07")
    second = run_demo_cli("--workspace", str(workspace), "--keep", "--format", "jsonl", cwd=root)
    return DemoRuns(workspace, first, second, ids, count)


def labels(scenario: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(data_path("lab", scenario, "labels.json").read_text())
    return data


def finding_blocks(text: str) -> dict[str, str]:
    """Finding id → its printed block (title line, evidence, ATT&CK and remedy lines)."""
    blocks: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        head = re.match(r"\s+\[[a-z-]+\] .*\((cw-[0-9a-f]+)\)$", line)
        if head:
            current = head.group(1)
            blocks[current] = line
        elif current and re.match(r"\s+(evidence|ATT&CK|do) ", line):
            blocks[current] += "\n" + line
        else:
            current = None
    return blocks


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start): text.index(end)]


def jsonl(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.stdout.splitlines()]


def quarantine_findings(demo: DemoRuns) -> list[dict[str, Any]]:
    return [r for r in jsonl(demo.second) if r["type"] == "finding" and r["stage"] == "quarantine"]


def tshark_rows(capture: Path, frames: list[int], *fields: str) -> list[list[str]]:
    """One row per frame: the fields tshark decodes (independently of cranewatch)."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed: run scripts/install-deps.sh")
    wanted = "{" + ", ".join(str(n) for n in frames) + "}"
    cmd = [tshark, "-r", str(capture), "-Y", f"frame.number in {wanted}", "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines()]


def one(findings: list[dict[str, Any]], category: str, text: str) -> dict[str, Any]:
    matches = [f for f in findings if f["category"] == category and text in json.dumps(f)]
    assert matches, f"no {category} finding mentioning {text}"
    return matches[0]


def within_attack(finding: dict[str, Any], scenario: str) -> dict[str, Any]:
    """The labelled attack this finding reports: its category, window and techniques agree."""
    from cranewatch.model import Finding

    first_seen = Finding.from_json(finding).first_seen
    assert first_seen is not None
    for attack in labels(scenario)["attacks"]:
        if attack["start"] - 1 <= first_seen <= attack["end"] + 1 and set(attack["technique"]) & set(finding["technique"]):
            return dict(attack)
    raise AssertionError(f"{finding['title']} at {first_seen} matches no labelled attack of {scenario}")


# -- the run ----------------------------------------------------------------------------------


def test_demo_exits_0_in_under_a_minute(demo: DemoRuns) -> None:
    assert demo.first.returncode == 0
    assert demo.first.seconds < 60, f"demo took {demo.first.seconds:.1f} s"
    assert demo.second.returncode == 0, demo.second.stderr
    assert demo.second.seconds < 60
    assert "Traceback" not in demo.first.stderr + demo.second.stderr


def test_output_tells_the_story_in_numbered_steps(demo: DemoRuns) -> None:
    out = demo.first.stdout
    positions = [out.index(f"\n{n}. ") for n in range(1, 9)]
    assert positions == sorted(positions)
    assert "delivered → quarantined" in out and "quarantined → under-analysis" in out
    assert "under-analysis → rejected" in out
    assert "normal-2: 1 capture" in out and "(quiet)" in out
    assert "\nNext:\n" in out


def test_output_names_the_four_headline_findings_with_techniques(demo: DemoRuns) -> None:
    step5 = section(demo.first.stdout, "\n5. ", "\n6. ")
    blocks = list(finding_blocks(step5).values())

    def block(category: str, must: str) -> str:
        found = [b for b in blocks if b.lstrip().startswith(f"[{category}]") and re.search(must, b)]
        assert found, f"step 5 shows no {category} finding matching {must!r}"
        assert re.search(r"ATT&CK\s+T0\d{3}", found[0]), found[0]
        assert "evidence" in found[0] and "frame" in found[0] and "do " in found[0]
        return found[0]

    remote = block("remote-access", r"SSH")
    assert set(re.findall(r"T0\d{3}", remote)) & {"T0822", "T0886"}
    leak = block("data-leak", CONTAINER_RE.pattern)
    shipped = {e["container"] for e in labels("ocr-exfil")["ocr_journal"]}
    assert set(CONTAINER_RE.findall(leak)) <= shipped
    bypass = block("safety-override", r"safety_bypass")
    assert "T0880" in bypass or "T0836" in bypass
    frozen = block("false-reading", r"hoist_load")
    assert set(re.findall(r"T0\d{3}", frozen)) & {"T0856", "T0832"}


def test_decision_is_rejected_with_blocking_reasons_and_missing_evidence(demo: DemoRuns) -> None:
    step6 = section(demo.first.stdout, "\n6. ", "\n7. ")
    assert "6. Gate: REJECTED" in step6
    assert "blocking findings" in step6 and "remote-access" in step6
    assert "missing evidence: no image scan recorded for OCR" in step6
    decision = next(r for r in jsonl(demo.second) if r["type"] == "decision")
    assert decision["decision"] == "rejected"
    assert any(r["kind"] == "blocking-finding" and r["category"] == "remote-access" for r in decision["reasons"])


# -- the findings against labels and tshark ---------------------------------------------------


def test_remote_access_is_the_labelled_ssh_session(demo: DemoRuns) -> None:
    finding = one(quarantine_findings(demo), "remote-access", "ssh")
    attack = within_attack(finding, "remote-ssh")
    evidence = finding["evidence"][0]
    rows = tshark_rows(capture_path("remote-ssh"), evidence["frames"], "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport")
    assert len(rows) == len(evidence["frames"])
    outside, crane = attack["src"], attack["dst"].split(":")[0]
    for src, dst, sport, dport in rows:
        assert {src, dst} == {outside, crane}
        assert "22" in (sport, dport)


def test_data_leak_frames_carry_the_container_numbers(demo: DemoRuns) -> None:
    finding = one(quarantine_findings(demo), "data-leak", "container")
    attack = within_attack(finding, "ocr-exfil")
    evidence = finding["evidence"][0]
    rows = tshark_rows(capture_path("ocr-exfil"), evidence["frames"], "ip.src", "ip.dst", "http.file_data")
    sent = set()
    for src, dst, body in rows:
        assert (src, dst) == (attack["src"].split(":")[0], attack["dst"].split(":")[0])
        sent.update(CONTAINER_RE.findall(body))
    assert set(evidence["values"]["containers"]) <= sent
    assert sent <= {e["container"] for e in labels("ocr-exfil")["ocr_journal"]}


def test_safety_bypass_write_is_a_modbus_coil_write(demo: DemoRuns) -> None:
    finding = one(quarantine_findings(demo), "safety-override", "wrote safety_bypass=1")
    attack = within_attack(finding, "safety-bypass")
    rows = tshark_rows(capture_path("safety-bypass"), finding["evidence"][0]["frames"],
                       "ip.src", "ip.dst", "modbus.func_code", "modbus.reference_num", "modbus.data")
    # write single coil 0 (safety_bypass in the profile's register map) with ON (0xff00)
    assert rows == [[attack["src"], attack["dst"].split(":")[0], "5", "0", "ff00"]]


def test_frozen_load_cell_frames_read_zero_load_under_torque(demo: DemoRuns) -> None:
    finding = one(quarantine_findings(demo), "false-reading", "hoist_load")
    attack = within_attack(finding, "false-load")
    rows = tshark_rows(capture_path("false-load"), finding["evidence"][0]["frames"][:10],
                       "ip.src", "modbus.func_code", "modbus.regnum16", "modbus.regval_uint16")
    assert rows
    for src, function, numbers, values in rows:
        registers = dict(zip(numbers.split(","), values.split(","), strict=True))
        assert (src, function) == (attack["src"], "4")  # read input registers answered by the PLC
        assert registers["1"] == "0"  # IR 1 hoist_load reads 0 t …
        assert int(registers["4"]) > 50  # … while IR 4 hoist_torque (0.1 %) shows a load


# -- the store, the report and the rulesets ---------------------------------------------------


def test_report_holds_every_stored_finding_and_the_decision(demo: DemoRuns) -> None:
    html = (demo.workspace / "sts-07-commissioning.html").read_text()
    records = [json.loads(line) for line in (demo.workspace / "sts-07-commissioning.jsonl").read_text().splitlines()]
    with open_store(demo.workspace / "cranewatch.db", readonly=True) as store:
        stored = {f.id for f in store.findings("STS-07")}
    assert len(stored) > 40
    missing = [i for i in stored if i not in html]
    assert not missing, f"finding ids missing from the HTML report: {missing}"
    assert "rejected" in html.lower()
    decision = next(r for r in records if r["type"] == "decision")
    assert decision["decision"] == "rejected"
    assert {r["id"] for r in records if r["type"] == "finding"} == stored
    assert {r["purpose"] for r in records if r["type"] == "ruleset"} == {"quarantine", "in-service"}


def test_report_lists_every_input_read_with_its_sha256(demo: DemoRuns) -> None:
    import hashlib

    records = [json.loads(line) for line in (demo.workspace / "sts-07-commissioning.jsonl").read_text().splitlines()]
    inputs = {Path(r["path"]): r["sha256"] for r in records if r["type"] == "input"}
    expected = [capture_path(s) for s in ("remote-ssh", "ocr-exfil", "safety-bypass", "false-load", "normal")]
    expected += [data_path("images", "sts07-cms.tar.gz"), data_path("profiles", "sts-07.toml")]
    assert set(expected) <= set(inputs)
    for path in expected:
        assert inputs[path] == hashlib.sha256(path.read_bytes()).hexdigest(), path


def test_second_run_keeps_the_finding_ids_without_duplicates(demo: DemoRuns) -> None:
    with open_store(demo.workspace / "cranewatch.db", readonly=True) as store:
        ids = [f.id for f in store.findings("STS-07")]
        count = store.count_findings("STS-07")
        history = store.history("STS-07")
        runs = store.runs("STS-07")
    assert len(ids) == len(set(ids)) == count == demo.count_after_first
    assert set(ids) == demo.ids_after_first
    printed = {r["id"] for r in jsonl(demo.second) if r["type"] == "finding" and r["stage"] != "in-service:beacon"}
    assert printed == demo.ids_after_first
    # the rejected crane went back to quarantine and was rejected again, all recorded
    steps = [(h.from_state, h.to_state) for h in history]
    assert steps.count(("rejected", "quarantined")) == 1
    assert steps.count(("under-analysis", "rejected")) == 2
    # the same captures judged by the same files again: one analysis run, recorded twice (not a duplicate)
    (analysis,) = [r for r in runs if r.kind == "analyze" and r.status == "complete"]
    assert analysis.recordings == 2


def test_quarantine_ruleset_is_written(demo: DemoRuns) -> None:
    text = (demo.workspace / "sts-07-quarantine.nft").read_text()
    assert "cw STS-07 quarantine drop" in text
    assert "10.20.0.100" in text and "10.20.7.0/24" in text
    ruleset = next(r for r in jsonl(demo.second) if r["type"] == "ruleset" and r["purpose"] == "quarantine")
    if os.geteuid() != 0 or shutil.which("nft") is None:
        assert ruleset["checked"] is False and ruleset["check"].startswith("not checked")


@pytest.mark.usefixtures("as_root")
def test_nft_accepts_both_rulesets(demo: DemoRuns) -> None:
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft is not installed")
    for name in ("sts-07-quarantine.nft", "sts-07-inservice.nft"):
        done = subprocess.run([nft, "-c", "-f", str(demo.workspace / name)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    checks = [r for r in jsonl(demo.second) if r["type"] == "ruleset"]
    assert all(r["checked"] and r["check"] == "accepted by nft -c" for r in checks)


def test_in_service_watch_is_quiet_on_a_normal_day_and_alerts_on_the_beacon(demo: DemoRuns) -> None:
    records = jsonl(demo.second)
    quiet = [r for r in records if r["type"] == "finding" and r["stage"] == "in-service:normal-2"]
    alerts = [r for r in records if r["type"] == "finding" and r["stage"] == "in-service:beacon"]
    assert quiet == []
    c2 = [a for a in alerts if a["category"] == "c2"]
    assert c2
    for alert in c2:
        within_attack(alert, "beacon")
    assert (demo.workspace / "in-service-beacon.jsonl").exists()


# -- the workspace rules ----------------------------------------------------------------------


def test_refuses_a_workspace_the_demo_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "cranewatch.db").write_text("the port's real store")
    run = run_demo_cli("--workspace", str(tmp_path), cwd=tmp_path)
    assert run.returncode == 2
    assert "did not make" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "cranewatch.db").read_text() == "the port's real store"


def test_without_keep_a_demo_workspace_starts_afresh(tmp_path: Path) -> None:
    ws = prepare_workspace(tmp_path / "ws", keep=False)
    assert (ws / MARKER).exists()
    (ws / "cranewatch.db").write_text("earlier demo")
    (ws / "sts-07-commissioning.html").write_text("earlier report")
    assert prepare_workspace(ws, keep=True) == ws and (ws / "cranewatch.db").exists()
    prepare_workspace(ws, keep=False)
    assert not (ws / "cranewatch.db").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    for keep in (False, True):
        with pytest.raises(UsageError, match="did not make"):
            prepare_workspace(tmp_path / "other", keep=keep)


# -- the README's first command ---------------------------------------------------------------


def test_readme_first_command_is_the_demo_script() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.S)
    assert first_block is not None
    assert first_block.group(1).strip() == "bash scripts/demo.sh"
    script = (REPO / "scripts" / "demo.sh").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.search(r"\bcranewatch demo\b", c) for c in commands)
    assert "pip install" in script and "-e ." in script


# -- pure parts -------------------------------------------------------------------------------


def test_without_root_the_rulesets_are_said_to_be_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    from cranewatch import demo as demo_module

    monkeypatch.setattr(demo_module.os, "geteuid", lambda: 1000)
    checked, note = demo_module.check_with_nft("table inet x { }\n")
    assert checked is False
    assert note.startswith("not checked:") and ("root" in note or "not installed" in note)


def test_evidence_line_shows_where_when_and_values_but_not_plots() -> None:
    from cranewatch.commands.demo import evidence_line
    from cranewatch.model import Evidence

    line = evidence_line(Evidence(
        source="/x/lab/safety-bypass/crane-lan.pcap", frames=(409, 455, 501, 530, 600, 700, 800),
        times=(1795654198.787009,), values={"written": [{"safety_bypass": 1}], "function": 5,
                                            "window": {"t": list(range(500))}, "svg": "<svg/>"},
    ))
    assert line.startswith("safety-bypass/crane-lan.pcap frames 409, 455, 501, 530, 600 (+2)")
    assert "2026-11-26T00:49:58.787Z" in line  # ISO 8601 UTC, as in the JSON lines
    assert "written=safety_bypass=1" in line and "function=5" in line
    assert "svg" not in line and "window" not in line
    forensic = evidence_line(Evidence(path="etc/cron.d/cms-sync", line=3, excerpt="*/15 * * * * root bash -i"))
    assert forensic == "etc/cron.d/cms-sync:3 · '*/15 * * * * root bash -i'"


NEXT_EXPECTED = {("fleet", "show"): "STS-07  (rejected)", ("gate", "STS-07"): "STS-07: REJECTED",
                 ("analyze",): "[remote-access]", ("scan-image",): "backdoor"}


def run_next_commands(stdout: str, cwd: Path) -> int:
    """Run the "Next:" commands exactly as printed, in a shell whose PATH has no cranewatch
    (as after scripts/demo.sh), from another folder; returns how many ran."""
    printed = [line.strip() for line in stdout.split("\nNext:\n", 1)[1].splitlines()]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    assert shutil.which("cranewatch", path=env["PATH"]) is None
    ran = 0
    for line in printed:
        if line.startswith("#"):
            continue
        tokens = shlex.split(line)
        starts = [i for i, t in enumerate(tokens) if t == "cranewatch" or t.endswith("/cranewatch")]
        words = tokens[starts[-1] + 1:] if starts else []
        expect = NEXT_EXPECTED.get(tuple(words[:2])) or NEXT_EXPECTED.get(tuple(words[:1]))
        if expect is None:
            continue
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (line, done.stderr)
        assert expect in done.stdout, line
        ran += 1
    return ran


def test_the_next_commands_it_prints_work(demo: DemoRuns, tmp_path: Path) -> None:
    # before: bare `cranewatch fleet show ...`, "command not found" after scripts/demo.sh
    assert run_next_commands(demo.first.stdout, tmp_path) == len(NEXT_EXPECTED)


def test_next_commands_name_the_installed_script_unless_path_finds_it(tmp_path: Path) -> None:
    """Run as a console script (what scripts/demo.sh runs: .venv/bin/cranewatch), the commands
    start with that script's absolute path; the bare name only when PATH finds that same script."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "cranewatch"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO / 'src')!r})\n"
                      "from cranewatch.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    workspace = tmp_path / "ws"
    for path, prefix in (("/usr/bin:/bin", str(script)), (f"{bin_dir}:/usr/bin:/bin", "cranewatch")):
        keep = ["--keep"] if workspace.exists() else []
        done = subprocess.run(["venv/bin/cranewatch", "demo", "--workspace", str(workspace), *keep],
                              cwd=tmp_path, env={"PATH": path, "HOME": str(tmp_path)},
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        next_lines = done.stdout.split("\nNext:\n", 1)[1].splitlines()
        assert f"   {prefix} fleet show STS-07 --db {workspace / 'cranewatch.db'}" in next_lines
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = subprocess.run(["venv/bin/cranewatch", "demo", "--workspace", str(workspace), "--keep"], cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
                           timeout=180)
    assert run_next_commands(first.stdout, elsewhere) == len(NEXT_EXPECTED)
