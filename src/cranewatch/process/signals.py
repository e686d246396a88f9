"""Crane signals from the wire: the register map turns Modbus reads and writes into samples.

A *signal* is one named crane quantity (``hoist_load``, ``wind_speed_1``, ``safety_bypass``)
as timestamped, scaled samples. Every master that reads the same register contributes to the
same signal (the CMS and the OCR both reading the spreader bits give one ``spreader_landed``);
writes to holding registers and coils are samples too (the value the register holds from then
on). ``SignalFrame`` puts every signal on one regular time grid (sample-and-hold) so the checks
can work on aligned NumPy columns.

The register map is the profile's (``cranewatch.profile``); ``RegisterMap.from_profile``
adapts it; without a profile no register is a crane signal (the reference crane's table,
``STS07_REGISTER_MAP`` of crane-reference.md, is the lab's: ``cranewatch.lab.registers``).
Telemetry published over MQTT (JSON payloads) becomes signals too where the map names a topic
and a field (``TelemetryPoint``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cranewatch.protocols.modbus import (
    TABLE_OF_FUNCTION,
    WRITE_FUNCTIONS,
    ModbusRequest,
    ModbusResponse,
    RegisterSeries,
)

BIT_TABLES = frozenset({"DI", "CO"})
TELEMETRY_TABLE = "MQTT"


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """A crane value published over MQTT: a JSON field of the payloads on one topic.

    ``topic`` may use the MQTT wildcards ``+`` (one level) and ``#`` (the rest); ``field`` is a
    dotted path into the JSON object (``"weight_kg"``, ``"drive.hoist.load"``).
    """

    topic: str
    field: str
    name: str
    scale: float = 1.0
    unit: str = ""
    normal_min: float | None = None
    normal_max: float | None = None

    def matches(self, topic: str) -> bool:
        want, got = self.topic.split("/"), topic.split("/")
        for i, level in enumerate(want):
            if level == "#":
                return True
            if i >= len(got) or (level != "+" and level != got[i]):
                return False
        return len(want) == len(got)

    def value(self, payload: bytes) -> float | None:
        """The field of one JSON payload as an engineering value (None when absent)."""
        try:
            node: Any = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        for key in self.field.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        if isinstance(node, bool) or not isinstance(node, int | float):
            return None
        return float(node) * self.scale

    def spec(self) -> RegisterSpec:
        return RegisterSpec(TELEMETRY_TABLE, -1, self.name, "float", abs(self.scale) or 1.0,
                            self.unit, self.normal_min, self.normal_max)


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One row of a crane's register map: where a signal lives and how to read it."""

    table: str  # "IR" | "HR" | "DI" | "CO"
    address: int
    name: str
    type: str = "uint16"  # "uint16" | "int16" | "bit"
    scale: float = 1.0  # engineering value = raw × scale
    unit: str = ""
    normal_min: float | None = None  # engineering units
    normal_max: float | None = None
    safety: bool = False

    def engineering(self, raw: np.ndarray) -> np.ndarray:
        """Raw register words (or bits) as engineering values (float64)."""
        words = np.asarray(raw, dtype=np.int64)
        if self.type == "int16":
            words = np.where(words >= 0x8000, words - 0x10000, words)
        elif self.type == "bit" or self.table in BIT_TABLES:
            return (words != 0).astype(np.float64)
        return words.astype(np.float64) * self.scale


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """A crane's register map: which (table, address) holds which signal, on which unit."""

    registers: tuple[RegisterSpec, ...]
    unit_id: int | None = None  # None: any unit id
    slaves: tuple[str, ...] = ()  # the PLC addresses the map belongs to; empty: any slave
    telemetry: tuple[TelemetryPoint, ...] = ()

    def serves(self, slave: str, unit_id: int) -> bool:
        """Whether reads from ``slave``/``unit_id`` are this crane PLC's process image."""
        if self.unit_id is not None and unit_id != self.unit_id:
            return False
        return not self.slaves or slave in self.slaves

    def lookup(self, table: str, address: int) -> RegisterSpec | None:
        for spec in self.registers:
            if spec.table == table and spec.address == address:
                return spec
        return None

    def by_name(self) -> dict[str, RegisterSpec]:
        specs = {spec.name: spec for spec in self.registers}
        specs.update((point.name, point.spec()) for point in self.telemetry)
        return specs

    @classmethod
    def from_profile(cls, profile: Any) -> RegisterMap:
        """Adapt a profile's register map (``profile.registers`` rows with table, address,
        name, type, scale, unit, normal range, safety flag) to this record."""
        rows = getattr(profile, "registers", None)
        if rows is None:
            rows = getattr(profile, "register_map", None)
        if rows is None:
            return NO_REGISTER_MAP
        if isinstance(rows, RegisterMap):
            return rows
        if hasattr(rows, "registers"):
            rows = rows.registers
        specs = []
        for row in rows:
            get = row.get if isinstance(row, Mapping) else lambda k, d=None, r=row: getattr(r, k, d)
            low = get("low", get("normal_min", get("min")))
            high = get("high", get("normal_max", get("max")))
            table = str(get("table")).upper()
            specs.append(in_si_units(
                RegisterSpec(
                    table=table,
                    address=int(get("address", 0) or 0),
                    name=str(get("name")),
                    type="bit" if table in BIT_TABLES else str(get("type", "uint16") or "uint16"),
                    scale=float(get("scale", 1.0) or 1.0),
                    unit=str(get("unit", "") or ""),
                    normal_min=None if low is None else float(low),
                    normal_max=None if high is None else float(high),
                    safety=bool(get("safety", False)),
                )
            ))
        unit_id = getattr(profile, "unit_id", None)
        # The register map is the PLC's: other Modbus slaves on the crane LAN are not it.
        plcs = tuple(str(getattr(h, "ip", "")) for h in getattr(profile, "hosts", ())
                     if str(getattr(h, "role", "")).lower() == "plc")
        telemetry = []
        for row in getattr(profile, "telemetry", ()) or ():
            get = row.get if isinstance(row, Mapping) else lambda k, d=None, r=row: getattr(r, k, d)
            low, high = get("low", get("min")), get("high", get("max"))
            telemetry.append(TelemetryPoint(
                str(get("topic")), str(get("field")), str(get("name")),
                float(get("scale", 1.0) or 1.0), str(get("unit", "") or ""),
                None if low is None else float(low), None if high is None else float(high)))
        return cls(tuple(specs), unit_id if isinstance(unit_id, int) else None, plcs,
                   tuple(telemetry))


# Lengths and speeds are judged in metres and m/s whatever unit the register carries.
SI_UNITS: dict[str, tuple[float, str]] = {
    "mm": (0.001, "m"), "cm": (0.01, "m"), "dm": (0.1, "m"), "m": (1.0, "m"),
    "mm/s": (0.001, "m/s"), "cm/s": (0.01, "m/s"), "dm/s": (0.1, "m/s"), "m/s": (1.0, "m/s"),
    "m/min": (1.0 / 60.0, "m/s"), "km/h": (1.0 / 3.6, "m/s"),
}


def in_si_units(spec: RegisterSpec) -> RegisterSpec:
    """The same register with scale, unit and range converted to metres / metres per second."""
    factor, unit = SI_UNITS.get(spec.unit, (1.0, spec.unit))
    if factor == 1.0:
        return spec
    return RegisterSpec(
        spec.table, spec.address, spec.name, spec.type, spec.scale * factor, unit,
        None if spec.normal_min is None else spec.normal_min * factor,
        None if spec.normal_max is None else spec.normal_max * factor, spec.safety)


# No crane is built in: a map comes from a profile (``RegisterMap.from_profile``); without one
# no register is a crane signal. The reference crane's table lives with the lab
# (``cranewatch.lab.registers``).
NO_REGISTER_MAP = RegisterMap(())


@dataclass(frozen=True, slots=True)
class Signal:
    """All samples of one crane signal, sorted by time, from every master that read it."""

    spec: RegisterSpec
    ts: np.ndarray  # float64 epoch seconds
    values: np.ndarray  # float64 engineering values
    frames: np.ndarray  # int64 capture frame of each sample (0 when unknown)
    origin: np.ndarray  # int16 index into ``origins`` for each sample
    origins: tuple[str, ...]  # "read by 192.0.2.30" / "written by 192.0.2.50"
    source: str = ""
    device: str = ""  # the PLC (or publisher) whose value this is, as first seen

    @property
    def name(self) -> str:
        return self.spec.name

    def between(self, start: float, end: float) -> Signal | None:
        """The samples from ``start`` to ``end`` (inclusive), None when there are none."""
        lo = int(np.searchsorted(self.ts, start, side="left"))
        hi = int(np.searchsorted(self.ts, end, side="right"))
        if hi <= lo:
            return None
        if lo == 0 and hi == len(self.ts):
            return self
        return Signal(self.spec, self.ts[lo:hi], self.values[lo:hi], self.frames[lo:hi],
                      self.origin[lo:hi], self.origins, self.source, self.device)

    def masters(self, start: float, end: float) -> list[str]:
        """Who read or wrote the samples from ``start`` to ``end``, in order of their first
        sample there (``origins`` entries: "read by ...", "written by ...")."""
        lo = int(np.searchsorted(self.ts, start, side="left"))
        hi = int(np.searchsorted(self.ts, end, side="right"))
        seen = self.origin[lo:hi]
        if len(seen) == 0:
            return []
        _, first = np.unique(seen, return_index=True)
        return [self.origins[int(seen[i])] for i in sorted(first.tolist())]


@dataclass(slots=True)
class _Parts:
    ts: list[np.ndarray] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    source: str = ""
    device: str = ""


def extract_signals(
    series: Iterable[RegisterSeries],
    events: Iterable[object] = (),
    register_map: RegisterMap = NO_REGISTER_MAP,
) -> dict[str, Signal]:
    """Samples per signal from folded read series and write events (requests and echoes).

    Reads from different masters of the same register merge into one signal; a sample read
    at the same instant by two masters stays two samples (both are evidence).
    """
    parts: dict[str, _Parts] = {}
    published: dict[str, _Parts] = {}

    def add_value(point: TelemetryPoint, ts: float, value: float, frame: int, origin: str,
                  source: str, device: str) -> None:
        entry = published.setdefault(point.name, _Parts())
        entry.ts.append(np.array([ts]))
        entry.raw.append(np.array([value]))
        entry.frames.append(np.array([frame], dtype=np.int64))
        entry.origin.append(origin)
        entry.source = entry.source or source
        entry.device = entry.device or device

    def add(spec: RegisterSpec, ts: np.ndarray, raw: np.ndarray, frames: np.ndarray, origin: str,
            source: str, device: str) -> None:
        entry = parts.setdefault(spec.name, _Parts())
        entry.ts.append(np.asarray(ts, dtype=np.float64))
        entry.raw.append(np.asarray(raw, dtype=np.int64))
        entry.frames.append(np.asarray(frames, dtype=np.int64))
        entry.origin.append(origin)
        entry.source = entry.source or source
        entry.device = entry.device or device

    for one in series:
        if not register_map.serves(one.slave, one.unit_id):
            continue
        values = np.asarray(one.values)
        if values.ndim != 2 or values.shape[0] == 0:
            continue
        for column in range(min(one.quantity, values.shape[1])):
            spec = register_map.lookup(one.table, one.address + column)
            if spec is not None:
                add(spec, one.ts, values[:, column], one.frame, f"read by {one.master}", one.source,
                    one.slave)

    events = list(events)
    # A write the PLC refused (exception response) changed nothing.
    refused = {(e.dst, e.src, e.transaction_id, e.function) for e in events
               if isinstance(e, ModbusResponse) and e.exception_code is not None}
    for event in events:
        # A write request says what the register holds from then on; its echo repeats it.
        if not isinstance(event, ModbusRequest) or event.function not in WRITE_FUNCTIONS:
            continue
        if (event.src, event.dst, event.transaction_id, event.function) in refused:
            continue
        if not register_map.serves(event.dst, event.unit_id):
            continue
        table = TABLE_OF_FUNCTION.get(event.function)
        if table is None or event.address is None or not event.values:
            continue
        # FC 5 carries 0xFF00 / 0x0000 for on / off.
        written = [1 if event.values[0] else 0] if event.function == 5 else list(event.values)
        for i, word in enumerate(written):
            spec = register_map.lookup(table, event.address + i)
            if spec is not None:
                add(spec, np.array([event.ts]), np.array([word]), np.array([event.frame]),
                    f"written by {event.src}", event.source, event.dst)

    if register_map.telemetry:
        from cranewatch.protocols.mqtt import MqttPublishRequest

        for event in events:
            # The publisher's copy only: the broker's copies to each subscriber repeat it.
            if not isinstance(event, MqttPublishRequest) or not event.from_client:
                continue
            for point in register_map.telemetry:
                if point.matches(event.topic):
                    value = point.value(event.payload)
                    if value is not None:
                        add_value(point, event.ts, value, event.frame, f"published by {event.src}",
                                  event.source, event.src)

    signals: dict[str, Signal] = {}
    specs = register_map.by_name()
    for name, entry in [*parts.items(), *published.items()]:
        ts = np.concatenate(entry.ts)
        order = np.argsort(ts, kind="stable")
        origin_names = tuple(dict.fromkeys(entry.origin))
        origin_idx = np.concatenate(
            [np.full(len(t), origin_names.index(o), dtype=np.int16) for t, o in zip(entry.ts, entry.origin, strict=True)]
        )
        spec = specs[name]
        raw = np.concatenate(entry.raw)[order]
        signals[name] = Signal(
            spec=spec,
            ts=ts[order],
            values=raw.astype(np.float64) if name in published else spec.engineering(raw),
            frames=np.concatenate(entry.frames)[order],
            origin=origin_idx[order],
            origins=origin_names,
            source=entry.source,
            device=entry.device,
        )
    return signals


def is_write_event(event: object) -> bool:
    """Whether the process sink keeps this event (writes carry signal samples; MQTT
    publishes may carry telemetry)."""
    if isinstance(event, ModbusRequest | ModbusResponse):
        return event.function in WRITE_FUNCTIONS
    return type(event).__name__ == "MqttPublishRequest"


@dataclass(frozen=True, slots=True)
class SignalFrame:
    """Every signal on one regular time grid (sample-and-hold), ready for vectorised checks.

    ``columns[name][k]`` is the last sample of ``name`` at or before ``t[k]`` (NaN before its
    first sample); ``age[name][k]`` how old that sample is (seconds), so a check can tell a
    held value from a fresh one.
    """

    t: np.ndarray
    dt: float
    columns: dict[str, np.ndarray]
    age: dict[str, np.ndarray]
    specs: dict[str, RegisterSpec]
    source: str = ""
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # capture frame of each held value
    _filled: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def filled(self, name: str) -> np.ndarray:
        """The column with unknown samples as 0 (computed once; do not modify)."""
        if name not in self._filled:
            self._filled[name] = np.nan_to_num(self.columns[name], nan=0.0)
        return self._filled[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def has(self, *names: str) -> bool:
        return all(n in self.columns for n in names)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def bit(self, name: str) -> np.ndarray:
        """A status bit as booleans (unknown = False); all False when the bit is not read."""
        if name not in self.columns:
            return np.zeros(len(self.t), dtype=bool)
        return self.filled(name) > 0.5

    def sample_time(self, name: str) -> np.ndarray:
        """When each held value of ``name`` was read (NaN before its first sample)."""
        age = self.age[name]
        return np.where(np.isfinite(age), self.t - np.where(np.isfinite(age), age, 0.0), np.nan)

    def index_at(self, ts: float) -> int:
        return int(np.clip(np.searchsorted(self.t, ts), 0, len(self.t) - 1))

    @property
    def duration(self) -> float:
        return float(self.t[-1] - self.t[0]) if len(self.t) else 0.0

    @classmethod
    def from_columns(cls, t: np.ndarray, columns: Mapping[str, np.ndarray],
                     register_map: RegisterMap = NO_REGISTER_MAP, source: str = "") -> SignalFrame:
        """A frame from already aligned columns (synthetic data, other plants, tests)."""
        t = np.asarray(t, dtype=np.float64)
        dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        specs = register_map.by_name()
        cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
        return cls(
            t=t,
            dt=dt,
            columns=cols,
            age={k: np.zeros(len(t)) for k in cols},
            specs={k: specs.get(k, RegisterSpec("IR", -1, k)) for k in cols},
            source=source,
        )


# The most grid rows one frame gets (a week polled every 120 ms): the grid's length comes from
# the capture's time span, which a corrupt or hostile timestamp can stretch without limit.
MAX_GRID_POINTS = 5_000_000


def build_frame(signals: Mapping[str, Signal], dt: float | None = None) -> SignalFrame:
    """Align signals on one grid. ``dt`` defaults to the fastest signal's median poll period."""
    if not signals:
        return SignalFrame(np.zeros(0), 1.0, {}, {}, {})
    if dt is None:
        dt = grid_step(signals)
    start = min(float(s.ts[0]) for s in signals.values())
    end = max(float(s.ts[-1]) for s in signals.values())
    if (end - start) / dt >= MAX_GRID_POINTS:
        # a frame over holes in the recording (tables and plots across everything; the checks
        # get one frame per stretch, ``engine.split_at_holes``): coarser, never unbounded
        dt = (end - start) / (MAX_GRID_POINTS - 1)
    return frame_on_grid(signals, start + dt * np.arange(int(np.floor((end - start) / dt)) + 1), dt)


def grid_step(signals: Mapping[str, Signal]) -> float:
    """The grid step ``build_frame`` uses: the fastest master's median poll period."""
    # Each master's own poll period (two masters interleaved would halve it).
    periods = []
    for s in signals.values():
        for i in range(len(s.origins)):
            ts = np.unique(s.ts[s.origin == i])
            if len(ts) >= 3:
                periods.append(float(np.median(np.diff(ts))))
    return float(np.clip(min(periods), 0.02, 10.0)) if periods else 1.0


def frame_on_grid(signals: Mapping[str, Signal], t: np.ndarray, dt: float) -> SignalFrame:
    """``signals`` sampled and held on the grid ``t`` (step ``dt``): part of a longer grid
    gives the same rows the whole grid has there (``process.slices``)."""
    columns: dict[str, np.ndarray] = {}
    age: dict[str, np.ndarray] = {}
    frames: dict[str, np.ndarray] = {}
    for name, signal in signals.items():
        idx = np.searchsorted(signal.ts, t + 1e-9, side="right") - 1
        known = idx >= 0
        safe = np.where(known, idx, 0)
        columns[name] = np.where(known, signal.values[safe], np.nan)
        age[name] = np.where(known, t - signal.ts[safe], np.inf)
        held = np.where(known, signal.frames[safe], 0)
        # capture frame numbers, read only for evidence: 4 bytes a row where they fit
        frames[name] = held.astype(np.int32) if len(held) and held.max() < 2**31 else held
    source = next((s.source for s in signals.values() if s.source), "")
    return SignalFrame(t, dt, columns, age, {n: s.spec for n, s in signals.items()}, source,
                       frames)
