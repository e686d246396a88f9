"""A throw-away PostgreSQL cluster for the tests: Debian's ``initdb`` and ``pg_ctl`` in a
temporary directory, run as an unprivileged user (PostgreSQL refuses root), listening on a unix
socket in that directory and on 127.0.0.1 at a free port (password required there), stopped and
removed at the end."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

SUPERUSER = "cranewatch"
PASSWORD = "s3cret-Crane_pw"  # a throw-away cluster's


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server binaries (``/usr/lib/postgresql/N/bin``), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres", user: str = SUPERUSER, *, tcp: bool = False,
            password: str | None = None) -> str:
        """A URL of this cluster: over the unix socket (trusted), or TCP with a password."""
        if tcp:
            return f"postgresql://{user}:{quote(password or PASSWORD, safe='')}@127.0.0.1:{self.port}/{database}"
        return f"postgresql://{user}@/{database}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def admin(self, *statements: str, database: str = "postgres") -> list[Any]:
        """Run statements as the superuser (autocommit); the rows of the last."""
        import psycopg

        rows: list[Any] = []
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            for statement in statements:
                cur = conn.execute(statement)
                rows = cur.fetchall() if cur.description else []
        return rows

    def new_database(self) -> str:
        name = f"cw_{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, action: str) -> None:
        _as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                   "-w", "-t", "30", "-m", "fast", action], self.root)


def _owner() -> tuple[str | None, str | None]:
    """Who runs the cluster: this user, or ``nobody`` when we are root."""
    return ("nobody", "nogroup") if os.geteuid() == 0 else (None, None)


def _as_owner(argv: list[str], root: Path) -> None:
    user, group = _owner()
    done = subprocess.run(argv, user=user, group=group, cwd=root, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}, timeout=120)
    if done.returncode != 0:
        log = root / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def start_cluster(bindir: Path) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="cranewatch-pg-"))
    user, group = _owner()
    if user is not None:
        shutil.chown(root, user, group)
    (root / "sock").mkdir()
    (root / "pw").write_text(PASSWORD + "\n")
    if user is not None:
        for p in (root / "sock", root / "pw"):
            shutil.chown(p, user, group)
    _as_owner([str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--pwfile", str(root / "pw"),
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], root)
    port = free_port()
    conf = root / "data" / "postgresql.conf"
    with conf.open("a") as out:
        out.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root / 'sock'}'\n"
                  "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 60\n"
                  "shared_buffers = 32MB\n")
    cluster = Cluster(bindir, root, port)
    cluster.pg_ctl("start")
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    try:
        cluster.pg_ctl("stop")
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)
