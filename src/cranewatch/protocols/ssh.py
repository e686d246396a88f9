"""SSH on any port: identification banners and the HASSH / HASSHserver fingerprints.

What matters on a crane: an SSH session into a controller or gateway is remote access; its
banner names the software (``OpenSSH_8.4p1``, ``dropbear_2019.78``, an embedded stack) and
HASSH fingerprints the client implementation even when banners lie (Salesforce HASSH:
MD5 of ``kex;encryption;mac;compression`` of the client's KEXINIT, server-to-client lists for
HASSHserver). Everything after the key exchange is encrypted and not looked at.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import ClassVar

from cranewatch.detect.facts import RemoteSession, as_text, client_where
from cranewatch.errors import DecodeError
from cranewatch.protocols import identify
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext, ReportsProblems
from cranewatch.protocols.framing import PduBuffer, decode_error, endpoints, printable
from cranewatch.protocols.registry import Adapter, ProtocolSpec, register_protocol
from cranewatch.sources import zeek_fields as zeek

MSG_KEXINIT = 20
BANNER_LIMIT = 255  # RFC 4253 4.2: at most 255 characters including CR LF
PRE_BANNER_LIMIT = 8192  # servers may send other lines before the banner


@dataclass(frozen=True, slots=True, kw_only=True)
class SshBannerRequest(Event):
    """The client's identification string ``SSH-protoversion-softwareversion comments``."""

    kind: ClassVar[str] = "ssh_banner_request"
    banner: str
    proto_version: str = ""
    software: str = ""
    from_client: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SshBannerResponse(SshBannerRequest):
    """The server's identification string."""

    kind: ClassVar[str] = "ssh_banner_response"
    from_client: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SshKexinitRequest(Event):
    """The client's KEXINIT: algorithm lists and HASSH (``hassh`` MD5, ``hassh_string``)."""

    kind: ClassVar[str] = "ssh_kexinit_request"
    hassh: str
    hassh_string: str
    kex_algorithms: tuple[str, ...] = ()
    host_key_algorithms: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    compression: tuple[str, ...] = ()
    from_client: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SshKexinitResponse(SshKexinitRequest):
    """The server's KEXINIT; ``hassh`` here is HASSHserver (server-to-client lists)."""

    kind: ClassVar[str] = "ssh_kexinit_response"
    from_client: bool = False


def ssh_packet_length(buf: bytes | bytearray, pos: int) -> int | None:
    if len(buf) - pos < 5:
        return None
    length = int.from_bytes(buf[pos:pos + 4], "big")
    if length < 5 or length > 35000 * 8:
        raise DecodeError(f"SSH packet length {length} out of range")
    return 4 + length


def parse_kexinit(payload: bytes, from_client: bool) -> dict[str, object]:
    """HASSH and the name-lists of a KEXINIT payload (message byte, cookie, ten name-lists)."""
    pos = 17
    lists: list[tuple[str, ...]] = []
    for _ in range(10):
        if pos + 4 > len(payload):
            raise DecodeError("KEXINIT name-list cut short")
        size = struct.unpack_from(">I", payload, pos)[0]
        if pos + 4 + size > len(payload):
            raise DecodeError("KEXINIT name-list longer than the packet")
        text = payload[pos + 4:pos + 4 + size].decode("ascii", "replace")
        lists.append(tuple(text.split(",")) if text else ())
        pos += 4 + size
    kex, host_key, enc_cs, enc_sc, mac_cs, mac_sc, comp_cs, comp_sc = lists[:8]
    enc, mac, comp = (enc_cs, mac_cs, comp_cs) if from_client else (enc_sc, mac_sc, comp_sc)
    hassh_string = ";".join(",".join(x) for x in (kex, enc, mac, comp))
    return {"hassh": hashlib.md5(hassh_string.encode(), usedforsecurity=False).hexdigest(),
            "hassh_string": hassh_string, "kex_algorithms": kex, "host_key_algorithms": host_key,
            "ciphers": enc, "macs": mac, "compression": comp}


class SshDecoder(ReportsProblems):
    """Decodes banners and KEXINITs of one SSH connection, then stops."""

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx
        self._lines = [bytearray(), bytearray()]
        self._banner_seen = [False, False]
        self._packets = (PduBuffer(limit=1 << 18, source=ctx.source),
                         PduBuffer(limit=1 << 18, source=ctx.source))
        self._done = [False, False]

    @property
    def finished(self) -> bool:
        """Both sides past their KEXINIT (or given up): the pipeline stops feeding the flow."""
        return self._done[0] and self._done[1]

    def gap(self, from_client: bool) -> None:
        side = int(from_client)
        if self._banner_seen[side]:
            self._done[side] = True  # a hole in the binary packet stream: nothing left to learn
        self._lines[side].clear()

    def _feed(self, from_client: bool, data: bytes, ts: float, frame: int,
              events: list[Event]) -> list[Event] | None:
        side = int(from_client)
        if self._done[side]:
            return []
        where = endpoints(self.ctx, from_client)
        if not self._banner_seen[side]:
            pending = self._lines[side]
            pending += data
            while True:
                end = pending.find(b"\n")
                if end < 0:
                    if len(pending) > PRE_BANNER_LIMIT:
                        pending.clear()
                        self._done[side] = True
                        raise decode_error("no SSH identification string in the first 8 KiB",
                                           self.ctx, frame)
                    return events
                line = bytes(pending[:end]).rstrip(b"\r")
                del pending[:end + 1]
                if line.startswith(b"SSH-"):
                    break
            banner = printable(line, BANNER_LIMIT)
            parts = banner.split("-", 2)
            cls = SshBannerRequest if from_client else SshBannerResponse
            events.append(cls(ts=ts, frame=frame, banner=banner,
                              proto_version=parts[1] if len(parts) > 1 else "",
                              software=parts[2].split(" ", 1)[0] if len(parts) > 2 else "",
                              from_client=from_client, **where))
            self._banner_seen[side] = True
            if not line.startswith((b"SSH-2.0", b"SSH-1.99")):
                self._done[side] = True  # SSH-1 has no KEXINIT to fingerprint
                return events
            data = bytes(pending)
            pending.clear()
            if not data:
                return events
        try:
            packet = next(self._packets[from_client].pdus(data, ssh_packet_length, frame), None)
        except DecodeError:
            # No binary packet header where the KEXINIT must start: nothing more in this
            # direction can be read (one warning, not one per segment that follows).
            self._done[side] = True
            raise
        if packet is not None:
            padding = packet[4]
            payload = packet[5:len(packet) - padding] if padding < len(packet) - 5 else b""
            # the first binary packet of each side is its KEXINIT; after it, nothing is clear
            self._done[side] = True
            self._packets[from_client].clear()
            if payload[:1] == bytes([MSG_KEXINIT]):
                try:
                    fields = parse_kexinit(payload, from_client)
                except DecodeError as exc:
                    raise decode_error(f"SSH: {exc.message}", self.ctx, frame) from None
                cls2 = SshKexinitRequest if from_client else SshKexinitResponse
                events.append(cls2(ts=ts, frame=frame, from_client=from_client,
                                   **fields, **where))  # type: ignore[arg-type]
        return events


SPEC = DecoderSpec(name="ssh", transport="tcp", ports=frozenset({22, 2222}),
                   factory=SshDecoder, probe=identify.is_ssh, priority=5)


def session(event: SshBannerRequest | SshKexinitRequest) -> list[RemoteSession]:
    """An SSH session, from its client's side; a banner says which software speaks."""
    detail = event.banner if isinstance(event, SshBannerRequest) else ""
    return [RemoteSession(**client_where(event), protocol="ssh", detail=as_text(detail)[:120])]


_SESSION = Adapter(session, (RemoteSession,))

# --- Zeek logs (``sources.zeek``): the records of this protocol's logs as its events

def zeek_ssh(record: zeek.ZeekRecord, result: zeek.ZeekResult) -> list[Event]:
    events: list[Event] = []
    for banner_field, cls, orig in (("client", SshBannerRequest, True), ("server", SshBannerResponse, False)):
        banner = record.get(banner_field)
        if banner:
            parts = str(banner).split("-", 2)
            events.append(cls(banner=str(banner), proto_version=parts[1] if len(parts) > 1 else "",
                              software=parts[2].split(" ", 1)[0] if len(parts) > 2 else "",
                              from_client=orig, **zeek.ends(record, from_orig=orig)))
    if record.get("hassh"):
        events.append(SshKexinitRequest(hassh=str(record.get("hassh")),
                                        hassh_string=str(record.get("hasshAlgorithms", "") or ""),
                                        **zeek.ends(record)))
    if record.get("hasshServer"):
        events.append(SshKexinitResponse(hassh=str(record.get("hasshServer")),
                                         hassh_string=str(record.get("hasshServerAlgorithms", "") or ""),
                                         **zeek.ends(record, from_orig=False)))
    if not record.get("hassh"):
        result.note("ssh.log: HASSH is only logged with the hassh Zeek package")
    return events


PROTOCOL = register_protocol(ProtocolSpec(
    name="ssh", module=__name__, decoders=(SPEC,),
    adapters={SshBannerRequest: _SESSION, SshBannerResponse: _SESSION,
              SshKexinitRequest: _SESSION, SshKexinitResponse: _SESSION},
    zeek={"ssh": zeek_ssh},
))
