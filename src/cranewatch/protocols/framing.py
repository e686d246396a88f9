"""Shared plumbing of the stream decoders: bounded per-direction buffers, PDU framing, endpoints.

Every TCP protocol here is either length-prefixed (TPKT, ENIP, OPC UA, MQTT, DNS over TCP,
TLS records, SSH packets) or line-framed (HTTP headers, banners). ``PduBuffer`` holds the
unconsumed bytes of one direction, cuts whole PDUs with a protocol's ``length_of`` function
and refuses to grow past a bound, so a broken or hostile peer costs bounded memory. After a
gap the next PDU boundary is unknown: the buffer drops bytes silently until a header that the
protocol accepts appears again instead of reporting every fragment as an error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypedDict

from cranewatch.errors import DecodeError, Location
from cranewatch.protocols.base import FlowContext

# A length function gets the buffered bytes and the offset of a PDU start and returns the
# length of that PDU, or None when more bytes are needed to tell; it raises DecodeError when
# the header is invalid. The offset spares a copy of the buffer per PDU.
LengthOf = Callable[[bytes | bytearray, int], int | None]

DEFAULT_LIMIT = 1 << 20  # no crane protocol PDU we decode is larger than 1 MiB


class PduBuffer:
    """The not yet framed bytes of one direction of one flow."""

    __slots__ = ("_data", "limit", "resyncing", "source")

    def __init__(self, limit: int = DEFAULT_LIMIT, source: str = "") -> None:
        self._data = bytearray()
        self.limit = limit
        self.resyncing = False
        self.source = source

    def __len__(self) -> int:
        return len(self._data)

    def gap(self) -> None:
        """Bytes were lost: forget the partial PDU and wait for a recognisable header."""
        self._data.clear()
        self.resyncing = True

    def clear(self) -> None:
        self._data.clear()

    def pdus(self, data: bytes, length_of: LengthOf, frame: int) -> Iterator[bytes]:
        """Add ``data`` and yield every complete PDU now buffered.

        Raises DecodeError (after dropping the buffered bytes) when a header is invalid,
        except while resynchronising after a gap, when the bytes are dropped silently.
        A PDU counts as consumed once yielded: when the caller stops early (its decoder
        raised on that PDU, or it wanted only one), the bytes after it stay buffered for
        the next call instead of being lost or given again.
        """
        if self._data:
            self._data += data
            buf: bytes | bytearray = self._data
        else:
            buf = data  # common case: one whole PDU per segment, no copy
        pos = 0
        end = len(buf)
        dropped = False
        try:
            while pos < end:
                try:
                    size = length_of(buf, pos)
                except DecodeError:
                    dropped = True
                    self._data.clear()
                    if self.resyncing:
                        return
                    self.resyncing = True  # what follows a broken header is not a PDU start
                    raise
                if size is None:
                    if end - pos > self.limit:
                        dropped = True
                        self._data.clear()
                        self.resyncing = True
                        raise DecodeError(f"PDU header announces more than {self.limit} bytes",
                                          Location(file=self.source or None, frame=frame))
                    break
                if size <= 0:
                    dropped = True
                    self._data.clear()
                    self.resyncing = True
                    raise DecodeError("PDU length of zero", Location(file=self.source or None, frame=frame))
                if size > self.limit:
                    dropped = True
                    self._data.clear()
                    if self.resyncing:
                        return
                    self.resyncing = True
                    raise DecodeError(f"PDU of {size} bytes exceeds the {self.limit}-byte bound",
                                      Location(file=self.source or None, frame=frame))
                if end - pos < size:
                    break
                self.resyncing = False
                pdu = bytes(buf[pos:pos + size])
                pos += size
                yield pdu
        finally:
            if not dropped:
                if buf is self._data:
                    del self._data[:pos]
                elif pos < end:
                    self._data = bytearray(buf[pos:])


class Endpoints(TypedDict):
    """The addressing fields every Event takes, for ``Event(**endpoints(...))``."""

    src: str
    dst: str
    sport: int
    dport: int
    source: str


def endpoints(ctx: FlowContext, from_client: bool) -> Endpoints:
    """``src``/``dst``/``sport``/``dport``/``source`` of a PDU sent in the given direction.

    Not cached: building the small dict costs less than hashing the context field by field
    for a cache lookup (and a DNS flow asks once or twice, a miss every time). Decoders of
    long-lived flows may keep both directions' dicts; they only unpack them (``**``).
    """
    if from_client:
        return {"src": ctx.client, "dst": ctx.server, "sport": ctx.client_port,
                "dport": ctx.server_port, "source": ctx.source}
    return {"src": ctx.server, "dst": ctx.client, "sport": ctx.server_port,
            "dport": ctx.client_port, "source": ctx.source}


def decode_error(message: str, ctx: FlowContext | None, frame: int) -> DecodeError:
    """A DecodeError located at the capture file and frame of the PDU."""
    return DecodeError(message, Location(file=(ctx.source or None) if ctx else None, frame=frame))


def ascii_digits(text: str) -> bool:
    """Whether ``text`` is a non-empty run of 0-9 (``str.isdigit`` also accepts "¹²³" and
    other Unicode digits that ``int`` refuses: latin-1 headers carry them)."""
    return text.isascii() and text.isdigit()


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text`` (0.0 for empty text); DNS tunnels score high."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def printable(data: bytes, limit: int = 200) -> str:
    """Bytes as text for evidence: latin-1 decoded, control characters escaped, bounded."""
    return data[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
