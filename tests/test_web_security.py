"""The console's security: no page or API without a session (every route of the application,
enumerated, so a new route cannot slip out), CSRF and roles on every state change, hostile
strings rendered inertly, sessions that expire, a rate-limited login, headers on every answer."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from cranewatch.store import open_store
from cranewatch.web import auth
from cranewatch.web.app import PUBLIC, PUBLIC_PREFIXES, SAFE_METHODS, Settings, create_app
from web_helpers import PASSWORD, RAW_MARKERS, XSS, build_store, client, console, csrf


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], Any]]:
    db = tmp_path_factory.mktemp("console-security") / "cw.db"
    facts = build_store(db)
    with console(db) as server:
        yield db, facts, server


def routes(db: Path, finding: str) -> list[tuple[str, str]]:
    """Every (method, path) the application answers, path parameters filled in."""
    app = create_app(Settings(db))
    values = {"crane": "STS-07", "finding": finding, "n": "0"}
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/console.css"))
            continue
        assert isinstance(route, Route), route
        path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], route.path)
        out.extend((method, path) for method in sorted(route.methods or ()))
    return out


def state_changes(db: Path, finding: str) -> list[tuple[str, str]]:
    return [(m, p) for m, p in routes(db, finding) if m not in SAFE_METHODS and (m, p) not in PUBLIC]


def test_the_route_list_is_complete_and_the_public_part_small(world: Any) -> None:
    db, facts, _ = world
    found = routes(db, facts["plain"][0].id)
    assert len(found) >= 25  # pages, API, login, static
    public = [(m, p) for m, p in found if (m, p) in PUBLIC or p.startswith(PUBLIC_PREFIXES)]
    assert sorted(public) == [("GET", "/login"), ("GET", "/static/console.css"), ("HEAD", "/login"),
                              ("POST", "/login")]


def test_no_page_or_api_without_a_session(world: Any) -> None:
    db, facts, server = world
    with client(server) as anonymous:
        for method, path in routes(db, facts["plain"][0].id):
            if (method, path) in PUBLIC or path.startswith(PUBLIC_PREFIXES):
                continue
            r = anonymous.request(method, path, headers={"X-CSRF-Token": "x"}, json={"state": "open", "note": "x"})
            if path.startswith("/api/") or method not in SAFE_METHODS:
                assert r.status_code == 401, (method, path, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
            assert "STS-07" not in r.text or path == "/login", (method, path)


def test_a_forged_or_stale_cookie_is_no_session(world: Any) -> None:
    _, _, server = world
    with httpx.Client(base_url=server.url, cookies={"cw_session": auth.new_token()}) as forged:
        assert forged.get("/api/cranes").status_code == 401


def test_every_state_change_needs_the_csrf_token(world: Any) -> None:
    db, facts, server = world
    changes = state_changes(db, facts["plain"][3].id)
    assert {p for _, p in changes} >= {"/logout", "/api/cranes/STS-07/gate",
                                       f"/api/findings/{facts['plain'][3].id}/triage"}
    with client(server, "officer") as officer:
        token = csrf(officer)["X-CSRF-Token"]
        for method, path in changes:
            for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": token[:-1] + ("B" if token.endswith("A") else "A")},
                            {"X-CSRF-Token": token, "Origin": "http://attacker.example"}):
                r = officer.request(method, path, headers=headers, json={"state": "acknowledged", "note": "x"})
                assert r.status_code == 403, (method, path, headers, r.status_code)
        assert officer.get("/api/session").status_code == 200  # the refused logout did not log out
    with open_store(db, readonly=True) as store:
        assert facts["plain"][3].id not in store.latest_dispositions("STS-07")
        assert len(store.gate_decisions("STS-07")) == 0


@pytest.mark.parametrize(("role", "allowed"), [
    ("viewer", set()),
    ("analyst", {"triage"}),
    ("officer", {"triage", "dispose", "gate"}),
    ("admin", set()),
])
def test_roles_on_every_state_change(world: Any, role: str, allowed: set[str]) -> None:
    _, facts, server = world
    target = facts["plain"][4 + len(allowed)].id
    attempts = {
        "triage": (f"/api/findings/{target}/triage", {"state": "acknowledged", "note": f"by {role}"}),
        "dispose": (f"/api/findings/{target}/triage", {"state": "false-positive", "note": f"by {role}"}),
        "gate": ("/api/cranes/STS-08/gate", {}),
    }
    with client(server, role) as c:
        for action, (path, body) in attempts.items():
            r = c.post(path, json=body, headers=csrf(c))
            assert (r.status_code == 200) == (action in allowed), (role, action, r.status_code, r.text[:200])
            if action not in allowed:
                assert r.status_code == 403
        users = c.get("/api/users")
        assert (users.status_code == 200) == (role == "admin")
        if role == "admin":
            assert {u["user"] for u in users.json()} == {"viewer", "analyst", "officer", "admin"}
            assert "password" not in users.text and "scrypt" not in users.text


def test_hostile_strings_are_rendered_inertly_everywhere(world: Any) -> None:
    _, facts, server = world
    pages = ["/", "/crane/STS-07", "/crane/STS-07?q=%3Cscript%3E", "/incidents?crane=STS-07",
             "/images?crane=STS-07", "/monitor", "/crane/STS-07/report"]
    pages += [f"/crane/STS-07/finding/{f.id}" for f in facts["hostile"]]
    with client(server, "officer") as officer:
        for path in pages:
            r = officer.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/html")
            for marker in RAW_MARKERS:
                assert marker not in r.text, (path, marker)
        crane = officer.get("/crane/STS-07").text + "".join(
            officer.get(f"/crane/STS-07/finding/{f.id}").text for f in facts["hostile"])
        images = officer.get("/images?crane=STS-07").text
    # each payload is there, as text
    assert "&lt;script&gt;alert(&#34;host&#34;)&lt;/script&gt;.crane.example" in crane
    assert "/cgi-bin/&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in crane
    assert "&lt;svg onload=alert(&#39;dns&#39;)&gt;" in crane
    assert "crane/&lt;/title&gt;&lt;script&gt;alert(&#39;mqtt&#39;)&lt;/script&gt;" in crane
    assert "etc/cron.d/&lt;iframe src=javascript:alert(1)&gt;" in crane + images
    # and the API gives JSON, which no browser renders as HTML
    with client(server, "viewer") as viewer:
        r = viewer.get("/api/findings", params={"crane": "STS-07", "q": "script"})
        assert r.headers["content-type"] == "application/json" and r.headers["x-content-type-options"] == "nosniff"
        assert any(XSS["hostname"] in row["title"] for row in r.json())


def test_security_headers_on_every_answer(world: Any) -> None:
    _, _, server = world
    with client(server, "viewer") as viewer, client(server) as anonymous:
        answers = [viewer.get("/"), viewer.get("/api/cranes"), viewer.get("/nowhere"), anonymous.get("/api/cranes"),
                   anonymous.get("/login"), viewer.get("/static/console.js"), viewer.get("/crane/STS-07/report")]
        answers.append(viewer.get("/", headers={"Host": "attacker.example"}))
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("style-src")[0], r.url
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "same-origin"
    assert answers[-1].status_code == 421  # DNS rebinding


class Tags(HTMLParser):
    """The script tags, event-handler attributes and javascript: URLs of a page, as a browser parses it."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[list[tuple[str, str | None]]] = []
        self.handlers: list[str] = []
        self.javascript_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(attrs)
        self.handlers += [f"{tag} {k}" for k, _ in attrs if k.startswith("on")]
        self.javascript_urls += [v for k, v in attrs if k in ("href", "src") and (v or "").lower().startswith("javascript:")]


def test_no_inline_script_in_any_page(world: Any) -> None:
    _, facts, server = world
    with client(server, "officer") as officer:
        for path in ["/", "/crane/STS-07", "/monitor", "/login", "/images?crane=STS-07", "/incidents?crane=STS-07",
                     *(f"/crane/STS-07/finding/{f.id}" for f in facts["hostile"])]:
            tags = Tags()
            tags.feed(officer.get(path).text)
            assert tags.scripts == [[("type", "module"), ("src", "/static/console.js")]], path
            assert tags.handlers == [] and tags.javascript_urls == [], path  # no inline event handlers


def test_a_session_expires_by_age_and_by_idleness(tmp_path: Path) -> None:
    db = tmp_path / "cw.db"
    build_store(db, findings=3)
    with console(db, session_seconds=1.0) as server, client(server, "viewer") as viewer:
        assert viewer.get("/api/session").status_code == 200
        time.sleep(1.3)
        assert viewer.get("/api/session").status_code == 401
        assert viewer.get("/").status_code == 303
    with console(db, idle_seconds=1.0) as server, client(server, "viewer") as viewer:
        time.sleep(1.3)
        assert viewer.get("/api/session").status_code == 401
    with open_store(db, readonly=True) as store, store._read() as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0  # expired ones are deleted


def test_login_is_rate_limited_per_user_and_per_client(tmp_path: Path) -> None:
    db = tmp_path / "cw.db"
    build_store(db, findings=3)
    with console(db) as server, client(server) as c:
        for _ in range(5):
            assert c.post("/login", data={"username": "officer", "password": "guess guess"}).status_code == 401
        r = c.post("/login", data={"username": "officer", "password": PASSWORD})  # even the right one
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 200 and "set-cookie" not in r.headers
        assert c.post("/login", data={"username": "viewer", "password": PASSWORD}).status_code == 303
        for _ in range(5):
            c.post("/login", data={"username": "nobody", "password": "guess guess"})
        # ten failures from this client: every name is refused now
        assert c.post("/login", data={"username": "analyst", "password": PASSWORD}).status_code == 429


def test_the_store_keeps_only_digests_of_tokens_and_passwords(world: Any) -> None:
    db, _, server = world
    with client(server, "viewer") as viewer:
        token = viewer.cookies["cw_session"]
        assert viewer.get("/api/session").status_code == 200
        raw = b"".join(f.read_bytes() for f in db.parent.glob("cw.db*"))
    assert token.encode() not in raw and PASSWORD.encode() not in raw
    assert auth.token_digest(token).encode() in raw


def test_logout_and_a_password_change_end_the_session(world: Any) -> None:
    db, _, server = world
    with client(server, "analyst") as analyst:
        assert analyst.post("/logout", headers=csrf(analyst)).status_code == 303
        assert analyst.get("/api/session").status_code == 401
    with client(server, "viewer") as viewer:
        assert viewer.get("/api/session").status_code == 200
        with open_store(db) as store:
            store.change_user("viewer", password=auth.hash_password(PASSWORD, n=2**10))
        assert viewer.get("/api/session").status_code == 401


@pytest.mark.parametrize("target", ["//attacker.example/", "https://attacker.example/", "/\\attacker.example",
                                    "javascript:alert(1)"])
def test_login_never_redirects_off_site(world: Any, target: str) -> None:
    with client(world[2]) as c:
        r = c.post("/login", data={"username": "viewer", "password": PASSWORD, "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_a_large_body_is_refused(world: Any) -> None:
    _, facts, server = world
    with client(server, "officer") as officer:
        r = officer.post(f"/api/findings/{facts['plain'][0].id}/triage", headers=csrf(officer),
                         content=b'{"note": "' + b"x" * 200_000 + b'"}')
        assert r.status_code == 413
        r = officer.post("/login", data={"username": "x" * 100_000, "password": "y"})
        assert r.status_code == 413
