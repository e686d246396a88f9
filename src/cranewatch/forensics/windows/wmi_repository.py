"""The WMI (CIM) repository: instances of the event-subscription classes read from ``OBJECTS.DATA``.

The format is the one Mandiant's FLARE team published (Ballenthin, Graeber, Teodorescu, *WMI
offense, defense and forensics*, and python-cim in ``fireeye/flare-wmi``, Apache-2.0), for the
repository of Windows Vista and later (``Windows/System32/wbem/Repository``) and of Windows XP
(``Repository/FS``; the differences are given in brackets):

- ``MAPPING1.MAP`` … ``MAPPING3.MAP``: the one with the highest version is current. It holds
  the mapping of ``OBJECTS.DATA`` first: a header of six uint32 (signature ``0xABCD``, version,
  two ids, physical page count, entry count) [XP: four, without the ids], one 24-byte entry per
  logical page [XP: 4 bytes] whose first uint32 is the physical page (low 30 bits;
  ``0x3FFFFFFF`` unmapped), a free-page list (uint32 count, then that many uint32) and the end
  signature ``0xDCBA``. The layout is the one whose end signature falls in place.
- ``OBJECTS.DATA``: pages of ``0x2000`` bytes. A page begins with its table of contents, entries
  of four uint32 (record id, offset in the page, size, CRC) ended by an all-zero entry. An object
  longer than the rest of its page continues on the next *logical* pages.
- An instance begins with the hash of its class's name (SHA-256 of the upper-case name in
  UTF-16LE, 64 upper-case hex digits, written in UTF-16LE) [XP: MD5, 32 digits], two FILETIMEs, a uint32 length, a
  uint32 offset of the class name, one byte, then the property states, the property values (a
  string is a uint32 offset into the data region), qualifiers, and last the data region: a
  uint32 size (python-cim masks its top bit), then the bytes. The region begins with the class name;
  every string in it is a flag byte (0: one byte a character, 1: UTF-16LE) and NUL-terminated
  text.

Without the class definitions (which would need the index B-tree and each class's ancestry)
the reader does not know which property a value belongs to. It reads what the record itself
proves: the class (by its hash, confirmed by the class name at the start of the data region),
and the strings the property values point at, in property order. ``wmi`` gives them meaning
from their content (a WQL query, a reference path, a command). Objects on pages the mapping
does not use, and instances in a page's slack (outside every object its table of contents
lists), are read too, marked ``allocated=False``: the remains of deleted subscriptions.

Every problem (a missing or damaged mapping, a table of contents that runs off its page, an
object that ends outside the file) is returned located (file, page, offset); nothing raises.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

PAGE = 0x2000
MAPPING_START, MAPPING_END = 0xABCD, 0xDCBA
UNMAPPED = 0x3FFFFFFF
MAX_OBJECT = 1 << 20  # subscriptions are a few KiB; a bigger object of their class is reported, not read
_AFTER_HASH = 8 + 8 + 4 + 4 + 1  # two FILETIMEs, length, class-name offset, one byte

SUBSCRIPTION_CLASSES = ("__EventFilter", "__FilterToConsumerBinding", "CommandLineEventConsumer",
                        "ActiveScriptEventConsumer")


def class_hash(name: str, xp: bool = False) -> str:
    """The repository's hash of a class name: SHA-256 (XP: MD5) of the upper-case name in UTF-16LE, hex upper."""
    digest = hashlib.md5 if xp else hashlib.sha256
    return digest(name.upper().encode("utf-16-le")).hexdigest().upper()


# The hash as it is written at the start of an instance (UTF-16LE): 128 bytes, or 64 on XP.
_BY_HASH = {class_hash(name, xp).encode("utf-16-le"): name for name in SUBSCRIPTION_CLASSES for xp in (False, True)}


@dataclass(frozen=True)
class Instance:
    """One instance of a subscription class as stored: where, its class, its string values."""

    class_name: str
    strings: tuple[str, ...]  # the string property values, in property order
    offset: int  # file offset of the record in OBJECTS.DATA
    page: int  # logical page (physical page when no mapping could be read)
    record_id: int  # 0: found in a page's slack, outside its table of contents
    allocated: bool  # False: on a page the current mapping does not use, or in a page's slack (deleted)
    written: str | None  # the instance's first FILETIME (ISO 8601 UTC), when plausible


@dataclass(frozen=True)
class Mapping:
    """The current mapping of OBJECTS.DATA: physical page of each logical page (None: unmapped)."""

    name: str
    version: int
    pages: tuple[int | None, ...]


def read_mapping(name: str, data: bytes) -> Mapping:
    """The objects mapping at the start of a ``MAPPING*.MAP`` file; ``ValueError`` says what is wrong, where."""
    if len(data) < 16:
        raise ValueError(f"{len(data)} bytes, shorter than a mapping header")
    start, version = struct.unpack_from("<2I", data, 0)
    if start != MAPPING_START:
        raise ValueError(f"no mapping signature at offset 0 (0x{start:08X})")
    errors: list[str] = []
    readings: list[tuple[int, tuple[int | None, ...]]] = []
    for header, entry in ((24, 24), (16, 4)):  # Vista and later, then XP
        try:
            pages, tail = _mapping_pages(data, header, entry)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        (physical_count,) = struct.unpack_from("<I", data, header - 8)
        # A small mapping can read both ways: the right one is followed by the index mapping's
        # header and names no page past the physical page count.
        after = data[tail + 4:tail + 8]
        followed = 2 if after == struct.pack("<I", MAPPING_START) else 1 if after == b"" else 0
        within = all(p is None or p < physical_count for p in pages)
        readings.append((followed + int(within), pages))
    if not readings:
        raise ValueError(errors[0])
    best = max(score for score, _ in readings)
    return Mapping(name, version, next(pages for score, pages in readings if score == best))


def _mapping_pages(data: bytes, header: int, entry: int) -> tuple[tuple[int | None, ...], int]:
    """The physical pages of a mapping laid out with ``header`` and ``entry`` sizes, and where its end signature is."""
    if len(data) < header + 4:
        raise ValueError(f"{len(data)} bytes, shorter than a mapping header")
    (count,) = struct.unpack_from("<I", data, header - 4)
    end = header + entry * count
    if end + 4 > len(data):
        raise ValueError(f"{count} page entries run past the end of the file ({len(data)} bytes)")
    (free,) = struct.unpack_from("<I", data, end)
    tail = end + 4 + 4 * free
    if tail + 4 > len(data):
        raise ValueError(f"free-page list of {free} entries at offset {end} runs past the end of the file")
    (signature,) = struct.unpack_from("<I", data, tail)
    if signature != MAPPING_END:
        raise ValueError(f"no end signature at offset {tail} (0x{signature:08X})")
    return tuple(_physical_page(data, header + entry * i) for i in range(count)), tail


def _physical_page(data: bytes, at: int) -> int | None:
    (value,) = struct.unpack_from("<I", data, at)
    page = value & UNMAPPED
    return None if page == UNMAPPED else page


def current_mapping(files: list[tuple[str, bytes]]) -> tuple[Mapping | None, list[str]]:
    """The readable mapping with the highest version among ``(name, bytes)``, and the problems of the others."""
    problems: list[str] = []
    best: Mapping | None = None
    for name, data in files:
        try:
            mapping = read_mapping(name, data)
        except (ValueError, struct.error) as exc:
            problems.append(f"{name}: not a usable mapping ({exc})")
            continue
        if best is None or mapping.version > best.version:
            best = mapping
    return best, problems


def read_instances(objects: BinaryIO, size: int, mapping: Mapping | None) -> tuple[list[Instance], list[str]]:
    """Every instance of the subscription classes in ``OBJECTS.DATA`` (``size`` bytes), and the problems.

    With a mapping, the mapped pages are read in logical order (objects continue on the next
    logical page), then the pages it does not use. Without one, every page in file order.
    """
    reader = _Pages(objects, size)
    found: list[Instance] = []
    problems: list[str] = []
    if mapping is not None:
        order = [(logical, physical) for logical, physical in enumerate(mapping.pages) if physical is not None]
        used = {physical for _, physical in order}
        for logical, physical in order:
            if logical in reader.continuations:
                continue  # the rest of an object begun on an earlier page: no table of contents
            if physical >= reader.count:
                problems.append(f"logical page {logical} maps to physical page {physical}, past the end of the file "
                                f"({reader.count} pages)")
                continue
            found.extend(_page_objects(reader, physical, logical, True, mapping, problems))
        reader.continuations.clear()
        for physical in range(reader.count):
            if physical not in used:
                found.extend(_page_objects(reader, physical, physical, False, None, problems))
    else:
        for physical in range(reader.count):
            if physical not in reader.continuations:
                found.extend(_page_objects(reader, physical, physical, True, None, problems))
    if size % PAGE:
        problems.append(f"{size % PAGE} bytes after the last whole page ({size} bytes is not a multiple of 0x2000)")
    return found, problems


class _Pages:
    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.count = size // PAGE
        self.continuations: set[int] = set()  # pages (logical, or physical without a mapping) an object continues on

    def read(self, physical: int) -> bytes:
        self.stream.seek(physical * PAGE)
        return self.stream.read(PAGE)


def _toc(page: bytes) -> Iterator[tuple[int, int, int]]:
    """(record id, offset, size) of the page's table of contents, up to its all-zero end."""
    for at in range(0, PAGE - 15, 16):
        record_id, offset, size, crc = struct.unpack_from("<4I", page, at)
        if record_id == offset == size == crc == 0:
            return
        if record_id == 0 or size == 0 or not at + 16 <= offset < PAGE:
            return  # not a table entry: a page without a table of contents, or its end
        yield record_id, offset, size


def _page_objects(reader: _Pages, physical: int, logical: int, allocated: bool, mapping: Mapping | None,
                  problems: list[str]) -> Iterator[Instance]:
    page = reader.read(physical)
    if len(page) < PAGE:
        return
    listed: list[tuple[int, int]] = []
    for record_id, offset, size in _toc(page):
        listed.append((offset, offset + size))
        hash_size = 128
        name = _BY_HASH.get(page[offset:offset + 128])
        if name is None:
            hash_size = 64
            name = _BY_HASH.get(page[offset:offset + 64])
        if name is None:
            continue
        where = f"page {logical} (file offset 0x{physical * PAGE + offset:X}), record {record_id}"
        if size > MAX_OBJECT:
            problems.append(f"{name} at {where}: {size} bytes, larger than {MAX_OBJECT}; not read")
            continue
        record: bytes | None = page[offset:offset + size]
        if record is not None and len(record) < size:
            record = _continued(reader, record, size, logical, mapping, where, problems)
        if record is None:
            continue
        try:
            yield _instance(name, record, hash_size, physical * PAGE + offset, logical, record_id, allocated)
        except (ValueError, struct.error) as exc:
            problems.append(f"{name} at {where}: not decoded ({exc})")
    yield from _carved(page, physical, logical, listed)


def _carved(page: bytes, physical: int, logical: int, listed: list[tuple[int, int]]) -> Iterator[Instance]:
    """Instances in the page's slack: outside every object its table of contents lists (what a
    deleted or moved object left behind). What no longer decodes is noise, not a problem."""
    for needle, name in _BY_HASH.items():
        at = page.find(needle)
        while at != -1:
            if not any(start <= at < end for start, end in listed):
                try:
                    yield _instance(name, page[at:], len(needle), physical * PAGE + at, logical, 0, False)
                except (ValueError, struct.error):
                    pass
            at = page.find(needle, at + 1)


def _continued(reader: _Pages, first: bytes, size: int, logical: int, mapping: Mapping | None, where: str,
               problems: list[str]) -> bytes | None:
    """An object's bytes continued on the next logical pages (next physical ones without a mapping)."""
    parts = [first]
    have = len(first)
    following = logical
    while have < size:
        following += 1
        if mapping is not None:
            physical = mapping.pages[following] if following < len(mapping.pages) else None
        else:
            physical = following
        if physical is None or physical >= reader.count:
            problems.append(f"object at {where}: {size} bytes, but it continues on page {following}, which is "
                            "not in the file or not mapped")
            return None
        chunk = reader.read(physical)[:size - have]
        reader.continuations.add(following)
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def _instance(name: str, record: bytes, hash_size: int, offset: int, page: int, record_id: int,
              allocated: bool) -> Instance:
    header = hash_size + _AFTER_HASH
    heap_at, heap_size = _data_region(name, record, header)
    heap = record[heap_at:heap_at + heap_size]
    strings = _referenced_strings(record[header:heap_at - 4], heap)
    (filetime,) = struct.unpack_from("<Q", record, hash_size)
    return Instance(name, strings, offset, page, record_id, allocated, _filetime(filetime))


def _data_region(name: str, record: bytes, header: int) -> tuple[int, int]:
    """Where the data region's bytes begin (at the class name, after a size that fits in the record), and its size."""
    needle = b"\x00" + name.encode("ascii") + b"\x00"
    at = record.find(needle, header + 4)
    while at != -1:
        (raw,) = struct.unpack_from("<I", record, at - 4)
        if len(needle) <= (raw & 0x7FFFFFFF) <= len(record) - at:
            return at, raw & 0x7FFFFFFF
        at = record.find(needle, at + 1)
    raise ValueError("no data region that begins with the class name")


def _referenced_strings(values: bytes, heap: bytes) -> tuple[str, ...]:
    """Strings of ``heap`` whose offset a property value (any uint32 of ``values``) points at, in that order."""
    seen: dict[int, str] = {}
    for at in range(len(values) - 3):
        (ref,) = struct.unpack_from("<I", values, at)
        if ref == 0 or ref >= len(heap) or ref in seen:
            continue  # 0 is the class name
        text = heap_string(heap, ref)
        if text:
            seen[ref] = text
    return tuple(seen.values())


def heap_string(heap: bytes, at: int) -> str | None:
    """The string at ``at`` of a data region (flag byte, then NUL-terminated text), or None if there is none."""
    flag = heap[at]
    if flag == 0:
        end = heap.find(b"\x00", at + 1)
        if end <= at + 1:
            return None
        text = heap[at + 1:end].decode("latin-1")
    elif flag == 1:
        end = at + 1
        while end + 1 < len(heap) and heap[end:end + 2] != b"\x00\x00":
            end += 2
        if end + 1 >= len(heap) or end == at + 1:
            return None
        text = heap[at + 1:end].decode("utf-16-le", "replace")
    else:
        return None
    if "\ufffd" in text or not all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return None
    return text


def _filetime(value: int) -> str | None:
    if not 116444736000000000 <= value < 4102444800 * 10_000_000 + 116444736000000000:  # 1970 .. 2100
        return None
    when = datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=value // 10)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
