"""Write Windows event logs (.evtx) for the tests, from the format's documentation.

No real .evtx is shipped with the test data, and none can be made without Windows, so this
writes the format as Microsoft's MS-EVEN6 and libyal's "Windows XML Event Log (EVTX)" describe
it: a 4 KiB file header, 64 KiB chunks with their CRC32s, and records whose binary XML is a
template instance with the template defined inline (as Windows writes a template's first use),
names inline in the chunk, values as UTF-16 strings. What is written is read back by two
parsers written by others (the Rust ``evtx`` and python-evtx) in the tests, so the writer is
checked against them, not against itself.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

CHUNK = 65536
EVENT_NS = "http://schemas.microsoft.com/win/2004/08/events/event"


@dataclass
class Element:
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element | str] = field(default_factory=list)


def event(provider: str, event_id: int, channel: str, when: datetime, record_id: int,
          data: dict[str, str] | None = None, user_data: Element | None = None, computer: str = "CMS-PC") -> Element:
    """An <Event> as Windows renders it: System, then EventData (Data Name=…) or UserData."""
    system = Element("System", children=[
        Element("Provider", {"Name": provider}),
        Element("EventID", children=[str(event_id)]),
        Element("TimeCreated", {"SystemTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")}),
        Element("EventRecordID", children=[str(record_id)]),
        Element("Channel", children=[channel]),
        Element("Computer", children=[computer]),
    ])
    body: list[Element | str] = [system]
    if data is not None:
        body.append(Element("EventData", children=[Element("Data", {"Name": k}, [v]) for k, v in data.items()]))
    if user_data is not None:
        body.append(Element("UserData", children=[user_data]))
    return Element("Event", {"xmlns": EVENT_NS}, body)


class _Writer:
    """Binary XML written at a known chunk offset (names are referenced by chunk offset)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.buf = bytearray()

    @property
    def pos(self) -> int:
        return self.base + len(self.buf)

    def name(self, text: str) -> None:
        self.buf += struct.pack("<I", self.pos + 4)  # the name follows inline
        hash_ = 0
        for ch in text.encode("utf-16-le")[::2]:
            hash_ = (hash_ * 65599 + ch) & 0xFFFFFFFF
        self.buf += struct.pack("<IHH", 0, hash_ & 0xFFFF, len(text)) + text.encode("utf-16-le") + b"\0\0"

    def value(self, text: str, more: bool = False) -> None:
        self.buf += bytes([0x45 if more else 0x05, 0x01]) + struct.pack("<H", len(text)) + text.encode("utf-16-le")

    def element(self, el: Element) -> None:
        self.buf += bytes([0x41 if el.attrs else 0x01]) + struct.pack("<H", 0xFFFF)
        size_at = len(self.buf)
        self.buf += b"\0\0\0\0"
        start = len(self.buf)
        self.name(el.name)
        if el.attrs:
            attrs_at = len(self.buf)
            self.buf += b"\0\0\0\0"
            items = list(el.attrs.items())
            for i, (key, val) in enumerate(items):
                self.buf += bytes([0x46 if i < len(items) - 1 else 0x06])
                self.name(key)
                self.value(val)
            struct.pack_into("<I", self.buf, attrs_at, len(self.buf) - attrs_at - 4)
        if el.children:
            self.buf += b"\x02"
            for child in el.children:
                if isinstance(child, str):
                    self.value(child)
                else:
                    self.element(child)
            self.buf += b"\x04"
        else:
            self.buf += b"\x03"
        struct.pack_into("<I", self.buf, size_at, len(self.buf) - start)


def _record(root: Element, record_id: int, when: datetime, offset: int) -> bytes:
    """One event record at chunk offset ``offset``: a template instance defining its template inline."""
    w = _Writer(offset + 24)
    w.buf += b"\x0f\x01\x01\x00"  # fragment header
    w.buf += b"\x0c\x01" + struct.pack("<I", record_id)  # template instance, template id
    w.buf += struct.pack("<I", w.pos + 4)  # the definition follows inline
    w.buf += struct.pack("<I", 0) + uuid.uuid5(uuid.NAMESPACE_URL, f"cranewatch-test-{record_id}").bytes_le
    size_at = len(w.buf)
    w.buf += b"\0\0\0\0"
    start = len(w.buf)
    w.buf += b"\x0f\x01\x01\x00"
    w.element(root)
    w.buf += b"\x00"  # end of the template's fragment
    struct.pack_into("<I", w.buf, size_at, len(w.buf) - start)
    w.buf += struct.pack("<I", 0)  # no substitutions: every value is in the template
    w.buf += b"\x00"  # end of the record's fragment
    body = bytes(w.buf)
    size = 24 + len(body) + 4
    filetime = int((when - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)
    return struct.pack("<4sIQQ", b"\x2a\x2a\x00\x00", size, record_id, filetime) + body + struct.pack("<I", size)


def write_evtx(path: Path, events: list[tuple[Element, datetime]]) -> Path:
    """An .evtx file holding ``events`` (record ids from 1), as many chunks as they need."""
    chunks: list[bytes] = []
    record_id = 1
    pending = list(events)
    while pending or not chunks:
        chunk = bytearray(CHUNK)
        offset = 512
        first = record_id
        last_offset = 0
        while pending:
            root, when = pending[0]
            rec = _record(root, record_id, when, offset)
            if offset + len(rec) > CHUNK:
                break
            chunk[offset:offset + len(rec)] = rec
            last_offset = offset
            offset += len(rec)
            record_id += 1
            pending.pop(0)
        last = record_id - 1
        struct.pack_into("<8sQQQQIIII", chunk, 0, b"ElfChnk\x00", first, last, first, last, 128, last_offset, offset,
                         zlib.crc32(chunk[512:offset]))
        struct.pack_into("<I", chunk, 124, zlib.crc32(bytes(chunk[:120]) + bytes(chunk[128:512])))
        chunks.append(bytes(chunk))
    header = bytearray(4096)
    struct.pack_into("<8sQQQIHHHH", header, 0, b"ElfFile\x00", 0, len(chunks) - 1, record_id, 128, 2, 3, 4096, len(chunks))
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + b"".join(chunks))
    return path
