"""``cranewatch users`` and what the console keeps of a user: a scrypt hash made from a password
read from standard input (never a flag), roles, and migration 0007 on a store of the old schema."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from cranewatch.model import Severity
from cranewatch.store import open_store
from cranewatch.web import auth
from web_helpers import FLEET, client, console, finding

REPO = Path(__file__).resolve().parents[1]
PW = "a long enough password"


def users(db: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cranewatch", "users", *args, "--db", str(db)],
                          input=None if password is None else password + "\n", capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cw.db"
    subprocess.run([sys.executable, "-m", "cranewatch", "fleet", "import", str(FLEET), "--db", str(path)],
                   check=True, capture_output=True, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    return path


def test_add_hashes_the_password_from_stdin_with_scrypt(db: Path) -> None:
    done = users(db, "add", "meyer", "--role", "officer", password=PW)
    assert done.returncode == 0 and "user meyer added as officer" in done.stdout
    with open_store(db, readonly=True) as store:
        user = store.user("meyer")
    assert user is not None and user.role == "officer"
    scheme, n, r, p, salt, digest = user.password.split("$")
    assert (scheme, n, r, p) == ("scrypt", "131072", "8", "1")  # N=2^17, r=8, p=1: 128 MiB
    # the stored hash is scrypt of the password, computed here independently of cranewatch.web.auth
    expected = hashlib.scrypt(PW.encode(), salt=base64.b64decode(salt), n=2**17, r=8, p=1, dklen=32,
                              maxmem=300 * 2**20)
    assert base64.b64decode(digest) == expected
    assert PW.encode() not in b"".join(f.read_bytes() for f in db.parent.glob("cw.db*"))


def test_a_cli_made_user_logs_in_to_the_console(db: Path) -> None:
    assert users(db, "add", "ana", "--role", "analyst", password=PW).returncode == 0
    with console(db) as server, client(server, "ana", PW) as c:
        assert c.get("/api/session").json()["role"] == "analyst"


@pytest.mark.parametrize(("args", "password", "message"), [
    (["add", "ana", "--role", "analyst"], "short", "too short"),
    (["add", "ana", "--role", "analyst"], "", "no password on standard input"),
    (["add", "ana", "--role", "root"], PW, "invalid choice"),
    (["add", "an a", "--role", "viewer"], PW, "user name"),
    (["add", "ana", "--role", "viewer", "--password", PW], PW, "unrecognized arguments: --password"),
])
def test_refusals(db: Path, args: list[str], password: str, message: str) -> None:
    done = users(db, *args, password=password if password else None)
    assert done.returncode == 2 and message in done.stderr
    with open_store(db, readonly=True) as store:
        assert store.users() == []


def test_list_role_passwd_remove(db: Path) -> None:
    assert users(db, "add", "ana", "--role", "viewer", password=PW).returncode == 0
    again = users(db, "add", "ana", "--role", "viewer", password=PW)
    assert again.returncode == 2 and "user ana exists" in again.stderr
    assert users(db, "role", "ana", "officer").returncode == 0
    listing = users(db, "list")
    assert listing.returncode == 0 and listing.stdout.startswith("ana") and "officer" in listing.stdout
    assert "scrypt" not in listing.stdout
    with open_store(db, readonly=True) as store:
        before = store.user("ana")
    assert users(db, "passwd", "ana", password="another long password").returncode == 0
    with open_store(db, readonly=True) as store:
        after = store.user("ana")
    assert before is not None and after is not None and before.password != after.password
    assert auth.verify_password("another long password", after.password)
    assert users(db, "remove", "ana").returncode == 0
    assert users(db, "remove", "ana").returncode == 2
    assert "no console users" in users(db, "list").stdout


def test_verify_refuses_malformed_and_absurd_hashes() -> None:
    good = auth.hash_password(PW, n=2**10)
    assert auth.verify_password(PW, good) and not auth.verify_password(PW + "x", good)
    for bad in ("", "plain", good.replace("scrypt", "md5"), good.replace("$1024$", f"${2**30}$"), "scrypt$1$8$1$$"):
        assert not auth.verify_password(PW, bad)


def test_migration_0007_keeps_the_audit_trail_and_adds_note_and_assign(tmp_path: Path) -> None:
    from cranewatch.store import Store

    path = tmp_path / "old.db"
    old = Store(path, migrate=False)
    old.migrate(upto=6)  # the schema before the console
    with old._write() as conn:
        conn.execute("INSERT INTO audit_events(crane, at, who, action, subject, why, detail)"
                     " VALUES ('STS-07', 1.0, 'ana', 'disposition', 'cw-old', 'seen', '{\"state\": \"acknowledged\"}')")
    old.close()
    with open_store(path) as store:
        assert store.applied_migrations()[6] == "0007_console"
        (event,) = store.audit_events("STS-07")
        assert (event.action, event.who, event.subject, event.detail) == (
            "disposition", "ana", "cw-old", {"state": "acknowledged"})
        store.record_run("STS-07", "analyze", [], [finding(1, severity=Severity.HIGH)])
        fid = store.findings("STS-07")[0].id
        store.record_finding_note("STS-07", fid, who="ana", why="asked", assignee="meyer")
        store.record_finding_note("STS-07", fid, who="ana", why="more")
        assert [e.action for e in store.audit_events("STS-07")] == ["disposition", "assign", "note"]
        assert [e.seq for e in store.audit_events("STS-07")] == [1, 2, 3]  # numbering goes on
        with pytest.raises(Exception, match="CHECK"), store._write() as conn:  # still a closed list
            conn.execute("INSERT INTO audit_events(crane, at, who, action, subject, why) VALUES"
                         " ('STS-07', 1.0, 'x', 'delete-everything', 's', 'w')")
