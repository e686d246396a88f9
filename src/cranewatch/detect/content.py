"""Container data in clear text: ISO 6346 numbers (check digit verified), UN/LOCODEs, OCR events.

``find_container_data`` is pure: bytes in, what it found out. DNS labels and URLs often carry
data encoded (hex, base32, base64) to survive the channel, so ``decoded_views`` also offers
those decodings of a token for the same search; and whoever carries a day of OCR events out
compresses them first, so gzip and zlib streams are inflated (``inflated``, bounded).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from functools import cache, lru_cache

from cranewatch.detect.rules import rule_data

CONTAINER_RE = re.compile(rb"(?<![A-Z0-9])([A-Z]{3}[UJZ])\s?(\d{6})\s?-?(\d)(?![0-9])")
WORD5_RE = re.compile(rb"(?<![A-Za-z])([A-Z]{5})(?![A-Za-z])")
# Linear time on attacker text: the key starts only where a word starts (the lookbehind) and
# its letters are taken whole (possessive ``++``); without both, a run of n letters cost n²
# steps (20 KB of letters: 5.6 s). The same match as the plain pattern: the continuation never
# starts with a letter, so a key is always a whole run of letters.
KEYED_LOCODE_RE = re.compile(rb'"?(?<![A-Za-z_])([A-Za-z_]++)"?\s*+[:=]\s*+"?([A-Z]{2}[A-Z2-9]{3})\b')
OCR_KEYS = (b"container", b"bay", b"row", b"tier", b"pol", b"pod", b"move")
ENCODED_RE = re.compile(rb"[A-Za-z0-9+/=_-]{16,}")
GZIP_MAGIC = b"\x1f\x8b\x08"
MAX_INFLATED = 1 << 20  # bytes of a compressed stream looked at: a bomb costs no more
# Length budgets (the attacker writes the text): the clear search reads at most SCAN_BUDGET
# bytes of one payload (more than any decoder keeps: a 64 KiB URI and Host, an 8 KiB body),
# the deep search (decodings, inflated streams; cached) at most DEEP_BUDGET.
SCAN_BUDGET = 256 * 1024
DEEP_BUDGET = 4096


def letter_value(ch: str) -> int:
    """ISO 6346 letter values: A=10, then skipping multiples of 11 (B=12 ... Z=38)."""
    value = 10
    for _ in range(ord("A"), ord(ch)):
        value += 1
        if value % 11 == 0:
            value += 1
    return value


@cache
def _letter_values() -> dict[str, int]:
    return {chr(c): letter_value(chr(c)) for c in range(ord("A"), ord("Z") + 1)}


def check_digit(code: str) -> int:
    """Check digit of the first 10 characters of a container number."""
    values = _letter_values()
    total = 0
    for position, ch in enumerate(code[:10]):
        total += (values[ch] if ch.isalpha() else int(ch)) * (1 << position)
    return total % 11 % 10


def is_container_number(text: str) -> bool:
    text = text.replace(" ", "").replace("-", "").upper()
    if not re.fullmatch(r"[A-Z]{3}[UJZ]\d{7}", text):
        return False
    return check_digit(text) == int(text[10])


@dataclass(frozen=True, slots=True)
class ContainerData:
    """What a payload gave away: container numbers, port codes, whether it is an OCR event."""

    containers: tuple[str, ...] = ()
    locodes: tuple[str, ...] = ()
    ocr_event: bool = False
    encoding: str = "clear"

    def __bool__(self) -> bool:
        return bool(self.containers or self.ocr_event)


@cache
def _ports() -> frozenset[str]:
    return frozenset(rule_data("locodes")["ports"])


@cache
def _context_keys() -> frozenset[str]:
    return frozenset(k.lower() for k in rule_data("locodes")["context_keys"])


def find_container_data(data: bytes, encoding: str = "clear") -> ContainerData:
    """Search one payload (any bytes, its first ``SCAN_BUDGET``) for container data; cheap
    when there is none, linear in the length always."""
    data = data[:SCAN_BUDGET]
    containers: list[str] = []
    upper = data.upper()
    for m in CONTAINER_RE.finditer(upper):
        number = (m.group(1) + m.group(2) + m.group(3)).decode()
        if check_digit(number) == int(number[10]) and number not in containers:
            containers.append(number)
    locodes: list[str] = []
    ports = _ports()
    for m in WORD5_RE.finditer(data):
        word = m.group(1).decode()
        if word in ports and word not in locodes:
            locodes.append(word)
    keys = _context_keys()
    for m in KEYED_LOCODE_RE.finditer(data):
        if m.group(1).decode().lower() in keys:
            word = m.group(2).decode()
            if word not in locodes:
                locodes.append(word)
    lowered = data.lower()
    ocr_event = bool(containers) and sum(k in lowered for k in OCR_KEYS) >= 3
    return ContainerData(tuple(containers[:50]), tuple(locodes[:50]), ocr_event, encoding)


def decoded_views(token: bytes) -> list[tuple[str, bytes]]:
    """Plausible decodings of an encoded token (hex, base32, base64/url-safe)."""
    views: list[tuple[str, bytes]] = []
    compact = token.replace(b".", b"").replace(b"-", b"")
    if len(compact) % 2 == 0 and re.fullmatch(rb"[0-9A-Fa-f]+", compact):
        try:
            views.append(("hex", binascii.unhexlify(compact)))
        except binascii.Error:
            pass
    b32 = compact.upper().rstrip(b"=")
    if re.fullmatch(rb"[A-Z2-7]+", b32):
        try:
            views.append(("base32", base64.b32decode(b32 + b"=" * (-len(b32) % 8))))
        except binascii.Error:
            pass
    if re.fullmatch(rb"[A-Za-z0-9+/_-]+=*", token):
        try:
            padded = token + b"=" * (-len(token) % 4)
            views.append(("base64", base64.urlsafe_b64decode(padded.replace(b"+", b"-").replace(b"/", b"_"))))
        except (binascii.Error, ValueError):
            pass
    return views


def inflated(data: bytes) -> tuple[str, bytes] | None:
    """The bytes of a gzip or zlib stream at the start of ``data``, up to ``MAX_INFLATED``
    (a stream cut short by the capture gives what it held); None when it is neither."""
    if data[:3] == GZIP_MAGIC:
        name, wbits = "gzip", 16 + zlib.MAX_WBITS
    elif len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 \
            and ((data[0] << 8) | data[1]) % 31 == 0:
        name, wbits = "zlib", zlib.MAX_WBITS
    else:
        return None
    try:
        return name, zlib.decompressobj(wbits).decompress(data, MAX_INFLATED)
    except zlib.error:
        return None


def compressed_views(data: bytes) -> list[tuple[str, bytes]]:
    """Inflated streams in a payload: at its start, after its first line (an HTTP request's
    body as the detectors see it), and wherever a gzip header stands in its first 4 KiB."""
    starts = {0}
    newline = data.find(b"\n", 0, 4096)
    if newline >= 0:
        starts.add(newline + 1)
    magic = data.find(GZIP_MAGIC, 0, 4096)
    if magic >= 0:
        starts.add(magic)
    views = []
    for start in sorted(starts):
        view = inflated(data[start:])
        if view is not None and view[1]:
            views.append(view)
    return views


def find_container_data_deep(data: bytes) -> ContainerData:
    """``find_container_data`` on the clear bytes (their first ``DEEP_BUDGET``), on what
    compressed streams in them hold, then on decodings of long tokens in them."""
    return _find_container_data_deep(data[:DEEP_BUDGET])


@lru_cache(maxsize=4096)
def _find_container_data_deep(data: bytes) -> ContainerData:
    """Cached, and bounded by the budget: DNS names and URLs repeat all day on a crane network."""
    found = find_container_data(data)
    if found:
        return found
    for encoding, view in compressed_views(data):
        hit = find_container_data(view, encoding)
        if hit:
            return hit
    joined = data.replace(b".", b"") if len(data) < 512 else data
    for token in [joined, *ENCODED_RE.findall(data)][:32]:
        for encoding, view in decoded_views(token):
            hit = find_container_data(view, encoding)
            if hit:
                return hit
    return found
