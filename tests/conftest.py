"""Shared test fixtures: where the public data is, and guards for root-only tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_helpers import Cluster, postgres_bin, start_cluster, stop_cluster

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (public captures, Zeek logs, BATADAL); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data not present at {SHARED_DATA} (only in CI and dev sessions)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed: run scripts/install-deps.sh")
    return path


@pytest.fixture
def as_root() -> None:
    """Tests that create namespaces, nftables tables or run daemons need root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")


# -- PostgreSQL, for the store on both backends -------------------------------------------------


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test session (see ``pg_helpers``); skips, saying why, only
    when the server binaries are absent (scripts/install-deps.sh installs them; psycopg comes
    with the test extra, so its absence fails)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg 3 not installed: run scripts/install-deps.sh (pip install -e '.[test]')")
    cluster = start_cluster(bindir)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A URL of a fresh, empty database of the session's cluster (dropped afterwards)."""
    name = pg_cluster.new_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's store lives, once per backend: an SQLite file, a PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "cw.db")
    return str(request.getfixturevalue("pg_url"))
