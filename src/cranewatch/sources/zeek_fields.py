"""The fields of Zeek log records, read the same way by every mapping from a log to events.

``sources.zeek`` reads the logs into ``ZeekRecord``s; each protocol module maps its own logs
(``registry.ProtocolSpec.zeek``) with these readers: a value of the wrong type or range raises
``ValueError``/``TypeError`` (the reader reports that line and goes on), an absent one is a
default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cranewatch.errors import InputError
from cranewatch.protocols.base import Event

# Zeek timestamps are epoch seconds; past 2262 they no longer fit the nanoseconds of captures
MAX_TS = 9_223_372_036.0


@dataclass
class ZeekResult:
    """Events read from Zeek logs, what the logs could not tell, and which logs were read."""

    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # lines (or whole logs) that could not be read, each at file:line; reading went on
    problems: list[InputError] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass(frozen=True, slots=True)
class ZeekRecord:
    """One log line as a mapping of field name to parsed value, with where it came from."""

    path: str
    values: dict[str, Any]
    file: str
    line: int

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name, default)
        return default if value is None else value


def short(exc: BaseException) -> str:
    """An exception's text cut to 120 characters (it may quote a megabyte of attacker data)."""
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def record_ts(record: ZeekRecord) -> float:
    """Epoch seconds: a number, or ISO 8601 text (``JSON::TS_ISO8601``); 0 when masked.

    Raises ``ValueError``/``TypeError`` for a time outside 1970-2262 or of another type.
    """
    value = record.get("ts")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0  # test baselines mask their times
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip()).timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ts is {type(value).__name__}, not a time")
    if not 0 <= value <= MAX_TS:  # also inf; 1e300 would overflow every date conversion
        raise ValueError(f"ts {value:.6g} is outside 1970-2262")
    return float(value)


def port(value: Any) -> int:
    """A port number 0-65535 (``TypeError``/``ValueError`` for anything else)."""
    if value is None:
        return 0
    if (isinstance(value, str) and value.strip().isdigit()) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"port {short(ValueError(repr(value)))} is not a number")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"port {value} is not 0-65535")
    return value


def text(value: Any) -> str:
    """A text field: text or a number as text, "" when unset; a list or object is a ``TypeError``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise TypeError(f"{type(value).__name__} where text belongs")


def opt_text(value: Any) -> str | None:
    return None if value is None else text(value)


def ends(record: ZeekRecord, from_orig: bool = True) -> dict[str, Any]:
    orig = (text(record.get("id.orig_h")), port(record.get("id.orig_p")))
    resp = (text(record.get("id.resp_h")), port(record.get("id.resp_p")))
    src, dst = (orig, resp) if from_orig else (resp, orig)
    return {"ts": record_ts(record), "frame": record.line, "src": src[0], "sport": src[1],
            "dst": dst[0], "dport": dst[1], "source": record.file}


def integer(value: Any) -> int | None:
    """A number from a count, ``0x4c`` text or decimal text; None if none fits int64."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        number = int(value) if math.isfinite(value) else None
    elif isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        try:
            number = int(text, 16) if text.lower().startswith("0x") else int(text)
        except ValueError:
            return None
    return number if number is not None and -(2**63) <= number < 2**63 else None


def finite(value: Any) -> float | None:
    """A finite number, or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def is_orig(record: ZeekRecord) -> bool:
    value = record.get("is_orig")
    if value is None:
        direction = str(record.get("direction", record.get("request_response", ""))).lower()
        return not direction.startswith(("resp", "t->o", "target"))
    return bool(value)
