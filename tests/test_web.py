"""Web dashboard: read-only pages over the store, 127.0.0.1 by default, GET only, Host guard."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.fleet import import_fleet, transition
from cranewatch.gate import decide
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import open_store
from cranewatch.web.app import make_server, serve_in_background

REPO = Path(__file__).resolve().parents[1]

MODEM = Finding(
    id=finding_id("oob.ppp-peer", "STS-07", "etc/ppp/peers/lte"), rule="oob.ppp-peer",
    category="oob-connectivity", severity=Severity.HIGH, title="ppp peer dials a cellular modem",
    first_seen=None, last_seen=None, crane="STS-07",
    evidence=(Evidence(path="etc/ppp/peers/lte", line=2, excerpt="/dev/ttyUSB2"),), remedy="remove it")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web") / "cw.db"
    with open_store(path) as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml", by="ana")
        crane = store.crane("STS-08")
        assert crane is not None
        from dataclasses import replace
        store.update_crane_facts(replace(crane, maker="<script>alert(1)</script> Cranes"))
        transition(store, "STS-07", "quarantined", reason="firewall")
        transition(store, "STS-07", "under-analysis", reason="scan")
        store.record_run("STS-07", "scan-image", [], [MODEM], component="CMS")
        decide(store, "STS-07", who="ana")
    return path


@pytest.fixture(scope="module")
def base(db: Path) -> Iterator[tuple[str, int]]:
    server, _ = serve_in_background(db)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    yield host, port
    server.shutdown()
    server.server_close()


def fetch(base: tuple[str, int], path: str, method: str = "GET",
          host_header: str | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(*base, timeout=10)
    headers = {"Host": host_header} if host_header else {}
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, dict(response.getheaders()), body


def test_binds_loopback_by_default(db: Path) -> None:
    server = make_server(db, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_fleet_page_lists_cranes_with_state_and_decision(base: tuple[str, int]) -> None:
    status, headers, body = fetch(base, "/")
    assert status == 200
    assert '<a href="/crane/STS-07">STS-07</a>' in body and "STS-08" in body
    assert '<span class="badge rejected">rejected</span>' in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Cranes" in body and "<script>" not in body
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Frame-Options"] == "DENY"


def test_crane_page_report_and_jsonl(base: tuple[str, int]) -> None:
    status, _, body = fetch(base, "/crane/STS-07")
    assert status == 200 and "ppp peer dials a cellular modem" in body and "image scan of CMS" in body
    assert "under-analysis → rejected" in body
    status, _, report = fetch(base, "/crane/STS-07/report")
    assert status == 200 and '<div class="decision rejected" id="decision">rejected</div>' in report
    status, headers, jsonl = fetch(base, "/crane/STS-07/report.jsonl")
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert '"decision": "rejected"' in jsonl.splitlines()[2]
    status, headers, api = fetch(base, "/api/cranes")
    assert status == 200 and '"decision": "rejected"' in api


def test_unknown_pages_and_cranes_are_404(base: tuple[str, int]) -> None:
    assert fetch(base, "/crane/STS-99")[0] == 404
    assert "not registered" in fetch(base, "/crane/STS-99")[2]
    assert fetch(base, "/etc/passwd")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_is_answered(base: tuple[str, int], method: str) -> None:
    status, headers, _ = fetch(base, "/crane/STS-07", method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_a_foreign_host_header_is_refused(base: tuple[str, int]) -> None:
    assert fetch(base, "/", host_header="attacker.example:8077")[0] == 421
    assert fetch(base, "/", host_header=f"localhost:{base[1]}")[0] == 200


def test_serving_never_writes_the_store(db: Path, base: tuple[str, int]) -> None:
    before = db.read_bytes()
    for path in ("/", "/crane/STS-07", "/crane/STS-07/report", "/api/cranes"):
        fetch(base, path)
    assert db.read_bytes() == before


def test_cli_serve_prints_where_and_serves(db: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cranewatch", "serve", "--port", "0", "--db", str(db)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("cranewatch dashboard on http://127.0.0.1:")
        port = int(line.split(":")[2].split("/")[0])
        assert fetch(("127.0.0.1", port), "/")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
