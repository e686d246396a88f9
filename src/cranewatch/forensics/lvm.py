"""LVM2 physical volumes inside a disk: the logical volumes found from the on-disk metadata.

Debian installs with "guided - use entire disk and set up LVM" by default for servers, and a
crane PC's root is often ``/dev/mapper/vg-root``. The lvm2 tools need the disk as a block
device (a loop device, hence root); here the physical volume is read in Python, never
activated: the label (``LABELONE`` / ``LVM2 001`` in one of the first four sectors, its CRC),
the PV header (UUID, data and metadata areas), the metadata area header (its CRC and magic)
and the current metadata text it points at (circular buffer, CRC checked), parsed as LVM's
configuration syntax. Linear segments (``striped`` with one stripe, what ``lvcreate`` makes by
default) on physical volumes of this disk are mapped to byte ranges; a logical volume in one
range is read in place, one in several is assembled (sparse) in the private directory.
Striped, mirrored, RAID, thin, cache and snapshot volumes are reported and skipped.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from cranewatch.forensics.disk import Partition

SECTOR = 512
_LABEL_ID = b"LABELONE"
_LABEL_TYPE = b"LVM2 001"
_MDA_MAGIC = b" LVM2 x[5A%r0N*>"
_MDA_HEADER = 512
_MAX_METADATA = 8 << 20  # the metadata text; lvm's default area is 1 MiB
_MAX_SEGMENTS = 4096

ReadAt = Callable[[int, int], bytes]


def lvm_crc(data: bytes) -> int:
    """LVM's checksum: CRC-32 (zlib's polynomial) from the initial value 0xf597a6cf, no final xor."""
    return zlib.crc32(data, 0xF597A6CF ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


class LvmError(ValueError):
    """The physical volume or its metadata cannot be read (the message says where)."""


# --- LVM's configuration syntax ------------------------------------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[{}\[\]=,]|[^\s{}\[\]=,"#]+')
Value = str | int | list["Value"] | dict[str, "Value"]


def parse_metadata(text: str) -> dict[str, Value]:
    """``name = value`` and ``name { ... }`` sections; values are strings, integers or lists."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    position = 0

    def value(depth: int = 0) -> Value:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "[":
            if depth > 16:
                raise LvmError("metadata lists nested too deep")
            items: list[Value] = []
            while tokens[position] != "]":
                if tokens[position] != ",":
                    items.append(value(depth + 1))
                else:
                    position += 1
            position += 1
            return items
        if token.startswith('"'):
            return re.sub(r"\\(.)", r"\1", token[1:-1])
        try:
            return int(token)
        except ValueError:
            return token

    def section(depth: int) -> dict[str, Value]:
        nonlocal position
        out: dict[str, Value] = {}
        while position < len(tokens) and tokens[position] != "}":
            name = tokens[position]
            position += 1
            if tokens[position] == "{":
                position += 1
                if depth > 16:
                    raise LvmError("metadata nested too deep")
                out[name] = section(depth + 1)
                position += 1
            elif tokens[position] == "=":
                position += 1
                out[name] = value()
            else:
                raise LvmError(f"unexpected {tokens[position]!r} after {name!r} in the metadata")
        return out

    try:
        return section(0)
    except IndexError:
        raise LvmError("the metadata text ends inside a section or list") from None


# --- the physical volume ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhysicalVolume:
    uuid: str  # 32 characters, as in the metadata without its dashes
    offset: int  # of the PV in the disk, bytes
    metadata: dict[str, Value]  # the volume group's section
    vg_name: str


def read_pv(read_at: ReadAt, offset: int) -> PhysicalVolume:
    """The physical volume at ``offset`` of the disk and its current metadata."""
    for sector in range(4):
        label = read_at(offset + sector * SECTOR, SECTOR)
        if label[:8] == _LABEL_ID and label[24:32] == _LABEL_TYPE:
            break
    else:
        raise LvmError(f"no LVM2 label in the first four sectors at byte {offset}")
    where = offset + sector * SECTOR
    stored_crc, header_at = struct.unpack_from("<II", label, 16)
    if lvm_crc(label[20:SECTOR]) != stored_crc:
        raise LvmError(f"LVM2 label at byte {where}: CRC mismatch")
    if not 32 <= header_at <= SECTOR - 48:
        raise LvmError(f"LVM2 label at byte {where}: PV header offset {header_at} outside the label")
    uuid = label[header_at : header_at + 32].decode("ascii", "replace")
    at = header_at + 40
    areas: list[list[tuple[int, int]]] = [[], []]  # data areas, then metadata areas
    for kind in (0, 1):
        while at + 16 <= SECTOR:
            area_offset, area_size = struct.unpack_from("<QQ", label, at)
            at += 16
            if area_offset == 0:
                break
            areas[kind].append((area_offset, area_size))
    if not areas[1]:
        raise LvmError(f"PV {uuid} at byte {offset} has no metadata area (its metadata is on another PV)")
    problems = []
    for mda_offset, mda_size in areas[1]:
        try:
            text = _metadata_text(read_at, offset + mda_offset, mda_size)
            parsed = parse_metadata(text)
        except LvmError as exc:
            problems.append(str(exc))
            continue
        groups = [(name, body) for name, body in parsed.items() if isinstance(body, dict)]
        if groups:
            return PhysicalVolume(uuid, offset, groups[0][1], groups[0][0])
        problems.append(f"metadata area at byte {offset + mda_offset} names no volume group")
    raise LvmError("; ".join(problems))


def _metadata_text(read_at: ReadAt, start: int, size: int) -> str:
    header = read_at(start, _MDA_HEADER)
    if len(header) < _MDA_HEADER or header[4:20] != _MDA_MAGIC:
        raise LvmError(f"no LVM2 metadata area header at byte {start}")
    if lvm_crc(header[4:_MDA_HEADER]) != struct.unpack_from("<I", header, 0)[0]:
        raise LvmError(f"metadata area header at byte {start}: CRC mismatch")
    area_size = struct.unpack_from("<Q", header, 32)[0] or size
    text_offset, text_size, text_crc, _flags = struct.unpack_from("<QQII", header, 40)
    if text_offset == 0 or text_size == 0:
        raise LvmError(f"metadata area at byte {start} holds no metadata")
    if text_size > _MAX_METADATA or not _MDA_HEADER <= text_offset < area_size:
        raise LvmError(f"metadata area at byte {start}: impossible text location ({text_size} bytes at {text_offset})")
    first = min(text_size, area_size - text_offset)
    text = read_at(start + text_offset, first)
    if first < text_size:  # the circular buffer wraps after its header
        text += read_at(start + _MDA_HEADER, text_size - first)
    if lvm_crc(text) != text_crc:
        raise LvmError(f"metadata text at byte {start + text_offset}: CRC mismatch")
    return text.rstrip(b"\x00").decode("utf-8", "replace")


# --- logical volumes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogicalVolume:
    """One logical volume: its name and the byte ranges of the disk it is made of, in order."""

    vg: str
    name: str
    extents: tuple[tuple[int, int], ...]  # (offset in the disk, length)

    @property
    def size(self) -> int:
        return sum(length for _, length in self.extents)

    @property
    def label(self) -> str:
        return f"{self.vg}/{self.name}"


def logical_volumes(pvs: list[PhysicalVolume]) -> tuple[list[LogicalVolume], list[str]]:
    """The linear logical volumes whose extents all lie on ``pvs`` (the PVs of one disk)."""
    found: list[LogicalVolume] = []
    notes: list[str] = []
    by_group: dict[str, list[PhysicalVolume]] = {}
    for pv in pvs:
        by_group.setdefault(pv.vg_name, []).append(pv)
    for vg_name, members in by_group.items():
        vg = members[0].metadata
        extent = _int(vg, "extent_size") * SECTOR
        if extent <= 0:
            notes.append(f"volume group {vg_name}: no extent size in its metadata")
            continue
        on_disk = {pv.uuid: pv for pv in members}
        declared = vg.get("physical_volumes")
        places: dict[str, tuple[int, int]] = {}  # metadata's pv name -> (byte offset of extent 0, pe_count)
        for key, body in (declared.items() if isinstance(declared, dict) else []):
            if isinstance(body, dict):
                member = on_disk.get(str(body.get("id", "")).replace("-", ""))
                if member is not None:
                    places[key] = (member.offset + _int(body, "pe_start") * SECTOR, _int(body, "pe_count"))
        volumes = vg.get("logical_volumes")
        for name, lv in (volumes.items() if isinstance(volumes, dict) else []):
            if not isinstance(lv, dict):
                continue
            extents, why = _segments(lv, places, extent)
            if why:
                notes.append(f"logical volume {vg_name}/{name}: {why}: skipped")
            else:
                found.append(LogicalVolume(vg_name, name, tuple(extents)))
    return found, notes


def _segments(lv: dict[str, Value], places: dict[str, tuple[int, int]], extent: int) -> tuple[list[tuple[int, int]], str]:
    segments = sorted((body for key, body in lv.items() if key.startswith("segment") and isinstance(body, dict)),
                      key=lambda s: _int(s, "start_extent"))
    if not segments or len(segments) > _MAX_SEGMENTS:
        return [], f"{len(segments)} segments"
    extents: list[tuple[int, int]] = []
    next_extent = 0
    for segment in segments:
        kind, stripes = segment.get("type"), segment.get("stripes")
        if kind != "striped" or _int(segment, "stripe_count") != 1 or not isinstance(stripes, list) or len(stripes) != 2:
            return [], f"a {kind} segment ({_int(segment, 'stripe_count')} stripes): only linear volumes are read"
        if _int(segment, "start_extent") != next_extent:
            return [], f"segments leave a hole at extent {next_extent}"
        pv_name, first_pe = stripes
        count = _int(segment, "extent_count")
        place = places.get(str(pv_name))
        if place is None:
            return [], f"it lies on {pv_name}, a physical volume that is not on this disk"
        if not isinstance(first_pe, int) or first_pe < 0 or count <= 0 or first_pe + count > place[1]:
            return [], f"a segment outside {pv_name} (extents {first_pe}+{count} of {place[1]})"
        start = place[0] + first_pe * extent
        if extents and extents[-1][0] + extents[-1][1] == start:
            extents[-1] = (extents[-1][0], extents[-1][1] + count * extent)
        else:
            extents.append((start, count * extent))
        next_extent += count
    return extents, ""


def _int(section: dict[str, Value], key: str) -> int:
    value = section.get(key)
    return value if isinstance(value, int) else 0


def assemble(raw: Path, volume: LogicalVolume, dest: Path) -> None:
    """Copy a logical volume made of several ranges into ``dest`` (sparse: holes stay holes)."""
    from cranewatch.forensics.disk import _copy_range, _data_extents

    fd_in = os.open(raw, os.O_RDONLY)
    try:
        fd_out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            at = 0
            for offset, length in volume.extents:
                for start, size in _data_extents(raw, offset, length):
                    _copy_range(fd_in, fd_out, start, size, at + start - offset)
                at += length
            os.ftruncate(fd_out, at)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def logical_volumes_of(
    raw: Path, physical: list[Partition], scratch: Path,
) -> tuple[list[tuple[Path, Partition, str, str, frozenset[str]]], list[str]]:
    """The readable logical volumes of the disk's LVM partitions, as units for ``disk._open_raw``:
    (disk or assembled file, pseudo-partition, content, ``vg/lv``, names fstab may use)."""
    from cranewatch.forensics.disk import Partition, fstab_names, probe_content

    notes: list[str] = []
    pvs: list[PhysicalVolume] = []
    units: list[tuple[Path, Partition, str, str, frozenset[str]]] = []
    with open(raw, "rb") as fh:
        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        for part in physical:
            try:
                pvs.append(read_pv(read_at, part.offset))
            except LvmError as exc:
                notes.append(f"{part.describe()}: LVM physical volume not readable: {exc}")
        volumes, problems = logical_volumes(pvs)
        notes.extend(problems)
        for number, volume in enumerate(volumes, 1):
            holder = next(p for p in physical if p.offset <= volume.extents[0][0] < p.offset + p.size)
            index = holder.index * 100 + number  # a private number: scratch names stay apart
            if len(volume.extents) == 1:
                source, offset = raw, volume.extents[0][0]
            else:
                source, offset = scratch / f"lv{index}.img", 0
                assemble(raw, volume, source)
            pseudo = Partition(index, offset, volume.size, "lvm", f"LV {volume.label}", volume.label)
            if source is raw:
                content = probe_content(read_at, pseudo)
                names = fstab_names(read_at, pseudo, content)
            else:
                with open(source, "rb") as lv:
                    def read_lv(at: int, length: int, lv: BinaryIO = lv) -> bytes:
                        lv.seek(at)
                        return lv.read(length)

                    content = probe_content(read_lv, pseudo)
                    names = fstab_names(read_lv, pseudo, content)
            mapper = f"/dev/mapper/{volume.vg.replace('-', '--')}-{volume.name.replace('-', '--')}"
            names = names | {mapper.lower(), f"/dev/{volume.label}".lower()}
            units.append((source, pseudo, content, volume.label, names))
    return units, notes
