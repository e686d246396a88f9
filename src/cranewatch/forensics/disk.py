"""Whole-disk images: find the partitions of a computer's disk and open each one by its content.

Ports image the computer, not a partition. A disk arrives raw (``dd``), as a virtual machine's
disk (qcow2, VMDK, VHD, VHDX) or as an EnCase evidence file (E01). The virtual formats are
converted to raw by Debian's ``qemu-img convert`` (E01 by ``ewfexport`` of ewf-tools) into the
scan's private temporary directory: never ``qemu-nbd``, never a mount, never a loop device.
The partition table (MBR with extended/logical partitions, or GPT with its CRCs and the backup
header) is parsed here with ``struct``; a bad table is reported with its byte offset and what
can still be read is read.

Each partition is then judged by its bytes (magic numbers), not its type GUID: ext2/3/4 is
read in place by ``debugfs`` at the partition's offset, squashfs by ``unsquashfs`` and a FAT/EFI
system partition by mtools (``mcopy``), XFS in place by ``forensics.xfs`` (Python) and btrfs by ``btrfs restore`` (btrfs-progs, a separate
GPL program) from a sparse copy in the private directory, NTFS in
place by libtsk (``forensics.ntfs``, in a child process), and swap, LUKS, other
filesystems and unknown content are reported and skipped. Every readable partition is a *volume*, scanned like
a directory image; findings name the volume (``p2:/etc/rc.local``). The volume holding
``etc/`` and ``usr/`` (or ``Windows/System32/config``) is the root, the one ``DiskImage`` presents as its own entries.
"""

from __future__ import annotations

import errno
import json
import lzma
import os
import re
import resource
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import zstandard

from cranewatch.errors import EnvironmentProblem, ImageError, Location
from cranewatch.forensics.image import Entry, Image, Limits, open_image
from cranewatch.model import Finding, finding_id

SECTOR = 512
_GPT_SIGNATURE = b"EFI PART"
_MAX_GPT_ENTRIES_BYTES = 1 << 20  # the standard array is 16 KiB; 1 MiB is far beyond any real one
_MAX_LOGICAL = 128  # logical partitions followed in an extended-partition chain
_HEADER_MEMORY = 1 << 30  # address-space cap while qemu-img/ewfinfo read a (maybe hostile) header
_HEADER_CPU_SECONDS = 120
_CONVERT_CPU_SECONDS = 3600  # converting 16 GB takes minutes; a loop in a hostile image stops here

# --- container formats -----------------------------------------------------------------------

# qemu-img's driver name for each container this module converts.
_QEMU_FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx"}
ContainerFormat = Literal["raw", "qcow2", "vmdk", "vhd", "vhdx", "e01"]


def sniff_container(path: Path) -> ContainerFormat | None:
    """The disk container of ``path`` by its bytes, or ``None`` when it is not a whole disk."""
    with open(path, "rb") as fh:
        head = fh.read(8192)
        size = os.fstat(fh.fileno()).st_size
        tail = b""
        if size >= 512:
            fh.seek(size - 512)
            tail = fh.read(512)
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV"):
        return "vmdk"
    if head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"  # refused when opened: a descriptor names extent files on the host
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix") or tail.startswith(b"conectix"):
        return "vhd"
    if head.startswith(b"EVF\x09\x0d\x0a\xff\x00"):
        return "e01"
    if looks_like_partition_table(head):
        return "raw"
    return None


def looks_like_partition_table(head: bytes) -> bool:
    """An MBR (protective or not) in the first 512 bytes, or a GPT header after it."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return False
    if head[512:520] == _GPT_SIGNATURE or head[4096:4104] == _GPT_SIGNATURE:
        return True
    if head[3:11] == b"NTFS    " or head[54:57] == b"FAT" or head[82:87] == b"FAT32":
        return False  # a volume boot record: a bare partition, not a disk
    entries = [head[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    used = 0
    for entry in entries:
        status, kind = entry[0], entry[4]
        start, sectors = struct.unpack_from("<II", entry, 8)
        if status not in (0x00, 0x80):
            return False
        if kind:
            if start == 0 or sectors == 0:
                return False
            used += 1
    return used > 0


# --- partition tables --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its number as Linux names it (``p5`` is the first logical one)."""

    index: int
    offset: int  # bytes from the start of the disk
    size: int  # bytes
    scheme: str  # "gpt" or "mbr"
    type: str  # the table's type: a GPT type name or GUID, or an MBR type byte as 0x83
    name: str = ""  # GPT partition name
    partuuid: str = ""  # as fstab's PARTUUID= spells it (GPT unique GUID; MBR disk id-number)

    @property
    def label(self) -> str:
        return f"p{self.index}"

    def describe(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"{self.label}{named} ({self.scheme.upper()} {self.type}, {self.size} bytes at byte {self.offset})"


@dataclass(frozen=True, slots=True)
class DiskLayout:
    """What the partition table says, plus every problem found in it (each with its offset)."""

    scheme: str  # "gpt", "mbr" or "none"
    sector: int
    partitions: tuple[Partition, ...]
    problems: tuple[str, ...] = ()


_GPT_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (arm64)",
    "69dad710-2ce4-4e3c-b16c-21a1d49abed3": "Linux root (arm)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
}
_MBR_EXTENDED = {0x05, 0x0F, 0x85}
_MBR_PROTECTIVE = 0xEE

ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes (short at the end of the disk)


def read_layout(read_at: ReadAt, disk_size: int) -> DiskLayout:
    """Parse the disk's partition table: GPT (behind its protective MBR) or MBR."""
    mbr = read_at(0, SECTOR)
    problems: list[str] = []
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        return DiskLayout("none", SECTOR, (), ("no MBR boot signature (0x55AA) at byte 510: no partition table",))
    protective = _has_protective_entry(mbr)
    gpt_sector = next((size for size in (SECTOR, 4096) if read_at(size, 8) == _GPT_SIGNATURE), SECTOR if protective else None)
    if gpt_sector is not None:
        gpt = _read_gpt(read_at, disk_size, gpt_sector, problems)
        if gpt is not None:
            if not protective:
                problems.append("the disk has a GPT but its MBR has no protective (0xEE) entry: "
                                "the GPT was read, the MBR entries ignored")
            return DiskLayout("gpt", gpt_sector, gpt, tuple(problems))
        if protective:
            problems.append("the MBR is a GPT protective MBR but neither the primary nor the backup GPT is valid: "
                            "no partitions read")
            return DiskLayout("gpt", gpt_sector, (), tuple(problems))
        problems.append("a GPT signature was found but no valid GPT: the MBR partitions were read")
    partitions = _read_mbr(read_at, disk_size, mbr, problems)
    return DiskLayout("mbr", SECTOR, tuple(partitions), tuple(problems))


def _has_protective_entry(mbr: bytes) -> bool:
    return any(mbr[446 + 16 * i + 4] == _MBR_PROTECTIVE for i in range(4))


def _mbr_entries(block: bytes) -> list[tuple[int, int, int]]:
    """(type, start LBA, sectors) of the four entries of an MBR or EBR."""
    out = []
    for i in range(4):
        entry = block[446 + 16 * i : 462 + 16 * i]
        start, sectors = struct.unpack_from("<II", entry, 8)
        out.append((entry[4], start, sectors))
    return out


def _read_mbr(read_at: ReadAt, disk_size: int, mbr: bytes, problems: list[str]) -> list[Partition]:
    partitions: list[Partition] = []
    for i, (kind, start, sectors) in enumerate(_mbr_entries(mbr)):
        if kind == 0 or sectors == 0:
            continue
        entry_offset = 446 + 16 * i
        if kind in _MBR_EXTENDED:
            partitions.extend(_read_logical(read_at, disk_size, start, entry_offset, problems))
            continue
        part = Partition(i + 1, start * SECTOR, sectors * SECTOR, "mbr", f"0x{kind:02x}", partuuid=_mbr_partuuid(mbr, i + 1))
        if _inside(part, disk_size, f"MBR entry {i + 1} at byte {entry_offset}", problems):
            partitions.append(part)
    return partitions


def _mbr_partuuid(mbr: bytes, index: int) -> str:
    """``PARTUUID=`` of an MBR partition: the disk signature at byte 440, a dash, the number."""
    return f"{struct.unpack_from('<I', mbr, 440)[0]:08x}-{index:02x}"


def _read_logical(read_at: ReadAt, disk_size: int, ext_start: int, entry_offset: int, problems: list[str]) -> list[Partition]:
    """Walk the chain of extended boot records; logical partitions are numbered from 5."""
    partitions: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = ext_start
    while len(partitions) < _MAX_LOGICAL:
        where = ebr_lba * SECTOR
        if ebr_lba in seen:
            problems.append(f"extended partition chain loops back to the EBR at byte {where}: stopped there")
            break
        seen.add(ebr_lba)
        ebr = read_at(where, SECTOR)
        if len(ebr) < SECTOR or ebr[510:512] != b"\x55\xaa":
            source = f"MBR entry at byte {entry_offset}" if ebr_lba == ext_start else "the previous EBR"
            problems.append(f"no valid extended boot record at byte {where} (named by {source}): "
                            "logical partitions from there on are not read")
            break
        entries = _mbr_entries(ebr)
        kind, start, sectors = entries[0]
        if kind and sectors:
            index = 5 + len(partitions)
            part = Partition(index, (ebr_lba + start) * SECTOR, sectors * SECTOR, "mbr", f"0x{kind:02x}",
                             partuuid=_mbr_partuuid(read_at(0, SECTOR), index))
            if _inside(part, disk_size, f"EBR at byte {where}", problems):
                partitions.append(part)
        next_kind, next_start, _ = entries[1]
        if next_kind not in _MBR_EXTENDED or next_start == 0:
            break
        ebr_lba = ext_start + next_start
    return partitions


def _inside(part: Partition, disk_size: int, where: str, problems: list[str]) -> bool:
    if part.offset + part.size <= disk_size:
        return True
    problems.append(f"{where}: {part.label} ({part.size} bytes at byte {part.offset}) runs past the end of the "
                    f"{disk_size}-byte disk (truncated image?): skipped")
    return False


def _read_gpt(read_at: ReadAt, disk_size: int, sector: int, problems: list[str]) -> tuple[Partition, ...] | None:
    """The partitions of the primary GPT, or of the backup one when the primary is damaged."""
    primary = _gpt_header(read_at, sector, sector, problems)
    if primary is not None:
        parts = _gpt_entries(read_at, disk_size, sector, primary, problems)
        if parts is not None:
            return parts
    last_lba = disk_size // sector - 1
    backup = _gpt_header(read_at, last_lba * sector, sector, problems)
    if backup is not None:
        parts = _gpt_entries(read_at, disk_size, sector, backup, problems)
        if parts is not None:
            problems.append(f"the primary GPT is damaged: partitions read from the backup GPT at byte {last_lba * sector}")
            return parts
    return None


@dataclass(frozen=True, slots=True)
class _GptHeader:
    offset: int
    entries_lba: int
    count: int
    entry_size: int
    entries_crc: int


def _gpt_header(read_at: ReadAt, offset: int, sector: int, problems: list[str]) -> _GptHeader | None:
    raw = read_at(offset, sector)
    if raw[:8] != _GPT_SIGNATURE:
        problems.append(f"no GPT header signature at byte {offset}")
        return None
    header_size, header_crc = struct.unpack_from("<II", raw, 12)
    if not 92 <= header_size <= sector:
        problems.append(f"GPT header at byte {offset}: impossible header size {header_size}")
        return None
    check = bytearray(raw[:header_size])
    check[16:20] = b"\x00\x00\x00\x00"
    if zlib.crc32(check) != header_crc:
        problems.append(f"GPT header at byte {offset}: header CRC32 mismatch (stored 0x{header_crc:08x}, "
                        f"computed 0x{zlib.crc32(check):08x})")
        return None
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", raw, 72)
    if entry_size < 128 or entry_size % 8 or count * entry_size > _MAX_GPT_ENTRIES_BYTES:
        problems.append(f"GPT header at byte {offset}: impossible partition array ({count} entries of {entry_size} bytes)")
        return None
    return _GptHeader(offset, entries_lba, count, entry_size, entries_crc)


def _gpt_entries(read_at: ReadAt, disk_size: int, sector: int, header: _GptHeader, problems: list[str]) -> tuple[Partition, ...] | None:
    where = header.entries_lba * sector
    array = read_at(where, header.count * header.entry_size)
    if len(array) < header.count * header.entry_size or zlib.crc32(array) != header.entries_crc:
        problems.append(f"GPT partition array at byte {where} (of the header at byte {header.offset}): CRC32 mismatch")
        return None
    partitions: list[Partition] = []
    for i in range(header.count):
        entry = array[i * header.entry_size : (i + 1) * header.entry_size]
        if entry[:16] == b"\x00" * 16:
            continue
        type_guid = str(uuid.UUID(bytes_le=entry[:16]))
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", "replace").split("\x00", 1)[0]
        if last < first:
            problems.append(f"GPT entry {i + 1} at byte {where + i * header.entry_size}: ends (LBA {last}) before it starts "
                            f"(LBA {first}): skipped")
            continue
        part = Partition(i + 1, first * sector, (last - first + 1) * sector, "gpt", _GPT_TYPES.get(type_guid, type_guid), name,
                         str(uuid.UUID(bytes_le=entry[16:32])))
        if _inside(part, disk_size, f"GPT entry {i + 1} at byte {where + i * header.entry_size}", problems):
            partitions.append(part)
    return tuple(partitions)


# --- what a partition holds, by its bytes ------------------------------------------------------------


def probe_content(read_at: ReadAt, part: Partition) -> str:
    """The filesystem (or other content) at the start of ``part``, read from its magic numbers."""
    head = read_at(part.offset, 8192 if part.size >= 8192 else part.size)
    head = head.ljust(8192, b"\x00")
    if head[1080:1082] == b"\x53\xef":
        return "ext"
    if head[:4] == b"hsqs":
        return "squashfs"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[510:512] == b"\x55\xaa" and (head[54:59] in (b"FAT12", b"FAT16", b"FAT  ") or head[82:87] == b"FAT32"):
        return "fat"
    if head[3:11] == b"EXFAT   ":
        return "exfat"
    if head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if head[:6] == b"LUKS\xba\xbe":
        return "luks"
    if head[3:11] == b"-FVE-FS-":
        return "bitlocker"
    if head[512:520] == b"LABELONE" and head[536:544] == b"LVM2 001":
        return "lvm"
    if head[:4] == b"XFSB":
        return "xfs"
    if read_at(part.offset + 0x10040, 8) == b"_BHRfS_M":
        return "btrfs"
    if head[1024:1028] == b"\x10\x20\xf5\xf2":
        return "f2fs"
    if head == b"\x00" * 8192:
        return "empty"
    return "unknown"


def fstab_names(read_at: ReadAt, part: Partition, content: str) -> frozenset[str]:
    """How an fstab line can name this partition (lower case): ``uuid=``, ``label=``,
    ``partuuid=``, ``partlabel=`` and the kernel's device name ending in its number."""
    names = {f"partuuid={part.partuuid}"} if part.partuuid else set()
    if part.name:
        names.add(f"partlabel={part.name.lower()}")
    if content == "ext":
        sb = read_at(part.offset + 1024, 256)
        names.add(f"uuid={uuid.UUID(bytes=sb[104:120])}")
        label = sb[120:136].split(b"\x00", 1)[0].decode("utf-8", "replace")
        if label:
            names.add(f"label={label.lower()}")
    elif content == "fat":
        boot = read_at(part.offset, 512)
        at = 0x43 if boot[82:87] == b"FAT32" else 0x27  # the volume serial, then the 11-byte label
        serial = struct.unpack_from("<I", boot, at)[0]
        names.add(f"uuid={serial >> 16:04x}-{serial & 0xFFFF:04x}")
        label = boot[at + 4 : at + 15].decode("ascii", "replace").strip()
        if label and label != "NO NAME":
            names.add(f"label={label.lower()}")
    return frozenset(names)


_DEVICE_NUMBER = re.compile(r"^/dev/(?:[shv]d[a-z]|xvd[a-z]|nvme\d+n\d+p|mmcblk\d+p)(\d+)$")


_SKIPPED = {
    "swap": "swap space (not a filesystem): skipped",
    "exfat": "exFAT: not examined (no extractor for an unmounted exFAT volume): skipped",
    "lvm": "LVM physical volume whose logical volumes cannot be read: skipped",
    "f2fs": "F2FS: not examined (no extractor for an unmounted F2FS volume): skipped",
    "empty": "empty (zeros at its start): skipped",
    "unknown": "unknown content (no filesystem magic found): skipped",
}


# --- encrypted volumes: recognised by their header, reported, never opened ---------------------------

_ENCRYPTED = ("luks", "bitlocker")
_LUKS2_JSON_MAX = 4 << 20  # the JSON area is 12 KiB by default; cryptsetup allows up to 4 MiB


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def encrypted_header(read_at: ReadAt, part: Partition, content: str) -> dict[str, object]:
    """What the header of a LUKS (1 or 2) or BitLocker volume says, without any key: format,
    version, cipher, UUID. A damaged header gives what could be read and ``damaged``."""
    head = read_at(part.offset, 4096).ljust(4096, b"\x00")
    if content == "bitlocker":
        # BitLocker's boot sector: the -FVE-FS- OEM id, then (Windows 7 and later) the byte
        # offsets of the three copies of the FVE metadata block at 176, 184 and 192.
        meta = [o for o in struct.unpack_from("<3Q", head, 176) if 0 < o < part.size]
        return {"format": "BitLocker", "signature": "-FVE-FS-", "metadata_offsets": meta}
    version = struct.unpack_from(">H", head, 6)[0]
    out: dict[str, object] = {"format": f"LUKS{version}" if version in (1, 2) else "LUKS", "version": version,
                              "uuid": _cstr(head[168:208])}
    if version == 1:
        out["cipher"] = f"{_cstr(head[8:40])}-{_cstr(head[40:72])}"
        out["hash"] = _cstr(head[72:104])
        out["key_bytes"] = struct.unpack_from(">I", head, 108)[0]
    elif version == 2:
        out["label"] = _cstr(head[24:72])
        size = struct.unpack_from(">Q", head, 8)[0]
        if not 4096 < size <= 4096 + _LUKS2_JSON_MAX or size > part.size:
            out["damaged"] = f"header size {size} out of range"
            return out
        try:
            meta = json.loads(read_at(part.offset + 4096, size - 4096).split(b"\x00", 1)[0])
            segment = meta["segments"]["0"]
            out["cipher"] = str(segment["encryption"])
            out["keyslots"] = len(meta.get("keyslots", {}))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            out["damaged"] = f"JSON metadata unreadable ({type(exc).__name__})"
    else:
        out["damaged"] = f"unknown LUKS version {version}"
    return out


def _header_text(header: dict[str, object]) -> str:
    parts = [str(header["format"])]
    parts.extend(f"{k} {header[k]}" for k in ("cipher", "uuid") if header.get(k))
    if header.get("metadata_offsets"):
        parts.append(f"FVE metadata at bytes {', '.join(map(str, header['metadata_offsets']))}")  # type: ignore[call-overload]
    if header.get("damaged"):
        parts.append(f"damaged header: {header['damaged']}")
    return ", ".join(parts)


def encrypted_findings(disk: DiskImage, crane: str | None) -> list[Finding]:
    """A medium finding per encrypted volume: content the maker ships that the port cannot read
    is itself evidence the gate must weigh (what it holds, nobody here can say)."""
    from cranewatch.model import Evidence, Severity

    findings = []
    for part, header in disk.encrypted:
        what = _header_text(header)
        findings.append(Finding(
            id=finding_id("integrity.encrypted-volume", crane, part.label, header.get("uuid") or part.offset),
            rule="integrity.encrypted-volume", category="backdoor", severity=Severity.MEDIUM,
            title=f"encrypted volume the port cannot examine: {part.label} ({what})",
            first_seen=None, last_seen=None, crane=crane,
            evidence=(Evidence(source=str(disk.source), offset=part.offset,
                               values={"partition": part.label, "partition_offset": part.offset,
                                       "partition_size": part.size, "filesystem": header["format"],
                                       **{k: v for k, v in header.items() if k != "format"}},
                               note="not examined: encrypted; nothing inside it was checked"),),
            remedy="Ask the maker for the key (or a decrypted image) and scan the volume's content, or have the "
                   "maker remove it; until then treat it as unknown code on the crane.",
        ))
    return findings


# --- opening a disk -------------------------------------------------------------------------------


@dataclass
class Volume:
    """A readable partition of the disk, opened as an ``Image``."""

    partition: Partition
    content: str
    image: Image
    is_root: bool = False
    names: frozenset[str] = frozenset()  # how fstab may name it (``fstab_names``)
    mount_point: str = ""  # where the root's fstab mounts it ("" for a root or an unmounted volume)
    name: str = ""  # a carved piece's label (``@512``) in place of the partition's number
    note: str = ""  # where a carved piece came from, said in each finding's evidence

    @property
    def label(self) -> str:
        return self.name or self.partition.label


@dataclass
class DiskImage(Image):
    """A whole disk: its own entries are those of its root volume; ``volumes`` holds them all."""

    container: str = "raw"
    layout: DiskLayout | None = None
    volumes: list[Volume] = field(default_factory=list)  # each scanned on its own
    mounted: list[Volume] = field(default_factory=list)  # moved into the root tree at their mount point
    encrypted: list[tuple[Partition, dict[str, object]]] = field(default_factory=list)  # LUKS/BitLocker headers

    def close(self) -> None:
        for volume in [*self.volumes, *self.mounted]:
            volume.image.close()
        self.volumes = []
        self.mounted = []
        super().close()

    def volume_of(self, volume: Volume, path: str) -> Volume:
        """The partition that holds ``path`` of ``volume`` (a mounted one, for the root's paths)."""
        if volume.is_root:
            for mounted in self.mounted:
                if path == mounted.mount_point or path.startswith(mounted.mount_point + "/"):
                    return mounted
        return volume


def open_disk(source: Path, limits: Limits, compression: str | None = None) -> DiskImage:
    """Open a whole-disk image: convert it to raw if needed, read its table, open every volume.

    ``compression`` names the outer compression of a raw disk (``dd | gzip``), as
    ``image.detect_format`` found it.
    """
    container = "raw" if compression else sniff_container(source)
    if container is None:
        raise ImageError("not a whole-disk image", Location(file=str(source)))
    tmp = tempfile.TemporaryDirectory(prefix="cranewatch-disk-")
    try:
        if compression:
            raw = _decompress_raw(source, compression, Path(tmp.name), limits)
            return _open_raw(source, f"raw.{compression}", raw, tmp, limits)
        raw = _as_raw(source, container, Path(tmp.name), limits)
        return _open_raw(source, container, raw, tmp, limits)
    except BaseException:
        tmp.cleanup()
        raise


def _open_raw(source: Path, container: str, raw: Path, tmp: tempfile.TemporaryDirectory[str], limits: Limits) -> DiskImage:
    disk_size = raw.stat().st_size
    with open(raw, "rb") as fh:
        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        layout = read_layout(read_at, disk_size)
        contents = [(part, probe_content(read_at, part)) for part in layout.partitions]
        names = {part.index: fstab_names(read_at, part, content) for part, content in contents}
        encrypted = [(part, encrypted_header(read_at, part, content)) for part, content in contents
                     if content in _ENCRYPTED]
    where = f"{source}" + (f" (converted from {container})" if container != "raw" else "")
    warnings = [f"disk {where}: {p}" for p in layout.problems]
    volumes: list[Volume] = []
    # why each partition that is not a volume was left out; an encrypted one is a coverage gap
    skipped: list[str] = [f"{part.describe()}: not examined: encrypted ({_header_text(header)})"
                          for part, header in encrypted]
    left = limits  # one budget for the whole disk, not one per partition
    try:
        for raw_of, part, content, name, fstab in _units(raw, contents, names, Path(tmp.name), skipped):
            if content in _ENCRYPTED:
                continue  # said above, and a finding (``encrypted_findings``)
            if content in _SKIPPED:
                skipped.append(f"{part.describe()}: {_SKIPPED[content]}")
                continue
            if left.max_total_bytes <= 0 or left.max_files <= 0:
                skipped.append(f"{part.describe()}: not read, the partitions before it used up the size or file-count "
                               "limit (--max-bytes, --max-files)")
                continue
            try:
                image = _open_partition(raw_of, part, content, Path(tmp.name), left)
            except ImageError as exc:
                shared = " (the limits are one budget for all partitions of the disk)" if left != limits else ""
                skipped.append(f"{part.describe()}: {content} filesystem not readable: {exc.message}{shared}")
                continue
            volumes.append(Volume(part, content, image, names=fstab, name=name))
            warnings.extend(f"{name or part.label}: {w}" for w in image.warnings)
            left = replace(left, max_total_bytes=left.max_total_bytes - sum(e.size for e in image.files()),
                           max_files=left.max_files - len(image.entries))
    except BaseException:
        for volume in volumes:
            volume.image.close()
        raise
    warnings.extend(skipped)
    if not volumes:
        found = "; ".join(skipped) or "no partitions"
        problems = "; ".join(layout.problems)
        raise ImageError(
            f"the {layout.scheme.upper() if layout.scheme != 'none' else 'unpartitioned'} disk holds no "
            f"partition with a filesystem cranewatch reads ({found})" + (f"; {problems}" if problems else ""),
            Location(file=str(source)),
        )
    roots = [v for v in volumes if _is_root(v.image)] or [max(volumes, key=lambda v: len(v.image.entries))]
    for volume in roots:
        volume.is_root = True
    primary = roots[0]
    mounted = _mount_by_fstab(primary, [v for v in volumes if not v.is_root], warnings)
    volumes = [v for v in volumes if v not in mounted]

    def role(v: Volume) -> str:
        return " (root)" if v.is_root else f" (mounted at /{v.mount_point})" if v.mount_point else ""

    summary = ", ".join(f"{v.label} {v.content}{role(v)} at byte {v.partition.offset}"
                        for v in sorted([*volumes, *mounted], key=lambda v: v.partition.index))
    warnings.insert(0, f"disk ({layout.scheme.upper()}, {container}): scanned {summary}")
    return DiskImage(
        source, "disk", primary.image.root, primary.image.entries, warnings, tmp,
        container=container, layout=layout, volumes=volumes, mounted=mounted, encrypted=encrypted,
    )


def _units(raw: Path, contents: list[tuple[Partition, str]], names: dict[int, frozenset[str]], scratch: Path,
           skipped: list[str]) -> list[tuple[Path, Partition, str, str, frozenset[str]]]:
    """What to open: (disk or assembled file, partition, content, volume name, fstab names);
    an LVM physical volume becomes its logical volumes (``forensics/lvm.py``)."""
    units = [(raw, part, content, "", names[part.index]) for part, content in contents if content != "lvm"]
    physical = [part for part, content in contents if content == "lvm"]
    if physical:
        from cranewatch.forensics.lvm import logical_volumes_of

        found, notes = logical_volumes_of(raw, physical, scratch)
        units.extend(found)
        skipped.extend(notes)
    return units


def _mount_by_fstab(root: Volume, others: list[Volume], warnings: list[str]) -> list[Volume]:
    """Place the partitions the root's ``etc/fstab`` mounts (``/home``, ``/var``, ``/boot/efi``)
    into the root tree, so that path-aware checks (``var/spool/cron``, ``home/*/.bashrc``) see
    them where the running system does. Nothing is mounted: extracted files are moved."""
    fstab = root.image.read_text("etc/fstab")
    if fstab is None:
        return []
    wanted: list[tuple[str, int, Volume]] = []
    for number, line in enumerate(fstab.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not fields[1].startswith("/"):
            continue
        target = "/".join(p for p in fields[1].split("/") if p not in ("", "."))
        volume = _named(fields[0], others)
        if target and ".." not in target.split("/") and volume is not None and all(v is not volume for _, _, v in wanted):
            wanted.append((target, number, volume))
    mounted: list[Volume] = []
    for target, number, volume in sorted(wanted, key=lambda w: w[0].count("/")):  # /var before /var/log
        problem = _move_into(root.image, volume.image, target)
        if problem:
            warnings.append(f"{volume.label}: scanned on its own, not at /{target} (etc/fstab line {number}): {problem}")
            continue
        volume.mount_point = target
        mounted.append(volume)
    return mounted


def _named(spec: str, volumes: list[Volume]) -> Volume | None:
    key, sep, value = spec.partition("=")
    wanted = f"{key.lower()}={value.strip(chr(34)).lower()}" if sep else ""
    device = _DEVICE_NUMBER.match(spec)
    for volume in volumes:
        if wanted in volume.names or spec.lower() in volume.names or (device and int(device[1]) == volume.partition.index):
            return volume
    return None


def _move_into(root: Image, part: Image, target: str) -> str | None:
    """Move ``part``'s extracted tree under ``root`` at ``target``; the problem, if it cannot be."""
    parts = target.split("/")
    for i in range(1, len(parts) + 1):
        entry = root.entries.get("/".join(parts[: i]))
        if entry is not None and entry.type != "dir":
            return f"/{'/'.join(parts[: i])} is a {entry.type} in the root filesystem"
    place = root.root / target
    if place.exists() and any(place.iterdir()):
        return f"the root filesystem has files under /{target} (hidden below the mount on the running system)"
    try:
        place.mkdir(parents=True, exist_ok=True, mode=0o700)
        for item in sorted(os.listdir(part.root)):
            os.rename(part.root / item, place / item)
    except OSError as exc:
        return f"cannot move its files: {exc.strerror}"
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[: i])
        root.entries.setdefault(sub, Entry(sub, "dir", 0o755, 0, 0, 0))
    for path, entry in part.entries.items():
        root.entries[f"{target}/{path}"] = replace(entry, path=f"{target}/{path}")
    part.entries.clear()
    return None


def _is_root(image: Image) -> bool:
    from cranewatch.forensics.windows import is_windows

    if is_windows(image):
        return True
    kinds = {p: image.entries[p].type for p in ("etc", "usr") if p in image.entries}
    return kinds.get("etc") == "dir" and kinds.get("usr") in ("dir", "symlink")


def _open_partition(raw: Path, part: Partition, content: str, scratch: Path, limits: Limits) -> Image:
    if content == "ext" and "?" not in str(raw):
        return _open_ext_in_place(raw, part, limits)
    if content == "ntfs":
        from cranewatch.forensics.ntfs import open_ntfs

        return open_ntfs(raw, limits, part.offset, part.size)  # read in place, no copy
    if content == "xfs":
        from cranewatch.forensics.xfs import open_xfs

        return open_xfs(raw, part.offset, part.size, scratch / f"{part.label}-xfs", limits)  # read in place
    copy = scratch / f"{part.label}.img"
    extents = _data_extents(raw, part.offset, part.size)
    data = sum(length for _, length in extents)
    where = Location(file=str(raw), offset=part.offset)
    free = shutil.disk_usage(scratch).free
    if data > free:
        raise EnvironmentProblem(f"copying {part.label} needs {data} bytes but {scratch.parent} has only {free} free "
                                 "(set TMPDIR to a disk with room)", where)
    _copy_extents(raw, copy, part.offset, part.size, extents)
    try:
        if content == "fat":
            return _open_fat(copy, scratch / f"{part.label}-fat", limits)
        if content == "btrfs":
            return _open_btrfs(copy, scratch / f"{part.label}-btrfs", limits)
        return open_image(copy, limits)  # ext and squashfs: detected again by their magic
    finally:
        copy.unlink(missing_ok=True)  # the extracted files are what the scan reads


def _open_ext_in_place(raw: Path, part: Partition, limits: Limits) -> Image:
    """An ext partition read by debugfs at its offset in the disk (``disk?offset=N``): no copy,
    so a 100 GB partition of a ``dd`` image costs only the files extracted from it."""
    from cranewatch.forensics.image import _open_ext, _Unpacker

    unpacker = _Unpacker(raw, limits, part.size)
    try:
        return _open_ext(raw, unpacker, limits, part.offset, part.size)
    except BaseException:
        unpacker.tmp.cleanup()
        raise


def _data_extents(path: Path, offset: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data (not holes) of ``path`` between ``offset`` and ``offset + size``."""
    end = min(offset + size, path.stat().st_size)
    extents: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = offset
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole up to the end of the file
                return [(pos, end - pos)]  # no hole support: everything is data
            if pos >= end:
                break
            extents.append((pos, min(hole, end) - pos))
            pos = hole
    finally:
        os.close(fd)
    return extents


def _copy_extents(src: Path, dest: Path, offset: int, size: int, extents: list[tuple[int, int]]) -> None:
    """Copy the data extents of a partition into ``dest`` (sparse, ``size`` bytes long)."""
    fd_in = os.open(src, os.O_RDONLY)
    try:
        fd_out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for start, length in extents:
                _copy_range(fd_in, fd_out, start, length, start - offset)
            os.ftruncate(fd_out, size)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot copy a partition into {dest.parent}: {exc.strerror} (set TMPDIR to a disk with room)",
                Location(file=str(src), offset=offset),
            ) from None
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _copy_range(fd_in: int, fd_out: int, start: int, length: int, out_at: int) -> None:
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(fd_in, fd_out, min(length - done, 1 << 30), start + done, out_at + done)
            if n == 0:
                return  # the disk file ends early
            done += n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while done < length:  # file systems without copy_file_range between them
        block = os.pread(fd_in, min(length - done, 1 << 20), start + done)
        if not block:
            return
        os.pwrite(fd_out, block, out_at + done)
        done += len(block)


def _open_fat(part: Path, dest: Path, limits: Limits) -> Image:
    """A FAT/EFI system partition extracted with mtools (FAT has no links or devices)."""
    mdir, mcopy = _tool("mdir", "mtools"), _tool("mcopy", "mtools")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    where = Location(file=str(part))
    listing = subprocess.run([mdir, "-/", "-a", "-i", str(part), "::/"], capture_output=True, text=True,
                             errors="replace", env=env, check=False)
    totals = _FAT_TOTAL.findall(listing.stdout)  # the last one sums every directory
    if not totals:
        if 'File "::/" not found' in listing.stderr:  # how mdir says the root directory is empty
            return open_image(_empty_dir(dest), limits)
        raise ImageError(f"mdir cannot read the FAT filesystem: {(listing.stderr or listing.stdout).strip()[-300:]}", where)
    files, size = (int(n.replace(" ", "")) for n in totals[-1])
    # Cross-linked cluster chains let many directory entries share the same clusters: the sizes
    # the directories declare are checked before anything is written.
    if files > limits.max_files:
        raise ImageError(f"{files} files on the FAT partition: beyond the file-count limit", where)
    if size > limits.max_total_bytes or size > 4 * part.stat().st_size:
        raise ImageError(f"the FAT directories declare {size} bytes in a {part.stat().st_size}-byte partition: beyond "
                         "the size limit or cross-linked clusters (a bomb), refused", where)
    _empty_dir(dest)
    if files:
        run = subprocess.run([mcopy, "-s", "-n", "-p", "-i", str(part), "::/*", str(dest)], capture_output=True, text=True,
                             errors="replace", env=env, check=False)
        if run.returncode != 0:
            raise ImageError(f"mcopy cannot extract the FAT filesystem: {run.stderr.strip()[-300:]}", Location(file=str(part)))
    return open_image(dest, limits)


def _open_btrfs(part: Path, dest: Path, limits: Limits) -> Image:
    """A btrfs partition extracted by btrfs-progs' ``btrfs restore`` (reads an unmounted image
    file, unprivileged, no kernel driver). Every inode is listed first from ``btrfs inspect-internal
    dump-tree`` so the count and size limits apply before anything is written. Symbolic links are
    not restored (no ``-S``): a crafted tree naming a link and a directory alike could make later
    files follow the link out of the private directory; their number is said in a warning."""
    btrfs = _tool("btrfs", "btrfs-progs")
    where = Location(file=str(part))
    listing = dest.parent / f"{dest.name}.tree"
    with open(listing, "w+b") as out:
        dump = subprocess.run([btrfs, "inspect-internal", "dump-tree", str(part)], stdout=out,
                              stderr=subprocess.PIPE, preexec_fn=_header_limits, check=False)
        if dump.returncode != 0:
            raise ImageError(f"btrfs cannot read the tree of the filesystem: "
                             f"{dump.stderr.decode('utf-8', 'replace').strip()[-300:] or f'exit {dump.returncode}'}", where)
        out.seek(0)
        inodes = links = size = 0
        declared = 0  # the size line of an INODE_ITEM comes just before its mode line
        for line in out:
            sized = _BTRFS_SIZE.match(line)
            if sized is not None:
                declared = int(sized.group(1))
                continue
            moded = _BTRFS_MODE.match(line)
            if moded is None:
                continue
            inodes += 1
            kind = int(moded.group(1), 8) & 0o170000
            if kind == 0o100000:
                size += declared
            elif kind == 0o120000:
                links += 1
    listing.unlink()
    if inodes > limits.max_files:
        raise ImageError(f"{inodes} inodes in the btrfs filesystem: beyond the file-count limit", where)
    if size > limits.max_total_bytes:
        raise ImageError(f"the btrfs inodes declare {size} bytes of files: beyond the size limit, refused", where)
    _empty_dir(dest)

    def restore_limits() -> None:
        _convert_limits()
        cap = limits.max_member_bytes + 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    run = subprocess.run([btrfs, "restore", "-m", "-x", str(part), str(dest)], capture_output=True, text=True,
                         errors="replace", preexec_fn=restore_limits, check=False)
    if run.returncode != 0:
        raise ImageError(f"btrfs restore cannot extract the filesystem: {(run.stderr or run.stdout).strip()[-300:]}", where)
    image = open_image(dest, limits)
    if links:
        image.warnings.append(f"{links} symbolic link(s) of the btrfs filesystem not restored (btrfs restore without -S)")
    return image


_BTRFS_SIZE = re.compile(rb"^\s+generation \d+ transid \d+ size (\d+) nbytes \d+")
_BTRFS_MODE = re.compile(rb"^\s+block group \d+ mode ([0-7]+) ")
_FAT_TOTAL = re.compile(r"^\s*(\d[\d ]*?) files?\s+(\d[\d ]*?) bytes\s*$", re.MULTILINE)


def _empty_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


# --- conversion to raw ----------------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise EnvironmentProblem(f"{name} is needed to read this disk image: install the Debian package {package} "
                                 "(scripts/install-deps.sh)")
    return found


def _header_limits() -> None:
    """Run in the child reading an image's header: the memory and CPU caps OpenStack puts on
    ``qemu-img info`` after CVE-2015-5162 (a crafted header made it allocate without bound)."""
    resource.setrlimit(resource.RLIMIT_AS, (_HEADER_MEMORY, _HEADER_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (_HEADER_CPU_SECONDS, _HEADER_CPU_SECONDS))


def _convert_limits() -> None:
    """Run in the converting child: CPU only (qemu-img's worker threads need address space)."""
    resource.setrlimit(resource.RLIMIT_CPU, (_CONVERT_CPU_SECONDS, _CONVERT_CPU_SECONDS))


def _as_raw(source: Path, container: str, scratch: Path, limits: Limits) -> Path:
    if container == "raw":
        return source
    if container == "e01":
        return _e01_to_raw(source, scratch, limits)
    return _qemu_to_raw(source, container, scratch, limits)


def _check_room(source: Path, data_bytes: int, scratch: Path, limits: Limits) -> None:
    """Refuse before converting: more data than the size limit, or than the free space for it."""
    where = Location(file=str(source))
    if data_bytes > limits.max_total_bytes:
        raise ImageError(f"the disk holds {data_bytes} bytes of data, beyond the {limits.max_total_bytes}-byte size "
                         "limit (raise it with --max-bytes if the image is genuine)", where)
    free = shutil.disk_usage(scratch).free
    if data_bytes > free:
        raise EnvironmentProblem(f"converting the disk needs {data_bytes} bytes but {scratch.parent} has only "
                                 f"{free} free (set TMPDIR to a disk with room)", where)


def _qemu_to_raw(source: Path, container: str, scratch: Path, limits: Limits) -> Path:
    qemu_img = _tool("qemu-img", "qemu-utils")
    fmt = _QEMU_FORMATS[container]
    where = Location(file=str(source))
    info_run = subprocess.run([qemu_img, "info", "--output=json", "-f", fmt, str(source)], capture_output=True,
                              text=True, errors="replace", check=False, preexec_fn=_header_limits)
    if info_run.returncode != 0:
        raise ImageError(f"qemu-img cannot read the {container} image: {info_run.stderr.strip()[-300:]}", where)
    try:
        info = json.loads(info_run.stdout)
    except ValueError:
        raise ImageError(f"qemu-img info gave no JSON for the {container} image", where) from None
    # A backing file, an external data file or a VMDK extent elsewhere would make qemu-img read
    # a file of the analysis station into the "disk": refused, only self-contained images.
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageError(f"the {container} image names a backing file ({info.get('backing-filename')!r}): only "
                         "self-contained images are read (never a file of this machine)", where)
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ImageError(f"the qcow2 image names an external data file ({specific['data-file']!r}): refused", where)
    extents = specific.get("extents") or []
    if any(Path(e.get("filename", "")).resolve() != source.resolve() for e in extents):
        raise ImageError("the VMDK names extent files beside itself: only single-file (monolithic) VMDKs are read", where)
    _check_room(source, _allocated_bytes(qemu_img, fmt, source, int(info.get("virtual-size") or 0)), scratch, limits)
    out = scratch / "disk.raw"
    run = subprocess.run([qemu_img, "convert", "-q", "-f", fmt, "-O", "raw", str(source), str(out)],
                         capture_output=True, text=True, errors="replace", check=False, preexec_fn=_convert_limits)
    if run.returncode != 0:
        raise ImageError(f"qemu-img cannot convert the {container} image: {run.stderr.strip()[-300:]}", where)
    return out


def _decompress_raw(source: Path, compression: str, scratch: Path, limits: Limits) -> Path:
    """A compressed raw disk, decompressed sparse: runs of zeros become holes and cost nothing.

    The size limit and the free space apply to the bytes written, checked as they come.
    """
    from cranewatch.forensics.image import _open_decompressed

    out = scratch / "disk.raw"
    block = 1 << 20
    written = 0
    where = Location(file=str(source))
    zero = bytes(block)
    try:
        with _open_decompressed(source, compression) as stream, open(out, "wb") as dest:
            offset = 0
            while chunk := stream.read(block):
                if chunk != zero[: len(chunk)]:
                    written += len(chunk)
                    if written > limits.max_total_bytes:
                        raise ImageError(f"the disk holds more than {limits.max_total_bytes} bytes of data: beyond the "
                                         "size limit (raise it with --max-bytes if the image is genuine)", where)
                    dest.seek(offset)
                    dest.write(chunk)
                offset += len(chunk)
            dest.truncate(offset)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise EnvironmentProblem(f"cannot decompress the disk into {scratch.parent}: {exc.strerror} (set TMPDIR to "
                                     "a disk with room)", where) from None
        raise ImageError(f"corrupt {compression} stream: {exc}", where) from None
    except (EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise ImageError(f"corrupt or truncated {compression} stream: {exc}", where) from None
    return out


def _allocated_bytes(qemu_img: str, fmt: str, source: Path, virtual: int) -> int:
    """Bytes of data ``qemu-img convert`` will write (it skips zero clusters: the raw copy is sparse).

    A 64 GB VM disk holding 3 GB is 3 GB to convert; the virtual size is the answer when the
    map cannot be read.
    """
    run = subprocess.run([qemu_img, "map", "--output=json", "-f", fmt, str(source)], capture_output=True, text=True,
                         errors="replace", check=False, preexec_fn=_header_limits)
    try:
        extents = json.loads(run.stdout) if run.returncode == 0 else None
    except ValueError:
        extents = None
    if not isinstance(extents, list):
        return virtual
    return sum(int(e.get("length", 0)) for e in extents if isinstance(e, dict) and e.get("data"))


def _e01_to_raw(source: Path, scratch: Path, limits: Limits) -> Path:
    if shutil.which("ewfexport") is None:
        raise EnvironmentProblem("E01 (EnCase) images need ewfexport: install the Debian package ewf-tools "
                                 "(scripts/install-deps.sh)", Location(file=str(source)))
    ewfinfo = _tool("ewfinfo", "ewf-tools")
    ewfexport = _tool("ewfexport", "ewf-tools")
    where = Location(file=str(source))
    info = subprocess.run([ewfinfo, str(source)], capture_output=True, text=True, errors="replace", check=False,
                          preexec_fn=_header_limits)
    media = [line.split(":", 1)[1] for line in info.stdout.splitlines() if line.strip().startswith("Media size")]
    if info.returncode != 0 or not media:
        raise ImageError(f"ewfinfo cannot read the E01 image: {(info.stderr or info.stdout).strip()[-300:]}", where)
    # "Media size:  16 MiB (16777216 bytes)"
    digits = media[0].rpartition("(")[2].split()[0]
    _check_room(source, int(digits) if digits.isdigit() else 0, scratch, limits)
    target = scratch / "disk"
    run = subprocess.run([ewfexport, "-q", "-u", "-f", "raw", "-t", str(target), str(source)], capture_output=True,
                         text=True, errors="replace", check=False, preexec_fn=_convert_limits, stdin=subprocess.DEVNULL)
    out = scratch / "disk.raw"
    if run.returncode != 0 or not out.is_file():
        raise ImageError(f"ewfexport cannot export the E01 image: {(run.stderr or run.stdout).strip()[-300:]}", where)
    return out


# --- naming the partition in findings -------------------------------------------------------------------


def labelled_path(volume: Volume, path: str) -> str:
    """``p2:/etc/rc.local``: the partition, then the path inside it."""
    return f"{volume.label}:/{path}"


def label_finding(finding: Finding, disk: DiskImage, volume: Volume, *, keep_id: bool) -> Finding:
    """``finding`` with its evidence paths naming the partition that holds each file.

    Paths stay as the running system sees them (``p3:/home/cms/.bashrc`` for a ``/home``
    partition mounted by the root's fstab); index, offset and content go in the values. The
    root volume's findings keep their ids, so a disk and a directory scan of the same system
    share finding history; the other volumes' ids include the partition (two root filesystems
    of an A/B update scheme give two findings, not one).
    """
    evidence = []
    for e in finding.evidence:
        if e.path is None:
            evidence.append(e)
            continue
        holder = disk.volume_of(volume, e.path)
        where = {"partition": holder.label, "partition_offset": holder.partition.offset, "filesystem": holder.content}
        note = f"{e.note}; {holder.note}" if e.note and holder.note else e.note or holder.note or None
        evidence.append(replace(e, path=labelled_path(holder, e.path), values={**e.values, **where}, note=note))
    new_id = finding.id if keep_id else finding_id(finding.rule, finding.crane, volume.label, finding.id)
    return replace(finding, id=new_id, evidence=tuple(evidence))
