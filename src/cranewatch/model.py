"""Frozen core records shared by every part: severities, findings and their evidence.

Findings are the contract with users' scripts and SIEMs (DESIGN.md): ``Finding.to_json()``
gives exactly the documented JSON-lines object. Protocol events live beside their decoder
(``cranewatch.protocols.<proto>``); this module holds only what every part speaks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, TypeVar

_T = TypeVar("_T")

NETWORK_CATEGORIES = (
    "hidden-uplink",
    "remote-access",
    "data-leak",
    "c2",
    "egress",
    "safety-override",
    "false-reading",
    "plc-control",
    "recon",
    "rogue-master",
    "new-asset",
    "lateral-movement",
)
FORENSIC_CATEGORIES = (
    "backdoor",
    "remote-access-tool",
    "oob-connectivity",
    "persistence",
    "credential",
    "hardcoded-endpoint",
    "vulnerable-component",
    "weak-config",
)
CATEGORIES = NETWORK_CATEGORIES + FORENSIC_CATEGORIES


class Severity(IntEnum):
    """Finding severity, ordered so that ``Severity.HIGH >= Severity.MEDIUM``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = "|".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected {names})") from None

    def __str__(self) -> str:
        return self.name.lower()


def iso_time(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with microseconds and a ``Z``; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """Inverse of ``iso_time``: ISO 8601 UTC with microseconds and a ``Z`` to epoch seconds."""
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# Evidence values that are instants. In memory they stay epoch seconds (checks and tests
# compute with them); wherever evidence is serialised or shown they are ISO 8601 UTC.
TIME_VALUES = frozenset({"onset", "detected", "replayed_from"})


def evidence_value(key: str, value: Any) -> Any:
    """``value`` as it is serialised and shown: an instant (``TIME_VALUES``) as ISO 8601 UTC."""
    if key in TIME_VALUES and isinstance(value, int | float) and not isinstance(value, bool):
        return iso_time(value)
    return value


@dataclass(frozen=True, slots=True)
class Evidence:
    """One piece of proof behind a finding.

    Network evidence names the capture ``source`` and ``frames``; forensic evidence names
    the ``path`` inside the image and the ``line`` or ``offset``. ``values`` holds the
    register values, field values or measurements that matter; ``excerpt`` a short, printable
    extract of the bytes or text.
    """

    source: str | None = None
    frames: tuple[int, ...] = ()
    times: tuple[float, ...] = ()
    path: str | None = None
    line: int | None = None
    offset: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    excerpt: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.source is not None:
            out["source"] = self.source
        if self.frames:
            out["frames"] = list(self.frames)
        if self.times:
            out["times"] = [iso_time(t) for t in self.times]
        for key in ("path", "line", "offset", "excerpt", "note"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.values:
            out["values"] = {k: evidence_value(k, v) for k, v in self.values.items()}
        return out


def finding_id(rule: str, crane: str | None, *key: object) -> str:
    """A stable id: the same rule on the same crane about the same thing gives the same id.

    ``key`` is what makes the incident itself (e.g. source, destination, register), never
    times or counts, so re-running an analysis over the same input yields the same ids.
    """
    text = json.dumps([rule, crane, *[str(k) for k in key]], separators=(",", ":"))
    return "cw-" + hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Finding:
    """One incident, aggregated (one finding with a count, never one per packet)."""

    id: str
    rule: str
    category: str
    severity: Severity
    title: str
    first_seen: float | None
    last_seen: float | None
    count: int = 1
    crane: str | None = None
    src: str | None = None
    dst: str | None = None
    technique: tuple[str, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    remedy: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown finding category {self.category!r}")

    def to_json(self) -> dict[str, Any]:
        """The documented JSON-lines object (contract, DESIGN.md)."""
        return {
            "type": "finding",
            "id": self.id,
            "rule": self.rule,
            "category": self.category,
            "severity": str(self.severity),
            "crane": self.crane,
            "title": self.title,
            "first_seen": iso_time(self.first_seen),
            "last_seen": iso_time(self.last_seen),
            "count": self.count,
            "src": self.src,
            "dst": self.dst,
            "technique": list(self.technique),
            "evidence": [e.to_json() for e in self.evidence],
            "remedy": self.remedy,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Finding:
        """Inverse of ``to_json`` (used by the store and by readers of JSON lines)."""
        evidence = tuple(
            Evidence(
                source=e.get("source"),
                frames=tuple(e.get("frames", ())),
                times=tuple(t for t in (parse_time(x) for x in e.get("times", ())) if t is not None),
                path=e.get("path"),
                line=e.get("line"),
                offset=e.get("offset"),
                values=dict(e.get("values", {})),
                excerpt=e.get("excerpt"),
                note=e.get("note"),
            )
            for e in obj.get("evidence", ())
        )
        return cls(
            id=obj["id"],
            rule=obj["rule"],
            category=obj["category"],
            severity=Severity.parse(obj["severity"]),
            title=obj["title"],
            first_seen=parse_time(obj.get("first_seen")),
            last_seen=parse_time(obj.get("last_seen")),
            count=int(obj.get("count", 1)),
            crane=obj.get("crane"),
            src=obj.get("src"),
            dst=obj.get("dst"),
            technique=tuple(obj.get("technique", ())),
            evidence=evidence,
            remedy=obj.get("remedy", ""),
        )


# ------------------------------------------------------------ frozen records built in bulk

def _slot_setter_init(cls: type) -> Callable[..., None] | None:
    """A drop-in ``__init__`` for a frozen slots dataclass that fills the slots directly.

    The ``__init__`` dataclasses writes for a frozen class goes through
    ``object.__setattr__(self, name, value)`` per field (a bound wrapper and a name lookup in
    the type each time); calling each slot descriptor's ``__set__`` does the same store in
    half the instructions (callgrind: ~0.7 k instead of ~1.4 k per field). Decoders build one
    event per PDU and the detectors a fact per event, so on a busy capture this is several
    percent of the run. The signature
    (names, defaults, keyword-only) is the dataclass's own; classes with ``__post_init__``,
    ``InitVar`` or ``init=False`` fields, or a hand-written ``__init__``, keep theirs
    (returns None).
    """
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen or hasattr(cls, "__post_init__"):
        return None
    generated = getattr(cls.__dict__.get("__init__"), "__code__", None)
    if generated is None or generated.co_filename != "<string>":
        return None  # a hand-written __init__ (dataclasses' own is compiled from a string)
    fields = dataclasses.fields(cls)
    arguments = generated.co_varnames[1:generated.co_argcount + generated.co_kwonlyargcount]
    if set(arguments) != {f.name for f in fields if f.init} or not all(f.init for f in fields):
        return None  # InitVar or init=False: rare enough to leave to dataclasses
    namespace: dict[str, Any] = {"_FACTORY": object()}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        slot: Any = getattr(cls, f.name, None)
        if type(slot).__name__ != "member_descriptor":
            return None  # not a plain slot: leave it to dataclasses
        namespace[f"_set_{f.name}"] = slot.__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param = f"{f.name}=_FACTORY"
            body.append(f" if {f.name} is _FACTORY: {f.name} = _factory_{f.name}()")
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        body.append(f" _set_{f.name}(self, {f.name})")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({signature}) -> None:\n" + "\n".join(body or [" pass"]), namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = getattr(cls.__dict__.get("__init__"), "__doc__", None)
    return init


def fast_frozen_init(cls: type[_T]) -> type[_T]:
    """Class decorator (above ``@dataclass(frozen=True, slots=True)``): the faster ``__init__``.

    For frozen records built in bulk that do not derive from ``FastFrozen``; see
    ``_slot_setter_init``. Classes it cannot serve keep their ``__init__``.
    """
    init = _slot_setter_init(cls)
    if init is not None:
        cls.__init__ = init  # type: ignore[method-assign]
    return cls


class FastFrozen:
    """Base of frozen slots dataclasses made by the hundred thousand (decoder events,
    detector facts): every subclass declared ``@dataclass(frozen=True, slots=True)`` gets
    ``fast_frozen_init``'s ``__init__``, same signature, still frozen."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # ``@dataclass(slots=True)`` creates the class a second time, fields and generated
        # ``__init__`` in hand: that creation is the one to fix up.
        if "__slots__" in cls.__dict__:
            fast_frozen_init(cls)

