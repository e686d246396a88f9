"""Helpers for the forensics tests: build images of a tree in every input format with the
standard tools (GNU tar, cpio, mksquashfs, mke2fs), and the cached Debian minbase rootfs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def rootfs() -> Path:
    """The clean Debian minbase tree, built once by scripts/build-test-rootfs.sh (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to build the Debian test rootfs with debootstrap")
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        pytest.fail("debootstrap is not installed: run scripts/install-deps.sh")
    run = subprocess.run(["bash", str(REPO / "scripts/build-test-rootfs.sh")], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        pytest.fail(f"build-test-rootfs.sh failed: {run.stderr[-2000:]}")
    return Path(run.stdout.strip().splitlines()[-1])


def copy_tree(src: Path, dest: Path) -> Path:
    """``cp -a``: keeps owners, modes, links and device nodes (copytree would read /dev/zero)."""
    subprocess.run(["cp", "-a", f"{src}/.", str(dest)], check=True)
    return dest


def make_tar(tree: Path, out: Path, compress: str = "gzip") -> Path:
    """GNU tar with ``--gzip``, ``--xz``, ``--bzip2`` or ``--zstd``."""
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", f"--{compress}", "-cf", str(out), "."], check=True,
                   env={**os.environ, "GZIP": "-1"})
    return out


def make_zip(tree: Path, out: Path) -> Path:
    """A zip as Info-ZIP's ``zip -y -r`` writes it: modes in the high bits, symlinks as links."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for dirpath, dirnames, filenames in os.walk(tree):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                rel = path.relative_to(tree).as_posix()
                st = path.lstat()
                if stat.S_ISDIR(st.st_mode):
                    info = zipfile.ZipInfo(rel + "/")
                    info.external_attr = (st.st_mode & 0xFFFF) << 16 | 0x10
                    archive.writestr(info, b"")
                elif stat.S_ISLNK(st.st_mode):
                    info = zipfile.ZipInfo(rel)
                    info.external_attr = (st.st_mode & 0xFFFF) << 16
                    archive.writestr(info, os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    info = zipfile.ZipInfo(rel)
                    info.external_attr = (st.st_mode & 0xFFFF) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(path, "rb") as fh, archive.open(info, "w") as dest:
                        shutil.copyfileobj(fh, dest)
    return out


def make_cpio(tree: Path, out: Path) -> Path:
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, check=True).stdout
    subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-O", str(out)], cwd=tree, input=names, check=True)
    return out


def make_squashfs(tree: Path, out: Path) -> Path:
    # Uncompressed (-noI -noD -noF -noX): the tests read the format, not the compression.
    subprocess.run(["mksquashfs", str(tree), str(out), "-quiet", "-no-progress", "-noappend", "-noI", "-noD", "-noF", "-noX"], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def make_ext4(tree: Path, out: Path) -> Path:
    used = int(subprocess.run(["du", "-sm", str(tree)], capture_output=True, text=True, check=True).stdout.split()[0])
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-d", str(tree), str(out), f"{used * 3 // 2 + 32}M"], check=True)
    return out
