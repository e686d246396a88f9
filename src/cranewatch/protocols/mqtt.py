"""MQTT 3.1, 3.1.1 and 5 over TCP (1883, 8883 when not TLS): connect, publish, subscribe.

What matters on a crane: telemetry gateways publish crane data to brokers, sometimes outside
the terminal. Who connects (client id, whether a user name and password are sent), which
topics are published with which QoS, what the payload is (kept, bounded, for the leak and
content checks) and who subscribes to what. MQTT 5 properties are skipped by their length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import MqttPublish, as_bytes, as_text, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import PduBuffer, decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, Adapter, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE = 8, 9, 10
PINGREQ, DISCONNECT = 12, 14
TYPE_NAMES = {1: "connect", 2: "connack", 3: "publish", 4: "puback", 5: "pubrec", 6: "pubrel",
              7: "pubcomp", 8: "subscribe", 9: "suback", 10: "unsubscribe", 11: "unsuback",
              12: "pingreq", 13: "pingresp", 14: "disconnect", 15: "auth"}
PAYLOAD_LIMIT = 4096
PACKET_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConnectRequest(Event):
    """CONNECT: ``protocol_level`` 3 (3.1), 4 (3.1.1) or 5; credentials present or not."""

    kind: ClassVar[str] = "mqtt_connect_request"
    client_id: str
    protocol_name: str
    protocol_level: int
    username_present: bool = False
    password_present: bool = False
    username: str | None = None
    clean_session: bool = False
    keep_alive: int = 0
    will_topic: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConnectResponse(Event):
    """CONNACK: ``return_code`` 0 accepted (MQTT 5: reason code)."""

    kind: ClassVar[str] = "mqtt_connect_response"
    return_code: int
    session_present: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttPublishRequest(Event):
    """PUBLISH (either direction): topic, QoS, retain, payload (first 4 KiB) and its size."""

    kind: ClassVar[str] = "mqtt_publish_request"
    topic: str
    qos: int
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    payload: bytes = b""
    payload_size: int = 0
    from_client: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSubscribeRequest(Event):
    """SUBSCRIBE or UNSUBSCRIBE (``unsubscribe``): topic filters and requested QoS."""

    kind: ClassVar[str] = "mqtt_subscribe_request"
    packet_id: int
    topics: tuple[str, ...]
    qos: tuple[int, ...] = ()
    unsubscribe: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttControlRequest(Event):
    """Any other control packet (acks, ping, disconnect): its type and packet id if any."""

    kind: ClassVar[str] = "mqtt_control_request"
    packet_type: int
    packet_id: int | None = None
    from_client: bool = True

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.packet_type, str(self.packet_type))


def mqtt_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 2:
        return None
    if buf[pos] >> 4 == 0:
        raise DecodeError("MQTT packet type 0 is reserved")
    if buf[pos + 1] < 0x80:  # under 128 bytes: a one-byte length, most telemetry
        return 2 + buf[pos + 1]
    value = 0
    for i in range(4):
        if pos + 1 + i >= len(buf):
            return None
        byte = buf[pos + 1 + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return 2 + i + value
    raise DecodeError("MQTT remaining length longer than 4 bytes")


class _Reader:
    """Reads MQTT fields from one packet body, raising DecodeError when it runs out."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("MQTT packet cut short")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise DecodeError("MQTT packet cut short")
        self.pos += 2
        return self.data[self.pos - 2] << 8 | self.data[self.pos - 1]

    def blob(self) -> bytes:
        data, start = self.data, self.pos + 2  # u16 length, then the bytes (read inline: hot)
        if start > len(data):
            raise DecodeError("MQTT packet cut short")
        end = start + (data[start - 2] << 8 | data[start - 1])
        if end > len(data):
            self.pos = start
            raise DecodeError("MQTT string longer than its packet")
        self.pos = end
        return data[start:end]

    def text(self) -> str:
        return self.blob().decode("utf-8", "replace")

    def varint(self) -> int:
        value = 0
        for i in range(4):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise DecodeError("MQTT variable integer longer than 4 bytes")

    def skip_properties(self) -> None:
        size = self.varint()
        if self.pos + size > len(self.data):
            raise DecodeError("MQTT 5 properties longer than their packet")
        self.pos += size


class MqttDecoder(ReportsProblems):
    """Decodes one MQTT connection; the protocol level of CONNECT decides MQTT 5 parsing."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffers = (PduBuffer(limit=PACKET_LIMIT, source=ctx.source),
                         PduBuffer(limit=PACKET_LIMIT, source=ctx.source))
        self.level = 4
        self._where = (endpoints(ctx, False), endpoints(ctx, True))

    def gap(self, from_client: bool) -> None:
        self._buffers[from_client].gap()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        for packet in self._buffers[from_client].pdus(data, mqtt_length, frame):
            try:
                events.append(self._packet(from_client, packet, ts, frame))
            except DecodeError as exc:  # that packet is lost, not the ones after it
                self.report(decode_error(f"MQTT: {exc.message}", self.ctx, frame))
        return events

    def _packet(self, from_client: bool, packet: bytes, ts: float, frame: int) -> Event:
        header = packet[0]
        ptype, flags = header >> 4, header & 0x0F
        pos = 1
        while packet[pos] & 0x80:
            pos += 1
        body = _Reader(packet, pos + 1)
        where = self._where[from_client]
        v5 = self.level == 5
        if ptype == PUBLISH:  # first: nearly every packet of a telemetry connection
            qos = (flags >> 1) & 3
            if qos == 3:
                raise DecodeError("PUBLISH with QoS 3")
            topic = body.text()
            packet_id = body.u16() if qos else None
            if v5:
                body.skip_properties()
            payload = packet[body.pos:]
            return MqttPublishRequest(ts=ts, frame=frame, topic=topic, qos=qos,
                                      retain=bool(flags & 1), dup=bool(flags & 8),
                                      packet_id=packet_id, payload=payload[:PAYLOAD_LIMIT],
                                      payload_size=len(payload), from_client=from_client,
                                      **where)
        if ptype == CONNECT:
            name = body.text()
            level = body.u8()
            self.level = level
            cflags = body.u8()
            keep_alive = body.u16()
            if level == 5:
                body.skip_properties()
            client_id = body.text()
            will_topic = username = None
            if cflags & 0x04:
                if level == 5:
                    body.skip_properties()
                will_topic = body.text()
                body.blob()
            if cflags & 0x80:
                username = body.text()
            return MqttConnectRequest(ts=ts, frame=frame, client_id=client_id, protocol_name=name,
                                      protocol_level=level, username_present=bool(cflags & 0x80),
                                      password_present=bool(cflags & 0x40), username=username,
                                      clean_session=bool(cflags & 0x02), keep_alive=keep_alive,
                                      will_topic=will_topic, **where)
        if ptype == CONNACK:
            ack_flags = body.u8()
            code = body.u8()
            return MqttConnectResponse(ts=ts, frame=frame, return_code=code,
                                       session_present=bool(ack_flags & 1),
                                       **where)
        if ptype in (SUBSCRIBE, UNSUBSCRIBE):
            packet_id = body.u16()
            if v5:
                body.skip_properties()
            topics: list[str] = []
            qos_list: list[int] = []
            while body.pos < len(packet) and len(topics) < 256:
                topics.append(body.text())
                if ptype == SUBSCRIBE:
                    qos_list.append(body.u8() & 3)
            return MqttSubscribeRequest(ts=ts, frame=frame, packet_id=packet_id,
                                        topics=tuple(topics), qos=tuple(qos_list),
                                        unsubscribe=ptype == UNSUBSCRIBE,
                                        **where)
        packet_id = None
        if 4 <= ptype <= 11 and len(packet) >= body.pos + 2:
            packet_id = body.u16()
        return MqttControlRequest(ts=ts, frame=frame, packet_type=ptype, packet_id=packet_id,
                                  from_client=from_client, **where)


SPEC = DecoderSpec(name="mqtt", transport="tcp", ports=frozenset({1883}),
                   factory=MqttDecoder, probe=identify.is_mqtt, priority=25)


def publish(event: MqttPublishRequest) -> list[MqttPublish]:
    return [MqttPublish(**where(event), topic=as_text(event.topic), payload=as_bytes(event.payload))]


# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

def zeek_mqtt_connect(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    version = str(record.get("proto_version", ""))
    level = {"3.1": 3, "3.1.1": 4, "5.0": 5}.get(version, 0)
    result.note("mqtt_connect.log: whether a user name or password was sent is not logged")
    return [MqttConnectRequest(client_id=str(record.get("client_id", "") or ""),
                               protocol_name=str(record.get("proto_name", "") or ""),
                               protocol_level=level, will_topic=zeek.opt_text(record.get("will_topic")),
                               **zeek.ends(record))]


def zeek_mqtt_publish(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    qos_text = str(record.get("qos", ""))
    qos = {"at most once": 0, "at least once": 1, "exactly once": 2}.get(qos_text, zeek.integer(qos_text) or 0)
    payload = str(record.get("payload", "") or "").encode("utf-8", "replace")
    size = zeek.integer(record.get("payload_len")) or len(payload)
    if size > len(payload):
        result.note("mqtt_publish.log: payloads are cut to Zeek's payload size limit")
    from_client = bool(record.get("from_client", True))
    return [MqttPublishRequest(topic=str(record.get("topic", "") or ""), qos=qos,
                               retain=bool(record.get("retain", False)), payload=payload,
                               payload_size=size, from_client=from_client,
                               **zeek.ends(record, from_client))]


def zeek_mqtt_subscribe(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    topics = record.get("topics", ()) or ()
    topics = topics if isinstance(topics, tuple) else (str(topics),)
    qos = tuple(zeek.integer(q) or 0 for q in (record.get("qos_levels", ()) or ()))
    return [MqttSubscribeRequest(packet_id=0, topics=tuple(str(t) for t in topics), qos=qos,
                                 unsubscribe="UNSUBSCRIBE" in str(record.get("action", "")),
                                 **zeek.ends(record))]


PROTOCOL = register_protocol(ProtocolSpec(
    name="mqtt", module=__name__, decoders=(SPEC,),
    adapters={MqttPublishRequest: Adapter(publish, (MqttPublish,)), MqttConnectRequest: IGNORED,
              MqttConnectResponse: IGNORED, MqttSubscribeRequest: IGNORED,
              MqttControlRequest: IGNORED},
    zeek={"mqtt_connect": zeek_mqtt_connect, "mqtt_publish": zeek_mqtt_publish, "mqtt_subscribe": zeek_mqtt_subscribe},
))
