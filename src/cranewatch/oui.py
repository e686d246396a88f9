"""Who made a network card: the vendor of a MAC address's OUI, from a maintained database.

No vendor list is bundled: the maintained ones are read where the system has them, at run
time — Debian's ``ieee-data`` (``/usr/share/ieee-data/oui.txt``, the IEEE registry itself) or
Wireshark's ``manuf`` (``/usr/share/wireshark/manuf``, from ``libwireshark-data``; GPL-2.0+,
so it is read, never copied into this Apache-2.0 package). ``CRANEWATCH_OUI`` names another
file in either format. ``OuiTable.source`` says which file answered, or why none did.

Locally administered addresses (second bit of the first octet set: virtual machines,
containers, labs) have no vendor by design, and multicast ones name no card; both are said so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATHS = ("/usr/share/ieee-data/oui.txt", "/usr/share/wireshark/manuf")
ENVIRONMENT = "CRANEWATCH_OUI"

# ieee-data:  "00-0E-8C   (hex)\t\tSiemens AG"
_IEEE_LINE = re.compile(r"^([0-9A-Fa-f]{2}-[0-9A-Fa-f]{2}-[0-9A-Fa-f]{2})\s+\(hex\)\s+(.+?)\s*$")
# manuf:      "00:0E:8C\tSiemens\tSiemens AG"  or  "00:1B:C5:00:00:00/36\tShort\tLong name"
_MANUF_LINE = re.compile(r"^([0-9A-Fa-f]{2}(?:[:\-.][0-9A-Fa-f]{2}){2,5})(?:/(\d+))?\s+(\S+)(?:\s+(.+?))?\s*$")


@dataclass(frozen=True, slots=True)
class OuiTable:
    """MAC prefix → vendor. ``prefixes`` maps (bits, prefix as int) to a name."""

    source: str  # the file read, or why there is none
    found: bool
    prefixes: dict[tuple[int, int], str] = field(default_factory=dict)

    def vendor(self, mac: str | None) -> str | None:
        """The vendor of ``mac``; None when unknown. Locally administered and multicast
        addresses are named as such rather than looked up."""
        value = _mac_int(mac)
        if value is None:
            return None
        first = value >> 40
        if first & 0x01:
            return "multicast/broadcast address (no vendor)"
        if first & 0x02:
            return "locally administered address (no vendor)"
        for bits in sorted({b for b, _ in self.prefixes}, reverse=True):  # longest prefix first
            name = self.prefixes.get((bits, value >> (48 - bits)))
            if name is not None:
                return name
        return None


def _mac_int(mac: str | None) -> int | None:
    if not mac:
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", mac)
    if len(digits) != 12:
        return None
    return int(digits, 16)


def parse_oui(text: str) -> dict[tuple[int, int], str]:
    """The prefixes of an ieee-data ``oui.txt`` or a Wireshark ``manuf`` text."""
    out: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _IEEE_LINE.match(line)
        if m:
            out[(24, int(m.group(1).replace("-", ""), 16))] = m.group(2)
            continue
        m = _MANUF_LINE.match(line)
        if m:
            digits = re.sub(r"[^0-9A-Fa-f]", "", m.group(1))
            bits = int(m.group(2)) if m.group(2) else len(digits) * 4
            if not 8 <= bits <= 48 or bits > len(digits) * 4:
                continue
            value = int(digits.ljust(12, "0"), 16) >> (48 - bits)
            out[(bits, value)] = m.group(4) or m.group(3)
    return out


def load_oui(paths: tuple[str, ...] | None = None) -> OuiTable:
    """The first readable vendor database of ``CRANEWATCH_OUI`` and ``DEFAULT_PATHS``."""
    wanted = paths if paths is not None else tuple(
        p for p in (os.environ.get(ENVIRONMENT), *DEFAULT_PATHS) if p)
    for path in wanted:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        prefixes = parse_oui(text)
        if prefixes:
            return OuiTable(path, True, prefixes)
    tried = ", ".join(wanted) or "no path"
    return OuiTable(f"no OUI database found (tried {tried}; install Debian's ieee-data or "
                    f"libwireshark-data, or set {ENVIRONMENT})", False)
