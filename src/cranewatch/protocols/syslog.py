"""Syslog over UDP 514 and TCP 514/601 (RFC 3164 and RFC 5424 messages, RFC 6587 framing).

What matters on a crane: controllers, switches and gateways log logins, configuration
changes and link events; which host logs to which collector, at which facility and
severity, and what it says. Messages are kept up to ``MESSAGE_LIMIT`` characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import Payload, where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints
from cranewatch.protocols.registry import Adapter, ProtocolSpec, register_protocol

MESSAGE_LIMIT = 2048
SEVERITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogMessageRequest(Event):
    """One syslog message: facility and severity from ``<PRI>``, header fields, the text.

    ``format``: ``rfc5424`` or ``rfc3164`` (``raw`` when only a priority is recognisable).
    """

    kind: ClassVar[str] = "syslog_message_request"
    facility: int
    severity: int
    host: str = ""
    app: str = ""
    timestamp: str = ""
    message: str = ""
    format: str = "rfc3164"

    @property
    def severity_name(self) -> str:
        return SEVERITIES[self.severity]


def parse_syslog(line: bytes) -> dict[str, object]:
    """Fields of one syslog message (without framing)."""
    if not line.startswith(b"<"):
        raise DecodeError("syslog message without <PRI>")
    close = line.find(b">", 1, 5)
    if close < 2 or not line[1:close].isdigit():
        raise DecodeError("syslog <PRI> malformed")
    pri = int(line[1:close])
    if pri > 191:
        raise DecodeError(f"syslog priority {pri} above 191")
    text = line[close + 1:].decode("utf-8", "replace").rstrip("\r\n\x00")
    fields: dict[str, object] = {"facility": pri >> 3, "severity": pri & 7}
    if text[:2] == "1 ":  # RFC 5424: VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG
        parts = text.split(" ", 6)
        if len(parts) >= 6:
            rest = parts[6] if len(parts) > 6 else ""
            if rest.startswith("["):
                end = rest.find("] ")
                rest = rest[end + 2:] if end >= 0 else ""
            elif rest.startswith("- "):
                rest = rest[2:]
            elif rest == "-":
                rest = ""
            fields.update(format="rfc5424", timestamp=parts[1], host=_nil(parts[2]),
                          app=_nil(parts[3]), message=rest.lstrip("\ufeff")[:MESSAGE_LIMIT])
            return fields
    if text[:3] in MONTHS and len(text) >= 16 and text[15] == " ":
        timestamp, rest = text[:15], text[16:]
        host, _, rest = rest.partition(" ")
        tag, sep, message = rest.partition(": ")
        if not sep or " " in tag:
            tag, message = "", rest
        fields.update(format="rfc3164", timestamp=timestamp, host=host,
                      app=tag.split("[", 1)[0], message=message[:MESSAGE_LIMIT])
        return fields
    fields.update(format="raw", message=text[:MESSAGE_LIMIT])
    return fields


def _nil(value: str) -> str:
    return "" if value == "-" else value


class SyslogDecoder(ReportsProblems):
    """UDP: one message per datagram. TCP: octet-counted (``LEN <PRI>...``) or newline-ended."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._buffer = bytearray()

    def gap(self, from_client: bool) -> None:
        if from_client:
            self._buffer.clear()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if not from_client:
            return []  # collectors do not answer
        if self.ctx.transport == "udp":
            return [self._event(data, ts, frame)]
        self._buffer += data
        while self._buffer:
            if self._buffer[:1].isdigit():
                space = self._buffer.find(b" ", 0, 10)
                if space < 0:
                    break
                count = bytes(self._buffer[:space])
                if not count.isdigit():
                    self._buffer.clear()
                    raise decode_error("syslog octet count is not a number", self.ctx, frame)
                size = int(count)
                if len(self._buffer) < space + 1 + size:
                    break
                message = bytes(self._buffer[space + 1:space + 1 + size])
                del self._buffer[:space + 1 + size]
            else:
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > 64 * 1024:
                        self._buffer.clear()
                        raise decode_error("syslog line over 64 KiB", self.ctx, frame)
                    break
                message = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
            if message.strip():
                events.append(self._event(message, ts, frame))
        return events

    def _event(self, message: bytes, ts: float, frame: int) -> Event:
        try:
            fields = parse_syslog(message)
        except DecodeError as exc:
            raise decode_error(exc.message, self.ctx, frame) from None
        return SyslogMessageRequest(ts=ts, frame=frame, **fields,  # type: ignore[arg-type]
                                    **endpoints(self.ctx, True))


SPEC_UDP = DecoderSpec(name="syslog", transport="udp", ports=frozenset({514}),
                       factory=SyslogDecoder, probe=identify.is_syslog, priority=85)
SPEC_TCP = DecoderSpec(name="syslog", transport="tcp", ports=frozenset({514, 601}),
                       factory=SyslogDecoder, probe=identify.is_syslog, priority=85)


def payload(event: SyslogMessageRequest) -> list[Payload]:
    """Log lines leave the crane too: what they say is checked like any clear payload."""
    text = f"{event.host} {event.app}: {event.message}"
    return [Payload(**where(event), from_client=True, data=text.encode(), transport="syslog")]


PROTOCOL = register_protocol(ProtocolSpec(
    name="syslog", module=__name__, decoders=(SPEC_UDP, SPEC_TCP), policy={"syslog": ("udp",)},
    adapters={SyslogMessageRequest: Adapter(payload, (Payload,))},
))
