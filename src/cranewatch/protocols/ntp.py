"""NTP (UDP 123): who keeps the crane's time, at which stratum, from which reference.

What matters on a crane: event logs and the PLC's clock must agree with the terminal's; a new
time source, a stratum change or mode-7/mode-6 queries (monlist reconnaissance and
amplification) show here. Each packet reports mode, version, stratum, reference id (a
four-letter source such as ``GPS`` at stratum 1, else an IPv4 address) and transmit time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import decode_error, endpoints
from cranewatch.protocols.registry import IGNORED, ProtocolSpec, register_protocol

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
MODES = {0: "reserved", 1: "symmetric-active", 2: "symmetric-passive", 3: "client", 4: "server",
         5: "broadcast", 6: "control", 7: "private"}
SERVER_MODES = frozenset({2, 4, 5})


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpTimeRequest(Event):
    """A client (mode 3), symmetric-active (1), control (6) or private (7) NTP packet."""

    kind: ClassVar[str] = "ntp_time_request"
    mode: int
    version: int
    stratum: int = 0
    reference: str = ""
    leap: int = 0
    poll: int = 0
    transmit_time: float | None = None

    @property
    def mode_name(self) -> str:
        return MODES.get(self.mode, str(self.mode))


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpTimeResponse(NtpTimeRequest):
    """A server (mode 4), symmetric-passive (2) or broadcast (5) packet: the time source."""

    kind: ClassVar[str] = "ntp_time_response"


@lru_cache(maxsize=1024)  # a crane's few time sources name the same references all day
def reference_id(stratum: int, raw: bytes) -> str:
    """Stratum 0/1: ASCII source code (GPS, PPS, kiss code); higher strata: an IPv4 address."""
    if stratum <= 1:
        return raw.rstrip(b"\x00").decode("ascii", "replace")
    return ".".join(str(b) for b in raw)


_STRATUM_POLL_TRANSMIT = struct.Struct(">xBb37xII")  # bytes 1, 2 and 40-47 of the header


class NtpDecoder(ReportsProblems):
    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._where = (endpoints(ctx, False), endpoints(ctx, True))

    def gap(self, from_client: bool) -> None:
        return None

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        if not data:
            raise decode_error("empty NTP datagram", self.ctx, frame)
        leap, version, mode = data[0] >> 6, (data[0] >> 3) & 7, data[0] & 7
        where = self._where[from_client]
        cls = NtpTimeResponse if mode in SERVER_MODES else NtpTimeRequest
        if mode in (6, 7):  # control and private messages have their own short layouts
            return [cls(ts=ts, frame=frame, mode=mode, version=version, leap=leap, **where)]
        if len(data) < 48:
            raise decode_error(f"NTP packet of {len(data)} bytes, 48 needed", self.ctx, frame)
        stratum, poll, seconds, fraction = _STRATUM_POLL_TRANSMIT.unpack_from(data)
        transmit = seconds - NTP_EPOCH_OFFSET + fraction / 2**32 if seconds else None
        return [cls(ts=ts, frame=frame, mode=mode, version=version, stratum=stratum,
                    reference=reference_id(stratum, data[12:16]), leap=leap, poll=poll,
                    transmit_time=transmit, **where)]


SPEC = DecoderSpec(name="ntp", transport="udp", ports=frozenset({123}),
                   factory=NtpDecoder, probe=None, priority=60)

PROTOCOL = register_protocol(ProtocolSpec(
    name="ntp", module=__name__, decoders=(SPEC,),
    adapters={NtpTimeRequest: IGNORED, NtpTimeResponse: IGNORED},
))
