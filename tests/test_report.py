"""Commissioning report: content from the store, JSON lines, and a render in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from cranewatch.cli import main
from cranewatch.fleet import import_fleet, transition
from cranewatch.gate import decide, scan_and_record
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.policy import quarantine_ruleset
from cranewatch.report.commissioning import build_report, report_records
from cranewatch.report.html import render_html, render_report
from cranewatch.store import open_store

REPO = Path(__file__).resolve().parents[1]

DPKG_STATUS = """Package: openssh-server
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1:9.2p1-2+deb12u3
Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
Description: secure shell (SSH) server

Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library: Shared libraries
"""

SSH_FINDING = Finding(
    id=finding_id("remote-access.ssh", "STS-07", "10.20.0.5", "10.20.7.10:22"),
    rule="remote-access.ssh", category="remote-access", severity=Severity.HIGH,
    title="SSH session from 10.20.0.5 into the crane PLC <at 10.20.7.10>",
    first_seen=1795600000.25, last_seen=1795600042.5, count=3, crane="STS-07",
    src="10.20.0.5", dst="10.20.7.10:22", technique=("T0822", "T0886"),
    evidence=(Evidence(source="quarantine.pcap", frames=(17, 18, 19), times=(1795600000.25,),
                       excerpt="SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),),
    remedy="Block SSH into the crane zone; find who opened the session.",
)


def make_cms_image(root: Path) -> Path:
    (root / "etc/NetworkManager/system-connections").mkdir(parents=True)
    (root / "etc/NetworkManager/system-connections/lte.nmconnection").write_text(
        "[connection]\nid=lte\ntype=gsm\n\n[gsm]\napn=m2m.example-carrier.net\n")
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_STATUS)
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    return root


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with STS-07 quarantined, scanned, analysed and gated (rejected)."""
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "cw.db"
    write_story(db, tmp)
    return db


def write_story(db: str | Path, tmp: Path) -> None:
    with open_store(db) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml", by="ana")
        store.record_ruleset("STS-07", "quarantine",
                             quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24"), who="ana")
        transition(store, "STS-07", "quarantined", by="ana", reason="quarantine firewall installed")
        transition(store, "STS-07", "under-analysis", by="ana", reason="image scans and capture")
        scan_and_record(store, "STS-07", make_cms_image(tmp / "cms-root"), component="CMS")
        capture = tmp / "quarantine.pcap"
        capture.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20))
        store.record_run("STS-07", "analyze", [capture], [SSH_FINDING])
        decide(store, "STS-07", who="ana")


def test_the_report_says_the_same_on_either_backend(story: Path, store_at: str, tmp_path: Path) -> None:
    """The story written to PostgreSQL reports what it reports from the SQLite file: the same
    records but for times, the store's own sequence numbers and the digest over them."""
    write_story(store_at, tmp_path)

    def content(db: str | Path) -> list[str]:
        with open_store(db) as store:
            records = report_records(build_report(store, "STS-07"))
        volatile = re.compile(r'"(?:[a-z_]*(?:at|time|seen|started|finished|generated|digest|path)|until)": '
                              r'("[^"]*"|[0-9.]+|null)')
        return [volatile.sub("", json.dumps(r, sort_keys=True)) for r in records if r["type"] != "signature"]

    assert content(store_at) == content(story)


def test_report_holds_facts_decision_findings_sbom_ruleset_inputs_and_signatures(story: Path) -> None:
    with open_store(story) as store:
        html = render_report(store, "STS-07")
        findings = store.current_findings("STS-07")
        runs = store.runs("STS-07")
    assert '<div class="decision rejected" id="decision">rejected</div>' in html
    assert "Harbour Heavy Industries (example)" in html and "02:c7:07:00:00:0a" in html
    assert len(findings) >= 2
    for f in findings:  # every finding, with its id anchor, and the escaped title
        assert f'id="{f.id}"' in html
        assert f.title.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "&lt;at 10.20.7.10&gt;" in html and "<at 10.20.7.10>" not in html
    assert "no image scan recorded for OCR" in html
    assert "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3" in html and "frames 17, 18, 19" in html
    assert "Block SSH into the crane zone" in html
    assert "openssh-server" in html and "2 components" in html
    assert 'log prefix &#34;cw STS-07 quarantine drop: &#34;' in html
    for run in runs:
        for i in run.inputs:
            assert i.sha256 in html
    assert html.count('class="signature"') == 3
    assert "quarantined → under-analysis" in html and "under-analysis → rejected" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_jsonl_is_the_same_content_with_a_stable_digest(story: Path) -> None:
    with open_store(story) as store:
        first = report_records(build_report(store, "STS-07"))
        second = report_records(build_report(store, "STS-07"))
        stored = {f.id: f for f in store.current_findings("STS-07")}
    types = [r["type"] for r in first]
    assert types[:3] == ["report", "crane", "decision"] and types[-1] == "signature"
    assert first[2]["decision"] == "rejected"
    finding_records = [r for r in first if r["type"] == "finding"]
    assert {r["id"] for r in finding_records} == set(stored)
    for r in finding_records:
        # the Finding contract, plus where it was seen and its triage state
        added = ("evidence_run", "state", "disposition")
        assert {k: v for k, v in r.items() if k not in added} == stored[r["id"]].to_json()
        assert r["state"] == "open" and r["disposition"] is None
    assert first[-1]["digest"] == second[-1]["digest"] and re.fullmatch(r"[0-9a-f]{64}", first[-1]["digest"])
    assert any(r["type"] == "sbom-summary" and r["packages"] == 2 for r in first)
    assert any(r["type"] == "ruleset" and r["purpose"] == "quarantine" for r in first)
    assert any(r["type"] == "input" and r["kind"] == "scan-image" and len(r["sha256"]) == 64 for r in first)


def test_report_of_a_crane_never_gated(tmp_path: Path) -> None:
    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml")
        html = render_report(store, "STS-08")
    assert '<div class="decision none" id="decision">no decision</div>' in html
    assert "cranewatch gate STS-08" in html


def test_cli_report_html_and_jsonl(story: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "STS-07", "--db", str(story), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["report", "STS-07", "--db", str(story), "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[2])["decision"] == "rejected"


# -- headless Chromium ---------------------------------------------------------------------------


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into an array of rows × bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.int32)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = row
        elif kind == 1:
            cur = np.concatenate([np.cumsum(row[c::bpp]) % 256 for c in range(bpp)])
            cur = cur.reshape(bpp, -1).T.reshape(-1)
        elif kind == 2:
            cur = (row + prev) % 256
        else:
            cur = np.zeros_like(row)
            for i in range(row.size):
                a = int(cur[i - bpp]) if i >= bpp else 0
                b = int(prev[i])
                c = int(prev[i - bpp]) if i >= bpp else 0
                if kind == 3:
                    cur[i] = (row[i] + (a + b) // 2) % 256
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur[i] = (row[i] + pred) % 256
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/install-deps.sh (Debian package chromium)")
    with tempfile.TemporaryDirectory(prefix="cw-chromium-") as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             *args],
            capture_output=True, text=True, timeout=120,
        )


def console_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    """Messages the page wrote to its console (errors, uncaught exceptions), as Chromium logs them."""
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def test_the_console_check_sees_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>console.error('boom'); notDefined();</script></body></html>")
    lines = console_lines(chromium("--dump-dom", broken.as_uri()))
    assert any('"boom"' in line for line in lines)
    assert any("notDefined is not defined" in line for line in lines)


def test_report_renders_in_headless_chromium(story: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    with open_store(story) as store:
        report = build_report(store, "STS-07")
    page.write_text(render_html(report))
    shot = tmp_path / "report.png"

    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<div class="decision rejected" id="decision">rejected</div>' in dom.stdout
    for f in report.findings:
        assert f'id="{f.id}"' in dom.stdout

    drawn = chromium("--window-size=1000,1400", f"--screenshot={shot}", page.as_uri())
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert console_lines(dom) == [] and console_lines(drawn) == []
    pixels = png_pixels(shot.read_bytes())
    assert pixels.shape[:2] == (1400, 1000)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, the red decision badge, tables: far from a blank page
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 70) & (pixels[..., 2] < 70)
    assert red.sum() > 500  # the "rejected" badge is drawn

    # printed to PDF, the findings and the firewall sections start new pages
    pdf = tmp_path / "report.pdf"
    printed = chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))
    assert pages >= 3
