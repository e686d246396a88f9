"""The console in a real browser: Playwright for Python driving Debian's chromium (never a
downloaded browser). Log in, filter findings, open a finding and download its frames (tshark
reads exactly those frames), triage and dispose, watch a monitor finding appear live over
Server-Sent Events, sign off a gate. Each page's screenshot goes to docs/img/ when
CRANEWATCH_SCREENSHOTS=1 (how the checked-in ones were made), else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from cranewatch.model import Severity
from cranewatch.store import open_store
from web_helpers import PASSWORD, RAW_MARKERS, build_store, console, finding

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, Path, Path]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-deps.sh installs it)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (apt-get install tshark)")
    work = tmp_path_factory.mktemp("browser")
    db = work / "cw.db"
    capture = work / "ssh.pcap"
    shutil.copy(SSH, capture)
    build_store(db, findings=80)
    subprocess.run([sys.executable, "-m", "cranewatch", "analyze", str(capture), "--profile", str(PROFILE),
                    "--db", str(db), "--crane", "STS-07", "--format", "jsonl", "--out", str(work / "r.jsonl")],
                   check=True, capture_output=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    shots = REPO / "docs" / "img" if os.environ.get("CRANEWATCH_SCREENSHOTS") == "1" else work / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    with console(db, cache_seconds=0, poll_seconds=0.3) as server:
        yield db, server, shots, work


@pytest.fixture(scope="module")
def browser(world: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def login(browser: Any, server: Any, user: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors
    page.goto(server.url + "/")
    assert page.url.startswith(server.url + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    return page


def shot(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"console-{name}.png"), full_page=False)


def test_log_in_and_filter_findings(world: Any, browser: Any) -> None:
    db, server, shots, _ = world
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(server.url + "/login")
    page.fill("input[name=username]", "viewer")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong name or password" in page.inner_text("#login-error")
    shot(page, shots, "login")
    page = login(browser, server, "viewer")
    assert page.inner_text("#whoami") == "viewer"
    assert page.locator(".tile").count() == 2
    shot(page, shots, "quay")
    page.click("text=STS-07")
    page.select_option("select[name=severity]", ["critical"])
    page.click("#apply-filter")
    page.wait_for_url("**severity=critical**")
    rows = page.locator("#findings tbody tr")
    with open_store(db, readonly=True) as store:
        critical = [f for f in store.findings("STS-07") if f.severity == Severity.CRITICAL]
    assert rows.count() == len(critical) >= 1
    assert all(s == "CRITICAL" for s in page.locator("#findings tbody td:first-child").all_inner_texts())
    page.goto(server.url + "/crane/STS-07")
    shot(page, shots, "crane")
    body = page.content()
    for marker in RAW_MARKERS:  # hostile strings are text in the DOM, never elements
        assert marker not in body
    assert page.locator("script").count() == 1 and not page.errors


def test_open_a_finding_and_download_its_frames(world: Any, browser: Any) -> None:
    db, server, shots, work = world
    with open_store(db, readonly=True) as store:
        ssh = next(f for f in store.findings("STS-07") if f.rule == "remote-access")
    frames = sorted({n for e in ssh.evidence for n in e.frames})
    page = login(browser, server, "viewer")
    page.goto(server.url + "/crane/STS-07?source=traffic&category=remote-access")
    page.click(f"#findings tr[data-id='{ssh.id}'] a")
    page.wait_for_url(f"**/finding/{ssh.id}")
    shot(page, shots, "finding")
    with page.expect_download() as download:
        page.click("#download-frames")
    saved = work / "frames.pcap"
    download.value.save_as(str(saved))
    listed = subprocess.run(["tshark", "-r", str(saved), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    original = subprocess.run(["tshark", "-r", str(SSH), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len",
                               "-Y", "frame.number in {" + ",".join(map(str, frames)) + "}"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
    assert listed == original and len(listed) == len(frames) >= 2
    page.goto(server.url + "/crane/STS-07")
    page.locator("#assets").screenshot(path=str(shots / "console-assets.png"))
    page.locator("#map").screenshot(path=str(shots / "console-map.png"))
    assert page.locator("#comm-map").evaluate("img => img.naturalWidth") > 0  # the SVG loaded as an image


def test_triage_and_dispose(world: Any, browser: Any) -> None:
    db, server, shots, _ = world
    with open_store(db, readonly=True) as store:
        target = next(f for f in store.findings("STS-07") if f.rule == "c2.dns")
    analyst = login(browser, server, "analyst")
    analyst.goto(f"{server.url}/crane/STS-07/finding/{target.id}")
    assert analyst.locator("#triage-state option[value=false-positive]").count() == 0  # not an analyst's
    analyst.select_option("#triage-state", "acknowledged")
    analyst.fill("#triage-note", "asked the maker about this lookup")
    analyst.click("#triage-submit")
    expect(analyst.locator("#finding-state")).to_contain_text("acknowledged")  # no eval: the CSP forbids it
    officer = login(browser, server, "officer")
    officer.goto(f"{server.url}/crane/STS-07/finding/{target.id}")
    officer.select_option("#triage-state", "false-positive")
    officer.fill("#triage-note", "the maker's update server, documented in the contract")
    officer.click("#triage-submit")
    expect(officer.locator("#finding-state")).to_contain_text("false-positive")
    assert "asked the maker about this lookup" in officer.inner_text("#history")
    shot(officer, shots, "triage")
    with open_store(db, readonly=True) as store:
        states = [(d.state, d.who) for d in store.dispositions("STS-07", target.id)]
    assert states == [("acknowledged", "analyst"), ("false-positive", "officer")]


def test_a_monitor_finding_appears_live(world: Any, browser: Any) -> None:
    db, server, shots, _ = world
    page = login(browser, server, "viewer")
    page.goto(server.url + "/monitor")
    expect(page.locator("#stream-state")).to_have_text("live")
    before = page.locator("#live tbody tr").count()
    new = finding(4001, severity=Severity.CRITICAL, category="c2", rule="c2.beacon",
                  title="beacon every 60 s to 203.0.113.50 <b>in service</b>")
    with open_store(db) as store:
        store.record_run("STS-07", "analyze", [], [new], component="monitor:eth1")
    row = page.locator(f"#live tbody tr[data-id='{new.id}']")
    row.wait_for(timeout=10_000)
    assert "beacon every 60 s to 203.0.113.50 <b>in service</b>" in row.inner_text()  # as text
    assert page.locator("#live tbody b").count() == 0
    assert page.locator("#live tbody tr").count() == before + 1
    shot(page, shots, "monitor")


def test_sign_off_a_gate(world: Any, browser: Any) -> None:
    db, server, shots, _ = world
    analyst = login(browser, server, "analyst")
    analyst.goto(server.url + "/crane/STS-07")
    assert analyst.locator("#sign-gate").count() == 0  # officers only
    officer = login(browser, server, "officer")
    officer.goto(server.url + "/crane/STS-07")
    officer.click("#sign-gate")
    officer.wait_for_selector("#signed-by")
    assert officer.inner_text("#signed-by") == "officer"
    shot(officer, shots, "gate")
    officer.goto(server.url + "/crane/STS-07/report")
    assert officer.inner_text("#decided-by") == "officer"
    with open_store(db, readonly=True) as store:
        gate = store.latest_gate("STS-07")
    assert gate is not None and gate.who == "officer"
    for path, name in (("/incidents?crane=STS-07", "incidents"), ("/images?crane=STS-07", "images")):
        officer.goto(server.url + path)
        shot(officer, shots, name)
    assert not officer.errors
