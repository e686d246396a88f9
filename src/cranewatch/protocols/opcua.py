"""OPC UA binary over TCP (port 4840): HEL/ACK, secure channels (OPN/CLO) and service calls (MSG).

What matters on a crane: which endpoint a client asks for (HEL), whether its secure channel
uses a security policy at all (OPN policy URI and mode: ``None`` means anyone on the network
can read and write), and, when the channel is not encrypted, which services it calls (Read,
Write, Browse, Call, CreateSession...), identified by the binary encoding id of the request
type (``opcua.servicenodeid.numeric``). Chunked messages are joined by request id and
reported in the frame of their final chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from cranewatch.detect.facts import PlcCommand, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import Endpoints, PduBuffer, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, FoldRun, ProtocolSpec, register_protocol

POLICY_NONE = "http://opcfoundation.org/UA/SecurityPolicy#None"
SECURITY_MODES: dict[int, str] = {1: "None", 2: "Sign", 3: "SignAndEncrypt"}
# Binary encoding ids of service requests and responses (OPC UA Part 6, NodeIds.csv).
SERVICE_NAMES: dict[int, str] = {
    397: "ServiceFault", 422: "FindServersRequest", 425: "FindServersResponse",
    428: "GetEndpointsRequest", 431: "GetEndpointsResponse", 446: "OpenSecureChannelRequest",
    449: "OpenSecureChannelResponse", 452: "CloseSecureChannelRequest",
    455: "CloseSecureChannelResponse", 461: "CreateSessionRequest", 464: "CreateSessionResponse",
    467: "ActivateSessionRequest", 470: "ActivateSessionResponse", 473: "CloseSessionRequest",
    476: "CloseSessionResponse", 479: "CancelRequest", 482: "CancelResponse",
    488: "AddNodesRequest", 491: "AddNodesResponse", 494: "AddReferencesRequest",
    497: "AddReferencesResponse", 500: "DeleteNodesRequest", 503: "DeleteNodesResponse",
    506: "DeleteReferencesRequest", 509: "DeleteReferencesResponse", 527: "BrowseRequest",
    530: "BrowseResponse", 533: "BrowseNextRequest", 536: "BrowseNextResponse",
    554: "TranslateBrowsePathsToNodeIdsRequest", 557: "TranslateBrowsePathsToNodeIdsResponse",
    560: "RegisterNodesRequest", 563: "RegisterNodesResponse", 566: "UnregisterNodesRequest",
    569: "UnregisterNodesResponse", 615: "QueryFirstRequest", 618: "QueryFirstResponse",
    621: "QueryNextRequest", 624: "QueryNextResponse", 631: "ReadRequest", 634: "ReadResponse",
    664: "HistoryReadRequest", 667: "HistoryReadResponse", 673: "WriteRequest",
    676: "WriteResponse", 700: "HistoryUpdateRequest", 703: "HistoryUpdateResponse",
    712: "CallRequest", 715: "CallResponse", 751: "CreateMonitoredItemsRequest",
    754: "CreateMonitoredItemsResponse", 763: "ModifyMonitoredItemsRequest",
    766: "ModifyMonitoredItemsResponse", 769: "SetMonitoringModeRequest",
    772: "SetMonitoringModeResponse", 775: "SetTriggeringRequest", 778: "SetTriggeringResponse",
    781: "DeleteMonitoredItemsRequest", 784: "DeleteMonitoredItemsResponse",
    787: "CreateSubscriptionRequest", 790: "CreateSubscriptionResponse",
    793: "ModifySubscriptionRequest", 796: "ModifySubscriptionResponse",
    799: "SetPublishingModeRequest", 802: "SetPublishingModeResponse", 826: "PublishRequest",
    829: "PublishResponse", 832: "RepublishRequest", 835: "RepublishResponse",
    841: "TransferSubscriptionsRequest", 844: "TransferSubscriptionsResponse",
    847: "DeleteSubscriptionsRequest", 850: "DeleteSubscriptionsResponse",
    12208: "RegisterServer2Request", 12211: "RegisterServer2Response",
    12190: "FindServersOnNetworkRequest", 12193: "FindServersOnNetworkResponse",
}
BODY_LIMIT = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaHelloRequest(Event):
    """HEL: the endpoint URL the client wants and its buffer limits."""

    kind: ClassVar[str] = "opcua_hello_request"
    endpoint_url: str
    version: int = 0
    receive_buffer: int = 0
    send_buffer: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaHelloResponse(Event):
    """ACK (the server accepts the connection) or ERR (``error`` code and ``reason``)."""

    kind: ClassVar[str] = "opcua_hello_response"
    message_type: str
    version: int = 0
    error: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaChannelRequest(Event):
    """OPN request (open/renew a secure channel) or CLO (``message_type`` tells).

    ``security_mode``: None/Sign/SignAndEncrypt when the OPN body is readable (policy None);
    ``None`` when it is encrypted (any other policy). ``has_certificate``: the client sent a
    certificate.
    """

    kind: ClassVar[str] = "opcua_channel_request"
    message_type: str
    policy_uri: str = ""
    security_mode: str | None = None
    request_type: int | None = None
    channel_id: int = 0
    has_certificate: bool = False
    service_id: int | None = None  # 446 OpenSecureChannel, 452 CloseSecureChannel; None if encrypted

    @property
    def policy(self) -> str:
        return self.policy_uri.rsplit("#", 1)[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaChannelResponse(Event):
    """OPN response: the channel id and token the server granted."""

    kind: ClassVar[str] = "opcua_channel_response"
    message_type: str
    policy_uri: str = ""
    channel_id: int = 0
    token_id: int | None = None
    service_id: int | None = None  # 449 OpenSecureChannelResponse; None if encrypted


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaServiceRequest(Event):
    """A service request in a MSG (or the OPN/CLO body): its encoding id and name.

    ``service_id`` is None when the body is encrypted (``encrypted`` then True).
    ``body``: the first bytes after the type id, for content checks.
    """

    kind: ClassVar[str] = "opcua_service_request"
    service_id: int | None
    request_id: int = 0
    channel_id: int = 0
    encrypted: bool = False
    body: bytes = b""
    node_ids: tuple[str, ...] = ()  # nodes read, written (first) or called, when readable

    @property
    def service_name(self) -> str:
        if self.service_id is None:
            return "encrypted"
        return SERVICE_NAMES.get(self.service_id, f"ns0;i={self.service_id}")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaServiceResponse(OpcuaServiceRequest):
    """A service response; ``status``: its ResponseHeader's service result (0 = Good)."""

    kind: ClassVar[str] = "opcua_service_response"
    status: int | None = None
    request_frame: int | None = None


def opcua_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 8:
        return None
    if bytes(buf[pos:pos + 3]) not in identify.OPCUA_TYPES or buf[pos + 3] not in b"FCA":
        raise DecodeError("not an OPC UA message header")
    size = int.from_bytes(buf[pos + 4:pos + 8], "little")
    if size < 8:
        raise DecodeError(f"OPC UA message size {size} below its header")
    return size


def read_string(data: bytes, pos: int) -> tuple[str | None, int]:
    """A UA String/ByteString: int32 length (-1 = null), then bytes; returns text, next offset."""
    if pos + 4 > len(data):
        raise DecodeError("OPC UA string length cut short")
    length = struct.unpack_from("<i", data, pos)[0]
    if length < 0:
        return None, pos + 4
    if pos + 4 + length > len(data):
        raise DecodeError("OPC UA string longer than its message")
    return data[pos + 4:pos + 4 + length].decode("utf-8", "replace"), pos + 4 + length


def read_nodeid(data: bytes, pos: int) -> tuple[int | None, int]:
    """A (possibly expanded) NodeId; returns its numeric identifier (None if not numeric)."""
    if pos >= len(data):
        raise DecodeError("NodeId cut short")
    mask = data[pos]
    encoding = mask & 0x0F
    value: int | None
    if encoding == 0:
        if pos + 2 > len(data):
            raise DecodeError("NodeId cut short")
        value, pos = data[pos + 1], pos + 2
    elif encoding == 1:
        if pos + 4 > len(data):
            raise DecodeError("NodeId cut short")
        value, pos = data[pos + 2] | data[pos + 3] << 8, pos + 4
    elif encoding == 2:
        if pos + 7 > len(data):
            raise DecodeError("NodeId cut short")
        value, pos = struct.unpack_from("<I", data, pos + 3)[0], pos + 7
    elif encoding in (3, 5):
        _, pos = read_string(data, pos + 3)
        value = None
    elif encoding == 4:
        value, pos = None, pos + 3 + 16
    else:
        raise DecodeError(f"unknown NodeId encoding 0x{mask:02x}")
    if mask & 0x80:
        _, pos = read_string(data, pos)
    if mask & 0x40:
        pos += 4
    return value, pos


def nodeid_text(data: bytes, pos: int) -> tuple[str, int]:
    """A NodeId as text in the usual notation (``ns=2;i=5``, ``ns=3;s=Hoist.Load``)."""
    if pos >= len(data):
        raise DecodeError("NodeId cut short")
    mask = data[pos]
    encoding = mask & 0x0F
    value, end = read_nodeid(data, pos)
    if encoding == 0:
        namespace = 0
    elif encoding == 1:
        namespace = data[pos + 1]
    else:
        namespace = data[pos + 1] | data[pos + 2] << 8
    prefix = f"ns={namespace};" if namespace else ""
    if value is not None:
        return f"{prefix}i={value}", end
    if encoding == 3:
        text, _ = read_string(data, pos + 3)
        return f"{prefix}s={text}", end
    if encoding == 4:
        return f"{prefix}g={data[pos + 3:pos + 19].hex()}", end
    raw, _ = read_string(data, pos + 3)
    return f"{prefix}b={raw}", end


def skip_request_header(body: bytes, pos: int) -> int:
    """Offset after a RequestHeader: token, timestamp, handle, diagnostics, audit id, timeout,
    additional header (ExtensionObject: type id, encoding byte, optional body)."""
    _, pos = read_nodeid(body, pos)
    pos += 8 + 4 + 4
    _, pos = read_string(body, pos)
    pos += 4
    _, pos = read_nodeid(body, pos)
    if pos >= len(body):
        raise DecodeError("RequestHeader cut short")
    encoding = body[pos]
    pos += 1
    if encoding & 3:
        _, pos = read_string(body, pos)
    return pos


NODE_LIMIT = 32


def request_node_ids(service: int, body: bytes) -> tuple[str, ...]:
    """The nodes a Read, Write or Call request addresses (``body`` starts at its header).

    Read: every ReadValueId; Write: the first WriteValue (its DataValue is not walked);
    Call: object and method of the first call. Empty for other services.
    """
    if service not in (631, 673, 712):
        return ()
    pos = skip_request_header(body, 0)
    if service == 631:
        pos += 8 + 4  # maxAge, timestampsToReturn
    if pos + 4 > len(body):
        raise DecodeError("request array length cut short")
    count = struct.unpack_from("<i", body, pos)[0]
    pos += 4
    nodes: list[str] = []
    for _ in range(min(max(count, 0), NODE_LIMIT if service == 631 else 1)):
        node, pos = nodeid_text(body, pos)
        nodes.append(node)
        if service == 712:
            method, pos = nodeid_text(body, pos)
            nodes.append(method)
        elif service == 631:  # attribute id, index range, data encoding (QualifiedName)
            pos += 4
            _, pos = read_string(body, pos)
            pos += 2
            _, pos = read_string(body, pos)
    return tuple(nodes)


def _security_mode_of_open(body: bytes, pos: int) -> tuple[int | None, str | None]:
    """Request type and mode of an OpenSecureChannelRequest body after its type id."""
    pos = skip_request_header(body, pos)
    if pos + 12 > len(body):
        raise DecodeError("OpenSecureChannelRequest cut short")
    _version, request_type, mode = struct.unpack_from("<III", body, pos)
    return request_type, SECURITY_MODES.get(mode, str(mode))


class OpcuaDecoder(ReportsProblems):
    """Decodes one OPC UA binary TCP connection."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (PduBuffer(source=ctx.source), PduBuffer(source=ctx.source))
        self._policy = POLICY_NONE
        self._chunks: dict[tuple[bool, int], bytearray] = {}
        self._requests: dict[int, int] = {}  # request id -> frame

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].gap()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        for message in self._buffers[from_client].pdus(data, opcua_length, frame):
            try:  # a broken message costs itself, not the ones after it
                event = self._message(from_client, message, ts, frame)
            except DecodeError as exc:
                self.report(exc)
                continue
            if event is not None:
                events.append(event)
        return events

    def _message(self, from_client: bool, msg: bytes, ts: float, frame: int) -> Event | None:
        mtype = msg[:3].decode("ascii")
        chunk = msg[3:4]
        where = endpoints(self.ctx, from_client)
        try:
            if mtype == "HEL":
                if len(msg) < 28:
                    raise DecodeError("HEL cut short")
                version, rbs, sbs = struct.unpack_from("<III", msg, 8)
                url, _ = read_string(msg, 28)
                return OpcuaHelloRequest(ts=ts, frame=frame, endpoint_url=url or "",
                                         version=version, receive_buffer=rbs, send_buffer=sbs,
                                         **where)
            if mtype in ("ACK", "ERR", "RHE"):
                error = reason = None
                version = 0
                if mtype == "ERR" and len(msg) >= 12:
                    error = struct.unpack_from("<I", msg, 8)[0]
                    reason, _ = read_string(msg, 12)
                elif len(msg) >= 12:
                    version = struct.unpack_from("<I", msg, 8)[0]
                return OpcuaHelloResponse(ts=ts, frame=frame, message_type=mtype, version=version,
                                          error=error, reason=reason or "",
                                          **where)
            if len(msg) < 12:
                raise DecodeError(f"{mtype} cut short")
            channel_id = struct.unpack_from("<I", msg, 8)[0]
            if mtype == "OPN":
                return self._open(from_client, msg, channel_id, ts, frame, where)
            return self._service(from_client, mtype, chunk, msg, channel_id, ts, frame, where)
        except DecodeError as exc:
            raise decode_error(f"OPC UA {mtype}: {exc.message}", self.ctx, frame) from None

    def _open(self, from_client: bool, msg: bytes, channel_id: int, ts: float, frame: int,
              where: Endpoints) -> Event:
        policy, pos = read_string(msg, 12)
        certificate, pos = read_string(msg, pos)
        _, pos = read_string(msg, pos)  # receiver thumbprint
        policy = policy or ""
        if from_client:
            self._policy = policy
        pos += 8  # sequence number, request id
        request_type = mode = service = None
        if policy == POLICY_NONE:
            service, body_pos = read_nodeid(msg, pos)
            if from_client and service == 446:
                request_type, mode = _security_mode_of_open(msg, body_pos)
        if from_client:
            return OpcuaChannelRequest(ts=ts, frame=frame, message_type="OPN", policy_uri=policy,
                                       security_mode=mode, request_type=request_type,
                                       channel_id=channel_id, has_certificate=bool(certificate),
                                       service_id=service,
                                       **where)
        token = None
        if policy == POLICY_NONE:
            _, body_pos = read_nodeid(msg, pos)
            # ResponseHeader (timestamp, handle, result, diagnostics byte, string table, ext)
            # is variable; the token id sits after it, so only report it when simple
            if len(msg) >= body_pos + 8 + 4 + 4 + 1 + 4 + 3 + 4 + 4 + 4:
                header_end = body_pos + 8 + 4 + 4 + 1 + 4 + 3
                if msg[body_pos + 16] == 0 and msg[body_pos + 17:body_pos + 21] == b"\xff\xff\xff\xff":
                    token = struct.unpack_from("<I", msg, header_end + 4 + 4)[0]
        return OpcuaChannelResponse(ts=ts, frame=frame, message_type="OPN", policy_uri=policy,
                                    channel_id=channel_id, token_id=token, service_id=service,
                                    **where)

    def _service(self, from_client: bool, mtype: str, chunk: bytes, msg: bytes, channel_id: int,
                 ts: float, frame: int, where: Endpoints) -> Event | None:
        if len(msg) < 24:
            raise DecodeError("symmetric security header cut short")
        request_id = struct.unpack_from("<I", msg, 20)[0]
        body = msg[24:]
        key = (from_client, request_id)
        if chunk == b"A":
            self._chunks.pop(key, None)
            return None
        if chunk == b"C":
            pending = self._chunks.setdefault(key, bytearray())
            if len(pending) < BODY_LIMIT:
                pending += body[:BODY_LIMIT]
            if len(self._chunks) > 64:
                self._chunks.pop(next(iter(self._chunks)))
            return None
        first = self._chunks.pop(key, None)
        if first is not None:
            body = bytes(first) + body
        service_id: int | None = None
        encrypted = False
        body_pos = 0
        try:
            service_id, body_pos = read_nodeid(body, 0)
        except DecodeError:
            if self._policy == POLICY_NONE:
                raise
            encrypted = True
        if self._policy != POLICY_NONE and service_id not in SERVICE_NAMES:
            # Sign-only channels are readable; with encryption the "type id" is noise
            service_id, encrypted = None, True
        if mtype == "CLO" and from_client:
            return OpcuaChannelRequest(ts=ts, frame=frame, message_type="CLO",
                                       channel_id=channel_id, service_id=service_id,
                                       **where)
        rest = body[body_pos:] if not encrypted else b""
        if from_client:
            self._requests[request_id] = frame
            if len(self._requests) > 1024:
                self._requests.pop(next(iter(self._requests)))
            nodes: tuple[str, ...] = ()
            if service_id is not None and not encrypted:
                try:
                    nodes = request_node_ids(service_id, rest)
                except DecodeError:
                    nodes = ()  # a chunked or cut body: the service is known, its nodes not
            return OpcuaServiceRequest(ts=ts, frame=frame, service_id=service_id,
                                       request_id=request_id, channel_id=channel_id,
                                       encrypted=encrypted, body=rest[:BODY_LIMIT], node_ids=nodes,
                                       **where)
        status = struct.unpack_from("<I", rest, 12)[0] if len(rest) >= 16 else None
        return OpcuaServiceResponse(ts=ts, frame=frame, service_id=service_id,
                                    request_id=request_id, channel_id=channel_id,
                                    encrypted=encrypted, body=rest[:BODY_LIMIT], status=status,
                                    request_frame=self._requests.pop(request_id, None),
                                    **where)


SPEC = DecoderSpec(name="opcua", transport="tcp", ports=frozenset({4840, 4843}),
                   factory=OpcuaDecoder, probe=identify.is_opcua, priority=30,
                   aliases=("opc-ua",))

# Service request encoding ids that change or command the server, in plc-control's names.
PLC_SERVICES = {673: "opcua-write", 712: "opcua-call"}


def plc_command(event: OpcuaServiceRequest) -> list[PlcCommand]:
    service = event.service_id
    if not isinstance(service, int) or service not in PLC_SERVICES:
        return []
    # ``target`` is one node id, as the other protocols name one block or tag: the node written,
    # or the method called (its object goes beside it, under ``object``).
    nodes = event.node_ids
    values: dict[str, object] = {"service": service}
    if service == 712 and len(nodes) >= 2:
        values["object"] = [nodes[0]]
        nodes = nodes[1:]
    return [PlcCommand(**where(event), protocol="opcua", operation=PLC_SERVICES[service],
                       target=nodes[0] if nodes else "", values=values)]


_MSG_HEADER = struct.Struct("<III")  # message size, secure channel id, token id (then sequence, request id)
_REQUEST, _RESPONSE = (OpcuaServiceRequest.kind,), (OpcuaServiceResponse.kind,)


class OpcuaRun(FoldRun):
    """OPC UA's batch path: final MSG chunks of an unsecured channel whose service is none of
    plc-control's (reads, publishes, browses ... and every answer), one per segment, folded
    (the request's frame remembered for its answer, as ``OpcuaDecoder`` does)."""

    decoder_type = OpcuaDecoder

    def fold(self, decoder: Any, from_client: bool, buf: bytes, off: int, size: int,
             frame: int) -> tuple[str, ...] | None:
        # "MSGF" of exactly this segment, a 4-byte numeric type id (namespace 0) first in the body
        if (size < 28 or buf[off:off + 4] != b"MSGF" or buf[off + 24] != 1 or buf[off + 25]
                or _MSG_HEADER.unpack_from(buf, off + 4)[0] != size):
            return None
        buffer = decoder._buffers[from_client]
        if buffer._data or decoder._chunks or decoder._policy != POLICY_NONE or size > buffer.limit:
            return None
        request_id = buf[off + 20] | buf[off + 21] << 8 | buf[off + 22] << 16 | buf[off + 23] << 24
        if from_client:
            if buf[off + 26] | buf[off + 27] << 8 in PLC_SERVICES:
                return None
            requests = decoder._requests
            requests[request_id] = frame
            if len(requests) > 1024:
                requests.pop(next(iter(requests)))
            buffer.resyncing = False
            return _REQUEST
        decoder._requests.pop(request_id, None)
        buffer.resyncing = False
        return _RESPONSE


PROTOCOL = register_protocol(ProtocolSpec(
    name="opcua", module=__name__, decoders=(SPEC,), run=OpcuaRun,
    adapters={OpcuaServiceRequest: Adapter(plc_command, (PlcCommand,)),
              OpcuaServiceResponse: IGNORED, OpcuaHelloRequest: IGNORED,
              OpcuaHelloResponse: IGNORED, OpcuaChannelRequest: IGNORED,
              OpcuaChannelResponse: IGNORED},
))
