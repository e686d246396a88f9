"""Write a WMI (CIM) repository for the tests, field by field from the published format.

No WMI repository whose licence lets us ship it was found (flare-wmi's test repositories hold
only the MAPPING files in the stored copy; dissect's samples are AGPL), and none can be made
without Windows. So this lays out, from Mandiant FLARE's description of the format (the
"WMI offense, defense and forensics" white paper and python-cim's structures, Apache-2.0):

- ``MAPPING1.MAP``: header {0xABCD, version, first id, second id, physical page count, entry
  count}; 24-byte entries {physical page (0x3FFFFFFF unmapped), CRC, free, used, first id,
  second id}; a free-page list {count, pages}; 0xDCBA. The objects mapping, then the index one.
  Windows XP: header {0xABCD, version, physical page count, entry count}, 4-byte entries.
- ``OBJECTS.DATA``: 0x2000-byte pages; a table of contents of {record id, offset, size, CRC}
  entries ended by an all-zero entry; objects after it; an object longer than its page goes on
  on the next logical page (a page without a table of contents).
- An instance: class-name hash (SHA-256 of the upper-case name in UTF-16LE, hex, in UTF-16LE;
  MD5 on XP),
  two FILETIMEs, uint32 length, uint32 class-name offset, a byte, property states (2 bits each),
  property values (strings as uint32 offsets into the data region, an array as one, a uint32, a
  boolean as uint16 0xFFFF), qualifiers {uint32 size=4}, a dynprops byte (1), and the data
  region {uint32 size | 0x80000000, bytes}: the class name, the CreatorSID array {uint32 count,
  bytes}, then the strings, each a flag byte (0) and NUL-terminated text.

What this cannot show is that Windows writes exactly this: the writer and the reader share one
reading of the format. The tests' expected values (names, commands, offsets) are written by
hand, not taken from either.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

PAGE = 0x2000
UNMAPPED = 0x3FFFFFFF
FILETIME_2024_05_14 = 133_601_490_000_000_000  # 2024-05-14T08:30:00Z: (1715675400 + 11644473600) × 10⁷
SID = bytes([1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0x8E, 0x1F, 0x2D, 0x3A, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
             0x88, 0xF4, 0x01, 0x00, 0x00])  # S-1-5-21-…-500


def class_hash(name: str, xp: bool = False) -> bytes:
    digest = hashlib.md5 if xp else hashlib.sha256
    return digest(name.upper().encode("utf-16-le")).hexdigest().upper().encode("utf-16-le")


def instance(class_name: str, strings: list[str | None], written: int = FILETIME_2024_05_14, xp: bool = False) -> bytes:
    """An instance record of ``class_name`` whose string properties are ``strings`` (None: null)."""
    heap = bytearray(b"\x00" + class_name.encode("ascii") + b"\x00")
    sid_at = len(heap)
    heap += struct.pack("<I", len(SID)) + SID
    refs: list[int] = []
    for text in strings:
        if text is None:
            refs.append(0xFFFFFFFF)
            continue
        refs.append(len(heap))
        if text.isascii():
            heap += b"\x00" + text.encode("ascii") + b"\x00"
        else:
            heap += b"\x01" + text.encode("utf-16-le") + b"\x00\x00"
    count = 1 + len(strings) + 2  # CreatorSID, the strings, a uint32 and a boolean
    states = bytes((2 * count + 7) // 8)
    values = struct.pack("<I", sid_at) + b"".join(struct.pack("<I", r) for r in refs)
    values += struct.pack("<I", 0) + struct.pack("<H", 0xFFFF)  # e.g. KillTimeout = 0, CreateNewConsole = True
    body = states + values + struct.pack("<I", 4) + b"\x01" + struct.pack("<I", len(heap) | 0x80000000) + bytes(heap)
    head = class_hash(class_name, xp) + struct.pack("<QQ", written, written)
    length = len(head) + 4 + 4 + 1 + len(body)
    return head + struct.pack("<II", length, 0) + b"\x00" + body


def page(objects: list[tuple[int, bytes]]) -> tuple[bytes, list[bytes]]:
    """A page holding ``(record id, object)``; the part of the last object that does not fit is
    returned as the continuation pages' bytes."""
    toc_size = 16 * (len(objects) + 1)
    buf = bytearray(PAGE)
    at = toc_size
    spill = b""
    for i, (record_id, obj) in enumerate(objects):
        struct.pack_into("<4I", buf, 16 * i, record_id, at, len(obj), 0)
        room = PAGE - at
        buf[at:at + min(room, len(obj))] = obj[:room]
        if len(obj) > room:
            assert i == len(objects) - 1, "only the last object of a page may continue"
            spill = obj[room:]
        at += len(obj)
    continuations = [spill[i:i + PAGE].ljust(PAGE, b"\x00") for i in range(0, len(spill), PAGE)]
    return bytes(buf), continuations


@dataclass
class Repository:
    """Physical pages and the objects mapping (logical page → physical page, None unmapped)."""

    pages: list[bytes]
    mapping: list[int | None]
    version: int = 7
    xp: bool = False

    def objects_data(self) -> bytes:
        return b"".join(self.pages)

    def mapping_file(self) -> bytes:
        return _mapping(self.mapping, len(self.pages), self.version, self.xp) + _mapping([], 0, self.version, self.xp)


def _mapping(pages: list[int | None], physical_count: int, version: int, xp: bool) -> bytes:
    if xp:
        out = struct.pack("<4I", 0xABCD, version, physical_count, len(pages))
    else:
        out = struct.pack("<6I", 0xABCD, version, 1, 2, physical_count, len(pages))
    for physical in pages:
        value = UNMAPPED if physical is None else physical
        out += struct.pack("<I", value) if xp else struct.pack("<6I", value, 0, 0, 0, 0, 0)
    free = [p for p in range(physical_count) if p not in pages]
    out += struct.pack("<I", len(free)) + b"".join(struct.pack("<I", p) for p in free)
    return out + struct.pack("<I", 0xDCBA)
