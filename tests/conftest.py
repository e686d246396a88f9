"""Shared test fixtures: where the public data is, and guards for root-only tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
