"""The repository holds no merge-conflict markers (a merge resolved in haste once committed some)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(rb"^(<<<<<<< |>>>>>>> |=======$)", re.M)
TEXT = {".py", ".md", ".toml", ".txt", ".yaml", ".yml", ".json", ".sh", ".j2", ".html", ".css",
        ".js", ".sql", ".service", ".example", ".cfg", ".ini"}


def test_no_conflict_markers_in_tracked_text_files() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    bad = []
    for name in listed.decode().split("\0"):
        path = REPO / name
        if not name or path.suffix not in TEXT or not path.is_file():
            continue
        if MARKER.search(path.read_bytes()):
            bad.append(name)
    assert bad == []
