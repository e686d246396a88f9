"""A store for the console's tests: two cranes, findings with hostile strings where an attacker
writes them (hostnames, HTTP paths, DNS names, MQTT topics, file names), an image scan with an
SBOM, incidents, a monitor checkpoint, and one user per role (cheap scrypt cost: the tests
check behaviour, not the KDF's price, which tests/test_web_users.py checks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cranewatch.fleet import import_fleet, transition
from cranewatch.heartbeat import Heartbeat
from cranewatch.incidents import group_incidents
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.store import open_store
from cranewatch.web import auth
from cranewatch.web.app import serve_in_background

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "profiles" / "fleet-example.toml"
PASSWORD = "correct horse battery"
ROLES = ("viewer", "analyst", "officer", "admin")

# what an attacker controls, each as it would arrive in a capture or an image
XSS = {
    "hostname": '<script>alert("host")</script>.crane.example',
    "http_path": '/cgi-bin/"><img src=x onerror=alert(1)>',
    "dns_name": "x\"><svg onload=alert('dns')>.evil.example",
    "mqtt_topic": "crane/</title><script>alert('mqtt')</script>",
    "file_name": "etc/cron.d/<iframe src=javascript:alert(1)>",
    "csv": "=HYPERLINK(\"http://evil.example\",\"x\")",
}
RAW_MARKERS = ("<script>alert", "<img src=x", "<svg onload", "<iframe src", "onerror=alert(1)>")


def finding(n: int, *, severity: Severity = Severity.MEDIUM, category: str = "recon", rule: str = "recon.scan",
            src: str | None = None, dst: str | None = None, title: str | None = None,
            evidence: tuple[Evidence, ...] = (), crane: str = "STS-07", first: float = 1_796_000_000.0) -> Finding:
    return Finding(
        id=finding_id(rule, crane, n), rule=rule, category=category, severity=severity,
        title=title or f"finding number {n}", first_seen=first + n, last_seen=first + n + 60, crane=crane,
        src=src if src is not None else f"10.20.7.{n % 250 + 1}", dst=dst, count=n % 7 + 1,
        technique=("T0846",), evidence=evidence or (Evidence(source="quarantine.pcap", frames=(n + 1, n + 2)),),
        remedy="find out who scans")


def hostile_findings() -> list[Finding]:
    return [
        finding(1001, severity=Severity.HIGH, category="remote-access", rule="remote-access.http",
                src="10.20.7.30", dst="203.0.113.9:80", title=f"HTTP to {XSS['hostname']}",
                evidence=(Evidence(source="q.pcap", frames=(3,), values={"host": XSS["hostname"],
                                                                          "path": XSS["http_path"]},
                                   excerpt=f"GET {XSS['http_path']} HTTP/1.1"),)),
        finding(1002, severity=Severity.HIGH, category="c2", rule="c2.dns", title=f"lookup of {XSS['dns_name']}",
                evidence=(Evidence(source="q.pcap", frames=(5,), values={"query": XSS["dns_name"]}),)),
        finding(1003, severity=Severity.MEDIUM, category="data-leak", rule="data-leak.mqtt",
                title=f"MQTT publish to {XSS['mqtt_topic']}",
                evidence=(Evidence(source="q.pcap", frames=(7,), values={"topic": XSS["mqtt_topic"]}),)),
        finding(1004, severity=Severity.CRITICAL, category="persistence", rule="persistence.cron", src=None,
                title=f"cron job {XSS['file_name']}", evidence=(Evidence(path=XSS["file_name"], line=1,
                                                                         excerpt="* * * * * root nc -e sh"),)),
        finding(1005, severity=Severity.LOW, category="recon", rule="recon.csv", title=XSS["csv"]),
    ]


def build_store(path: Path, *, findings: int = 40) -> dict[str, Any]:
    """The store the console tests read; returns what they need to know about it."""
    plain = [finding(n, severity=(Severity.LOW, Severity.MEDIUM, Severity.HIGH)[n % 3]) for n in range(findings)]
    hostile = hostile_findings()
    monitor = finding(2001, severity=Severity.HIGH, category="remote-access", rule="remote-access.ssh",
                      src="10.20.7.10", dst="198.51.100.7:22", title="SSH from the PLC in service",
                      first=time.time() - 3600)
    sbom = {"bomFormat": "CycloneDX", "components": [{"name": "busybox", "version": "1.36.1",
                                                      "purl": "pkg:deb/debian/busybox@1.36.1"},
                                                     {"name": XSS["file_name"], "version": "1"}]}
    with open_store(path) as store:
        import_fleet(store, FLEET, by="ana")
        transition(store, "STS-07", "quarantined", reason="firewall")
        transition(store, "STS-07", "under-analysis", reason="scan")
        capture = store.record_run("STS-07", "analyze", [], plain + hostile[:3], who="ana",
                                   incidents=group_incidents(plain + hostile[:3]))
        scan = store.record_run("STS-07", "scan-image", [], hostile[3:], component="CMS", who="ana",
                                artifacts={"sbom": json.dumps(sbom)})
        watch = store.record_run("STS-07", "analyze", [], [monitor], component="monitor:eth1")
        now = time.time()
        store.record_heartbeat(Heartbeat("STS-07", "eth1", now, now - 7200, now - 5, 123_456, 1, 60.0))
        for role in ROLES:
            store.add_user(role, role, auth.hash_password(PASSWORD, n=2**10), by="test")
    return {"capture": capture, "scan": scan, "monitor": watch, "plain": plain, "hostile": hostile,
            "monitor_finding": monitor}


@contextmanager
def console(db: Path, **options: Any) -> Iterator[Any]:
    server = serve_in_background(db, **options)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def client(server: Any, user: str | None = None, password: str = PASSWORD) -> Iterator[httpx.Client]:
    """An HTTP client of the console, logged in as ``user`` (None: not logged in), closed after."""
    with httpx.Client(base_url=server.url, timeout=20) as c:
        if user is not None:
            r = c.post("/login", data={"username": user, "password": password})
            assert r.status_code == 303, (r.status_code, r.text[:200])
        yield c


def csrf(c: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": c.get("/api/session").json()["csrf"]}
