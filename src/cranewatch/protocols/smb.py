"""SMB over TCP (NetBIOS session service framing, port 445 and 139): which flows are SMB, the
SMB2/3 dialect, the shares connected to and the files opened, read and written.

What matters on a crane LAN: a file copied to or from a share between OT hosts (a program
pushed to an HMI, the CMS's data pulled off), with its name and volume. The decoder reads the
NetBIOS session header (type 0 with a 17-bit length) and, of each message, only its head
(``HEAD_BYTES``: the SMB2 header and the fixed part of the command): file data in READ and
WRITE messages is skipped, never buffered. SMB1 (``\\xffSMB``) is identified only; an
encrypted SMB3 message (transform header ``\\xfdSMB``) ends the decoding of the flow.

Per session the decoder keeps the tree ids of the shares connected to, the file ids of files
opened (bounded), and the bytes each file's READs and WRITEs asked for; a CLOSE (or too many
open files) gives an ``SmbFileAccess`` event, which becomes a ``facts.FileTransfer``.
Written from [MS-SMB2] 2.2 (header, NEGOTIATE, TREE_CONNECT, CREATE, CLOSE, READ, WRITE),
checked against tshark's ``smb2.*`` fields on a Samba capture (tests/test_smb.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import FileTransfer, client_where
from cranewatch.errors import DecodeError
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol

PORTS = frozenset({445, 139})
SMB2, SMB1, TRANSFORM = b"\xfeSMB", b"\xffSMB", b"\xfdSMB"
HEAD_BYTES = 1024  # of each message: the header, the command's fixed part and a file name
MAX_MESSAGE = 1 << 24  # NBSS length field: 17 bits (128 KiB) or 24 bits with SMB2 large MTU
MAX_OPEN = 256  # files tracked per flow
MAX_PENDING = 256  # requests awaiting their response
NBSS_TYPES = frozenset({0x00, 0x81, 0x82, 0x83, 0x84, 0x85})

NEGOTIATE, TREE_CONNECT, CREATE, CLOSE, READ, WRITE = 0x00, 0x03, 0x05, 0x06, 0x08, 0x09
STATUS_PENDING = 0x00000103
DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1",
            0x02FF: "2.???"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SmbNegotiate(Event):
    """The dialect the server chose (NEGOTIATE response)."""

    kind: ClassVar[str] = "smb_negotiate_response"
    dialect: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SmbTreeConnect(Event):
    """A share connected to (``\\\\server\\share``), with the server's status."""

    kind: ClassVar[str] = "smb_tree_response"
    share: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SmbFileAccess(Event):
    """A file opened on a share, when it was closed: the bytes READs and WRITEs asked for.
    ``created``: the server's CreateAction said it was created or overwritten."""

    kind: ClassVar[str] = "smb_file_response"
    share: str
    name: str
    bytes_read: int = 0
    bytes_written: int = 0
    created: bool = False


def nbss_length(head: bytes | bytearray) -> int:
    """The length of a NetBIOS session message from its 4-byte header."""
    if head[0] not in NBSS_TYPES:
        raise DecodeError(f"NetBIOS session type 0x{head[0]:02x} unknown")
    return (head[1] << 16) | (head[2] << 8) | head[3]  # SMB2 uses all 24 bits (large MTU)


def _netbios_name(data: bytes, pos: int) -> bool:
    """An encoded NetBIOS name at ``pos`` (RFC 1002 4.1: length 32, half-bytes as 'A'..'P',
    no scope): 34 bytes."""
    name = data[pos + 1:pos + 33]
    return (data[pos:pos + 1] == b"\x20" and len(name) == 32 and data[pos + 33:pos + 34] == b"\x00"
            and all(0x41 <= c <= 0x50 for c in name))


def is_session_request(data: bytes) -> bool:
    """A NetBIOS session request (RFC 1002 4.3.2: type 0x81, the called and calling names),
    which SMB over port 139 sends before any SMB message."""
    return (len(data) >= 72 and data[0] == 0x81 and data[1] & 0xFE == 0
            and (data[1] & 1) << 16 | data[2] << 8 | data[3] == 68
            and _netbios_name(data, 4) and _netbios_name(data, 38))


def is_smb(client: bytes, server: bytes) -> bool:
    """A NetBIOS session message carrying an SMB1/2/3 header (or SMB3's transform header), or
    SMB over NetBIOS setting up its session: the client's session request, the server's
    positive response (``82 00 00 00``, alone or followed by an SMB message)."""
    for data in (client, server):
        if len(data) >= 8 and data[0] == 0 and data[4:8] in (SMB2, SMB1, TRANSFORM):
            return True
    if client:
        return is_session_request(client)
    return server[:4] == b"\x82\x00\x00\x00" and (len(server) == 4 or is_smb(b"", server[4:]))


class _Open:
    __slots__ = ("created", "name", "read", "share", "written")

    def __init__(self, share: str, name: str, created: bool) -> None:
        self.share, self.name, self.created = share, name, created
        self.read = self.written = 0


def _utf16(data: bytes | bytearray, offset: int, length: int) -> str:
    return bytes(data[offset:offset + length]).decode("utf-16-le", "replace")[:256]


class SmbDecoder(ReportsProblems):
    """Decodes one SMB flow's message heads."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self.finished = False
        self._buffers = (bytearray(), bytearray())
        self._skip = [0, 0]  # bytes of the current message still to pass over, per direction
        self._lost = [False, False]
        self._pending: dict[int, tuple[int, str]] = {}  # message id -> (command, name asked)
        self._trees: dict[int, str] = {}
        self._files: dict[bytes, _Open] = {}

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].clear()
        self._skip[from_client] = 0
        self._lost[from_client] = True  # no way to find the next message start

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        side = int(from_client)
        if self._lost[side] or self.finished:
            return events
        pos = 0
        skip = self._skip[side]
        if skip:
            taken = min(skip, len(data))
            self._skip[side] = skip - taken
            pos = taken
        buffer = self._buffers[side]
        buffer += data[pos:] if pos else data
        while len(buffer) >= 4 and not self.finished:
            try:
                length = nbss_length(buffer)
            except DecodeError as exc:
                buffer.clear()
                self._lost[side] = True
                raise decode_error(f"{exc.message} (the rest of this direction is not decoded)",
                                   self.ctx, frame) from None
            if length > MAX_MESSAGE:
                buffer.clear()
                self._lost[side] = True
                raise decode_error(f"NetBIOS message of {length} bytes", self.ctx, frame)
            want = min(length, HEAD_BYTES)
            if len(buffer) - 4 < want:
                break
            if buffer[0] == 0 and length:
                try:
                    self._message(from_client, bytes(buffer[4:4 + want]), ts, frame, events)
                except (DecodeError, struct.error, IndexError) as exc:
                    message = exc.message if isinstance(exc, DecodeError) else "SMB message cut short"
                    self.report(decode_error(message, self.ctx, frame))
            if len(buffer) - 4 >= length:
                del buffer[:4 + length]
            else:
                self._skip[side] = length - (len(buffer) - 4)
                buffer.clear()
        return events

    def _message(self, from_client: bool, message: bytes, ts: float, frame: int,
                 events: list[Event]) -> None:
        protocol = message[:4]
        if protocol == TRANSFORM:
            self.finished = True  # encrypted from here on
            return
        if protocol != SMB2:
            return  # SMB1: identified, not decoded
        offset = 0
        while True:  # compounded requests and responses: NextCommand chains them
            header = message[offset:offset + 64]
            if len(header) < 64 or header[:4] != SMB2:
                return
            status, command = struct.unpack_from("<IH", header, 8)
            flags, next_command, message_id = struct.unpack_from("<IIQ", header, 16)
            tree_id = struct.unpack_from("<I", header, 36)[0]
            end = offset + next_command if next_command else len(message)
            body = message[offset + 64:end]
            if flags & 1:
                if status != STATUS_PENDING:
                    self._response(command, status, message_id, body, message, offset, ts, frame,
                                   events)
            else:
                self._request(command, message_id, tree_id, body, message, offset)
            if not next_command or end >= len(message):
                return
            offset = end

    def _request(self, command: int, message_id: int, tree_id: int, body: bytes, message: bytes,
                 offset: int) -> None:
        asked = ""
        if command == TREE_CONNECT and len(body) >= 8:
            path_offset, path_length = struct.unpack_from("<HH", body, 4)
            asked = _utf16(message, offset + path_offset, path_length)
        elif command == CREATE and len(body) >= 48:
            name_offset, name_length = struct.unpack_from("<HH", body, 44)
            name = _utf16(message, offset + name_offset, name_length) if name_length else ""
            asked = f"{self._trees.get(tree_id, '')}\t{name}"
        elif command in (READ, WRITE) and len(body) >= 32:
            length = struct.unpack_from("<I", body, 4)[0]
            opened = self._files.get(bytes(body[16:32]))
            if opened is not None:
                if command == READ:
                    opened.read += length
                else:
                    opened.written += length
            return
        elif command == CLOSE and len(body) >= 24:
            asked = bytes(body[8:24]).hex()
        else:
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[message_id] = (command, asked)

    def _response(self, command: int, status: int, message_id: int, body: bytes, message: bytes,
                  offset: int, ts: float, frame: int, events: list[Event]) -> None:
        ends = endpoints(self.ctx, False)
        if command == NEGOTIATE:
            if status == 0 and len(body) >= 6:
                dialect = struct.unpack_from("<H", body, 4)[0]
                events.append(SmbNegotiate(ts=ts, frame=frame, dialect=DIALECTS.get(dialect, f"0x{dialect:04x}"),
                                           **ends))
            return
        pending = self._pending.pop(message_id, None)
        if pending is None or pending[0] != command:
            return
        asked = pending[1]
        if command == TREE_CONNECT:
            if status == 0:
                tree_id = struct.unpack_from("<I", message, offset + 36)[0]
                if len(self._trees) < MAX_OPEN:
                    self._trees[tree_id] = asked
            events.append(SmbTreeConnect(ts=ts, frame=frame, share=asked, status=status, **ends))
        elif command == CREATE and status == 0 and len(body) >= 80:
            create_action = struct.unpack_from("<I", body, 4)[0]
            file_id = bytes(body[64:80])
            share, _, name = asked.partition("\t")
            if len(self._files) >= MAX_OPEN:
                self._closed(self._files.pop(next(iter(self._files))), ts, frame, events)
            self._files[file_id] = _Open(share, name, create_action in (2, 3))  # created, overwritten
        elif command == CLOSE:
            opened = self._files.pop(bytes.fromhex(asked), None)
            if opened is not None:
                self._closed(opened, ts, frame, events)

    def _closed(self, opened: _Open, ts: float, frame: int, events: list[Event]) -> None:
        if not opened.name:
            return  # the share's root directory
        events.append(SmbFileAccess(ts=ts, frame=frame, share=opened.share, name=opened.name,
                                    bytes_read=opened.read, bytes_written=opened.written,
                                    created=opened.created, **endpoints(self.ctx, False)))


SPEC = DecoderSpec(name="smb", transport="tcp", ports=PORTS, factory=SmbDecoder, probe=is_smb,
                   priority=55)


def file_transfer(event: SmbFileAccess) -> list[FileTransfer]:
    """A file whose bytes were written (upload) or read (download) over the session."""
    facts = []
    name = f"{event.share}\\{event.name}" if event.share else event.name
    if event.bytes_written:
        facts.append(FileTransfer(**client_where(event), protocol="smb", operation="upload",
                                  name=name))
    if event.bytes_read:
        facts.append(FileTransfer(**client_where(event), protocol="smb", operation="download",
                                  name=name))
    return facts


PROTOCOL = register_protocol(ProtocolSpec(
    name="smb", module=__name__, decoders=(SPEC,),
    adapters={SmbNegotiate: IGNORED, SmbTreeConnect: IGNORED,
              SmbFileAccess: Adapter(file_transfer, (FileTransfer,))},
))
