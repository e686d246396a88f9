"""The operations console: its HTTP contract, pages, filters, exports, triage, gate sign-off and
the live monitor stream, against a real server on 127.0.0.1 (tests/web_helpers.py builds the store)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from cranewatch.model import Severity
from cranewatch.store import open_store
from web_helpers import PASSWORD, build_store, client, console, csrf, finding

REPO = Path(__file__).resolve().parents[1]
SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
CONTRACT = {"id", "rule", "category", "severity", "crane", "title", "first_seen", "last_seen", "count", "src",
            "dst", "technique", "evidence", "remedy"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], Any]]:
    db = tmp_path_factory.mktemp("console") / "cw.db"
    facts = build_store(db)
    with console(db) as server:
        yield db, facts, server


@pytest.fixture
def officer(world: tuple[Path, dict[str, Any], Any]) -> Iterator[httpx.Client]:
    with client(world[2], "officer") as c:
        yield c


def all_ids(db: Path, crane: str = "STS-07") -> set[str]:
    with open_store(db, readonly=True) as store:
        return {f.id for f in store.findings(crane)}


# -- the contract -------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_session_cookie_and_session_says_who(world: Any) -> None:
    server = world[2]
    with client(server) as c:
        r = c.post("/login", data={"username": "analyst", "password": PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("cw_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Max-Age=28800" in cookie and "Path=/" in cookie and "Secure" not in cookie  # no TLS here
        session = c.get("/api/session").json()
    assert session["user"] == "analyst" and session["role"] == "analyst" and len(session["csrf"]) >= 40


def test_a_wrong_password_gets_no_cookie(world: Any) -> None:
    with client(world[2]) as c:
        r = c.post("/login", data={"username": "analyst", "password": "wrong password!"})
        assert r.status_code == 401 and "set-cookie" not in r.headers and "wrong name or password" in r.text
        assert c.get("/api/session").status_code == 401


def test_api_findings_is_the_finding_contract_plus_state(world: Any, officer: httpx.Client) -> None:
    db, facts, _ = world
    rows = officer.get("/api/findings", params={"crane": "STS-07"}).json()
    assert isinstance(rows, list) and {r["id"] for r in rows} == all_ids(db)
    assert len(rows) == len(facts["plain"]) + len(facts["hostile"]) + 1
    for r in rows:
        assert set(r) >= CONTRACT and r["state"] in ("open", "acknowledged", "false-positive", "accepted-risk",
                                                     "remediated")
    assert officer.get("/api/findings").status_code == 400  # which crane?
    assert officer.get("/api/findings", params={"crane": "STS-99"}).status_code == 404


def test_triage_contract_200_401_403(world: Any) -> None:
    db, facts, server = world
    target = facts["plain"][0].id
    url = f"/api/findings/{target}/triage"
    body = {"state": "acknowledged", "note": "looking into it"}
    with client(server) as anonymous:
        assert anonymous.post(url, json=body).status_code == 401
    with client(server, "analyst") as analyst:
        assert analyst.post(url, json=body).status_code == 403  # no token
        assert analyst.post(url, json=body, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
        r = analyst.post(url, json=body, headers=csrf(analyst))
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        # an analyst triages; dispositions are an officer's
        r = analyst.post(url, json={"state": "false-positive", "note": "lab key"}, headers=csrf(analyst))
        assert r.status_code == 403 and "officers only" in r.json()["error"]
    with client(server, "viewer") as viewer:
        assert viewer.post(url, json=body, headers=csrf(viewer)).status_code == 403
    with open_store(db, readonly=True) as store:
        latest = store.latest_dispositions("STS-07")[target]
        events = [e for e in store.audit_events("STS-07") if e.subject == target]
    assert (latest.state, latest.who, latest.why) == ("acknowledged", "analyst", "looking into it")
    assert [e.action for e in events] == ["disposition"]  # the refused attempts left nothing


def test_dispositions_go_through_the_same_rules_as_the_cli(world: Any, officer: httpx.Client) -> None:
    db, facts, _ = world
    target = facts["plain"][1].id
    url = f"/api/findings/{target}/triage"
    r = officer.post(url, json={"state": "accepted-risk", "note": "maker fixes it in 2027"}, headers=csrf(officer))
    assert r.status_code == 400 and "--until" in r.json()["error"]  # triage.dispose's rule
    r = officer.post(url, json={"state": "remediated", "note": "fixed", "evidence": facts["scan"]},
                     headers=csrf(officer))
    assert r.status_code == 409 and "cannot show" in r.json()["error"]  # a scan is no evidence for traffic
    r = officer.post(url, json={"state": "accepted-risk", "note": "maker fixes it in 2027", "until": "2099-01-31"},
                     headers=csrf(officer))
    assert r.status_code == 200
    rows = {x["id"]: x for x in officer.get("/api/findings", params={"crane": "STS-07"}).json()}
    assert rows[target]["state"] == "accepted-risk" and rows[target]["counts"] is False
    with open_store(db, readonly=True) as store:
        d = store.latest_dispositions("STS-07")[target]
    assert (d.who, d.until is not None) == ("officer", True)


def test_note_and_assignment_are_audit_events_on_the_finding_page(world: Any) -> None:
    db, facts, server = world
    target = facts["plain"][2].id
    with client(server, "analyst") as analyst:
        url = f"/api/findings/{target}/triage"
        assert analyst.post(url, json={"note": "asked the maker"}, headers=csrf(analyst)).status_code == 200
        assert analyst.post(url, json={"assign": "officer", "note": "yours"}, headers=csrf(analyst)).status_code == 200
        page = analyst.get(f"/crane/STS-07/finding/{target}").text
        detail = analyst.get(f"/api/findings/{target}", params={"crane": "STS-07"}).json()
    assert "asked the maker" in page and 'id="assignee">officer<' in page
    assert detail["assignee"] == "officer" and [n["action"] for n in detail["notes"]] == ["note", "assign"]
    with open_store(db, readonly=True) as store:
        actions = [e.action for e in store.audit_events("STS-07") if e.subject == target]
        state = store.latest_dispositions("STS-07").get(target)
    assert actions == ["note", "assign"] and state is None  # a note changes no state


# -- filter, sort, search, pagination, export --------------------------------------------------


def test_filter_by_severity_and_source_matches_a_hand_count(world: Any, officer: httpx.Client) -> None:
    _, facts, _ = world
    every = facts["plain"] + facts["hostile"] + [facts["monitor_finding"]]
    high = {f.id for f in every if f.severity == Severity.HIGH}
    rows = officer.get("/api/findings", params={"crane": "STS-07", "severity": "high"}).json()
    assert {r["id"] for r in rows} == high and len(high) == 13 + 2 + 1
    images = officer.get("/api/findings", params={"crane": "STS-07", "source": "image"}).json()
    assert {r["id"] for r in images} == {f.id for f in facts["hostile"][3:]}
    monitor = officer.get("/api/findings", params={"crane": "STS-07", "source": "monitor"}).json()
    assert [r["id"] for r in monitor] == [facts["monitor_finding"].id]


def test_search_host_sort_and_pages(world: Any, officer: httpx.Client) -> None:
    _, facts, _ = world
    base = {"crane": "STS-07"}
    hits = officer.get("/api/findings", params={**base, "q": "finding number 3"}).json()
    assert {r["title"] for r in hits} == {"finding number 3", *(f"finding number {n}" for n in range(30, 40))}
    host = officer.get("/api/findings", params={**base, "host": "198.51.100.7"}).json()
    assert [r["id"] for r in host] == [facts["monitor_finding"].id]
    ordered = officer.get("/api/findings", params={**base, "sort": "time"}).json()
    times = [r["last_seen"] for r in ordered]
    assert times == sorted(times, reverse=True)  # newest first
    worst = officer.get("/api/findings", params={**base, "sort": "severity"}).json()
    assert worst[0]["severity"] == "critical" and worst[-1]["severity"] == "low"
    first = officer.get("/api/findings", params={**base, "sort": "time", "limit": 10, "offset": 0})
    second = officer.get("/api/findings", params={**base, "sort": "time", "limit": 10, "offset": 10})
    assert first.headers["X-Total-Count"] == str(len(ordered))
    assert [r["id"] for r in first.json() + second.json()] == [r["id"] for r in ordered[:20]]
    page = officer.get("/crane/STS-07", params={"limit": 10, "sort": "time"}).text
    assert 'id="next"' in page and "1–10 shown" in page
    assert page.count('<tr data-id="') == 10


def test_csv_and_jsonl_exports_of_a_filtered_list(world: Any, officer: httpx.Client) -> None:
    params = {"crane": "STS-07", "severity": "low"}
    wanted = officer.get("/api/findings", params=params).json()
    text = officer.get("/api/findings", params={**params, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv") and "attachment" in text.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(text.text)))
    assert [r["id"] for r in table] == [r["id"] for r in wanted]
    formula = next(r for r in table if r["rule"] == "recon.csv")
    assert formula["title"].startswith("'=HYPERLINK")  # a spreadsheet shows it, does not run it
    lines = officer.get("/api/findings", params={**params, "format": "jsonl"}).text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in wanted]
    incidents = officer.get("/api/incidents", params={"crane": "STS-07", "format": "csv"}).text
    assert incidents.startswith("id,crane,severity,title,open")


# -- pages ----------------------------------------------------------------------------------------


def test_every_page_renders_for_a_viewer(world: Any) -> None:
    _, facts, server = world
    target = facts["hostile"][0].id
    with client(server, "viewer") as viewer:
        for path, needle in [("/", "STS-08"), ("/crane/STS-07", "Life cycle"),
                             (f"/crane/STS-07/finding/{target}", "Evidence"),
                             ("/incidents?crane=STS-07", "Incidents of STS-07"),
                             ("/images?crane=STS-07", "busybox"), ("/monitor", "SSH from the PLC in service"),
                             ("/crane/STS-07/report", "Commissioning report")]:
            r = viewer.get(path)
            assert r.status_code == 200 and needle in r.text, path
        assert viewer.get("/users").status_code == 403  # admins only
        assert viewer.get("/crane/STS-07/finding/cw-nosuch").status_code == 404


def test_quay_shows_life_cycle_gate_incidents_and_monitor(world: Any, officer: httpx.Client) -> None:
    tiles = {t["crane"]: t for t in officer.get("/api/cranes").json()}
    sts07 = tiles["STS-07"]
    assert sts07["state"] == "under-analysis" and tiles["STS-08"]["state"] == "delivered"
    assert sts07["monitor"]["status"] == "ok" and sts07["monitor"]["stored_findings_24h"] == 1
    assert tiles["STS-08"]["monitor"]["status"] == "never"
    assert sts07["open_incidents"] and set(sts07["open_incidents"]) <= {"critical", "high", "medium", "low", "info"}
    page = officer.get("/").text
    assert 'class="lc lc-under-analysis"' in page and "monitor ok" in page and "monitor never" in page


def test_an_officer_signs_the_gate_and_the_report_names_them(world: Any) -> None:
    db, _, server = world
    with client(server, "analyst") as analyst:
        assert analyst.post("/api/cranes/STS-07/gate", json={}, headers=csrf(analyst)).status_code == 403
    with client(server, "officer") as officer:
        r = officer.post("/api/cranes/STS-07/gate", json={}, headers=csrf(officer))
        assert r.status_code == 200 and r.json()["decision"] == "rejected" and r.json()["signed_by"] == "officer"
        report = officer.get("/crane/STS-07/report").text
        crane = officer.get("/crane/STS-07").text
    with open_store(db, readonly=True) as store:
        gate = store.latest_gate("STS-07")
        assert gate is not None and gate.who == "officer"
        assert store.crane("STS-07").state == "rejected"  # type: ignore[union-attr]
    assert 'signed by <span id="decided-by">officer</span>' in report and 'id="signed-by">officer<' in crane


def test_the_evidence_frames_download_as_a_pcap_tshark_reads(tmp_path: Path) -> None:
    """A finding of a real analysis: its frames cut from the recorded capture (tshark reads
    exactly those frames, byte for byte); refused once the capture changed."""
    db = tmp_path / "cw.db"
    capture = tmp_path / "ssh.pcap"
    shutil.copy(SSH, capture)
    build_store(db, findings=2)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "cranewatch", "analyze", str(capture), "--profile", str(PROFILE),
                    "--db", str(db), "--crane", "STS-07", "--format", "jsonl", "--out", str(tmp_path / "r.jsonl")],
                   check=True, capture_output=True, env=env)
    with open_store(db, readonly=True) as store:
        ssh = next(f for f in store.findings("STS-07") if f.rule == "remote-access")
    frames = [n for e in ssh.evidence for n in e.frames]
    with console(db) as server, client(server, "viewer") as viewer:
        page = viewer.get(f"/crane/STS-07/finding/{ssh.id}").text
        assert 'id="download-frames"' in page
        r = viewer.get(f"/crane/STS-07/finding/{ssh.id}/frames.pcap")
        assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.tcpdump.pcap"
        cut = tmp_path / "cut.pcap"
        cut.write_bytes(r.content)
        capture.write_bytes(SSH.read_bytes()[:-10])  # the capture changes after the analysis
        refused = viewer.get(f"/crane/STS-07/finding/{ssh.id}/frames.pcap")
    assert refused.status_code == 409 and "sha256" in refused.text
    # the same store's assets and communication map, as the data layer gives them
    from cranewatch.commap import communication_map, render_svg
    from cranewatch.inventory import asset_inventory

    with open_store(db, readonly=True) as store:
        inventory = asset_inventory(store, "STS-07").to_json()
        svg = render_svg(communication_map(store, "STS-07"))
    with console(db) as server, client(server, "viewer") as viewer:
        assets = viewer.get("/api/cranes/STS-07/assets").json()
        picture = viewer.get("/crane/STS-07/map.svg")
        crane = viewer.get("/crane/STS-07").text
    assert assets == inventory["assets"] and {a["status"] for a in assets} >= {"registered", "registered-unseen"}
    assert picture.headers["content-type"] == "image/svg+xml" and picture.text == svg and "<script" not in svg
    assert '<img id="comm-map" src="/crane/STS-07/map.svg"' in crane and 'class="asset-registered-unseen"' in crane
    got = tshark_fields(cut)
    want = tshark_fields(SSH, frames)
    assert len(got) == len(sorted(set(frames))) >= 2 and got == want


def tshark_fields(path: Path, frames: list[int] | None = None) -> list[str]:
    """Each frame's time, lengths and bytes as tshark reads them (of the given frame numbers)."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len", "-e", "tcp.len",
            "-e", "eth.src", "-e", "ip.src", "-e", "tcp.seq_raw"]
    if frames is not None:
        args += ["-Y", "frame.number in {" + ",".join(str(n) for n in sorted(set(frames))) + "}"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()


# -- live monitor ---------------------------------------------------------------------------------


def test_a_monitor_finding_arrives_over_server_sent_events(world: Any) -> None:
    db, _, server = world
    new = finding(3001, severity=Severity.CRITICAL, category="c2", rule="c2.beacon", title="beacon to 203.0.113.50")
    got: list[dict[str, Any]] = []

    def listen() -> None:
        with client(server, "viewer") as viewer, viewer.stream("GET", "/api/monitor/events",
                                                               timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "finding":
                    got.append(json.loads(line[6:]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.5)  # connected, cursor taken: only what comes after is sent
    with open_store(db) as store:
        store.record_run("STS-07", "analyze", [], [new], component="monitor:eth1")
    listener.join(timeout=15)
    assert [(g["id"], g["sensor"], g["severity"]) for g in got] == [(new.id, "eth1", "critical")]


def test_a_checkpoint_sends_only_what_it_added_or_changed(tmp_path: Path) -> None:
    """A monitor checkpoint holds its whole session: the stream must not send the old findings
    again with every checkpoint, only new ones and those whose count or time changed."""
    db = tmp_path / "cw.db"
    facts = build_store(db, findings=2)
    old = facts["monitor_finding"]
    grown = replace(old, count=old.count + 5, last_seen=time.time() + 5)  # seen again
    steady = finding(3002, severity=Severity.LOW, title="steady")
    with open_store(db) as store:
        first = store.record_run("STS-07", "analyze", [], [old, steady], component="monitor:eth1")
        store.record_run("STS-07", "analyze", [], [old, steady, finding(3003, title="new one")],
                         component="monitor:eth1")
        store.record_run("STS-07", "analyze", [], [grown, steady, finding(3003, title="new one")],
                         component="monitor:eth1")
    with console(db) as server, client(server, "viewer") as viewer:
        picture = viewer.get("/api/monitor").json()
        since = viewer.get("/api/monitor", params={"after": first})
    assert {r["title"] for r in picture} == {old.title, "steady", "new one"}  # the latest checkpoint
    assert [(r["title"], r["count"]) for r in since.json()] == [(old.title, grown.count), ("new one", 1 + 3003 % 7)]
    assert int(since.headers["x-cursor"]) == first + 2


# -- the command ----------------------------------------------------------------------------------


def test_cli_serve_prints_where_and_needs_a_login(world: Any) -> None:
    db = world[0]
    proc = subprocess.Popen([sys.executable, "-m", "cranewatch", "serve", "--port", "0", "--db", str(db)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("cranewatch console on http://127.0.0.1:")
        port = int(line.split(":")[2].split("/")[0])
        r = httpx.get(f"http://127.0.0.1:{port}/api/cranes", timeout=10)
        assert r.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--host", "10.20.0.5"], ["--host", "::"]])
def test_a_non_loopback_bind_needs_tls_or_insecure_bind(world: Any, args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "cranewatch", "serve", *args, "--port", "0", "--db", str(world[0])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--tls-cert and --tls-key, or --insecure-bind" in done.stderr


def test_tls_serves_https_with_a_secure_host_prefixed_cookie(world: Any, tmp_path: Path) -> None:
    db = world[0]
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "cranewatch", "serve", "--port", "0", "--db", str(db),
                             "--tls-cert", str(cert), "--tls-key", str(key)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("cranewatch console on https://127.0.0.1:")
        url = line.split()[3].rstrip("/")
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(cert)), timeout=20) as c:
            r = c.post("/login", data={"username": "viewer", "password": PASSWORD})
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert cookie.startswith("__Host-cw_session=") and "Secure" in cookie and "HttpOnly" in cookie
            assert c.get("/api/session").json()["user"] == "viewer"
            assert r.headers["strict-transport-security"].startswith("max-age=")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
