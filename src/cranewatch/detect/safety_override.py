"""Modbus writes: safety overrides, and other writes nobody sanctioned (T0836 Modify
Parameter, T0855 Unauthorized Command Message, T0880 Loss of Safety).

A write is judged first by who made it: with a profile, the allow-list says who may write what
and when (an allowed writer inside its window is the normal maintenance case); without one, a
write the baseline never saw is new; without either, every write is noted at low severity.

What it is called depends on what the profile knows about the points written:

- ``safety-override`` (rule ``safety-override``) only where the profile names a written point
  a safety point (critical), or a written value crosses the limit (``min``/``max``) the
  profile gives its point (high; reported even for an allowed writer in its window: the
  profile's limit is the yardstick, not the writer's say-so);
- otherwise ``plc-control`` (rule ``plc-write``) with the points written: medium for a write
  the baseline lacks (a known master writing something new, or an unknown one, which
  rogue-master reports as well), high where the profile forbids it (a host not allowed to
  write, or outside its maintenance window), low with neither profile nor baseline.

Without a profile nothing is a safety point: a legitimate master writing coils it did not
write during a short baseline is a new write, not a safety override.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.model import Finding, Severity
from cranewatch.protocols.modbus import TABLE_OF_FUNCTION, WRITE_FUNCTIONS, ModbusRequest

WRITTEN_KEPT = 10  # writes whose values an incident keeps as evidence

WRITE_VERDICT = Verdict(
    rule="plc-write",
    category="plc-control",
    severity=Severity.MEDIUM,
    technique=("T0836", "T0855"),
    remedy="Find out who made this write and why: a new write by a known master may be a "
    "sanctioned change not yet in the baseline or profile (then add it), or an attacker using "
    "that master. Check the written points on the PLC.",
)

VERDICT = Verdict(
    rule="safety-override",
    category="safety-override",
    severity=Severity.HIGH,
    technique=("T0836", "T0855"),
    remedy="Check the PLC's safety setpoints and the safety_bypass coil now and restore them; "
    "find the writing host. Only the EWS may write, and only in an announced maintenance window.",
)


def written_span(req: ModbusRequest) -> tuple[str, int, int]:
    """Table, first address and count a write request touches."""
    table = TABLE_OF_FUNCTION.get(req.function, "HR")
    address = req.address or 0
    count = req.quantity or len(req.values) or 1
    return table, address, count


def _value_text(ctx: Context, plc: str, table: str, address: int, values: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mapped = ctx.profile is not None and ctx.profile.has_register_map(plc)
    for offset, raw in enumerate(values[:32]):
        point = ctx.profile.point_at(table, address + offset) if ctx.profile and mapped else None
        if point is None:
            out[f"{table}:{address + offset}"] = raw
        elif point.type == "bit" or point.scale == 1.0:
            out[point.name] = raw
        else:
            value = raw - 65536 if point.type == "int16" and raw >= 32768 else raw
            out[point.name] = f"{raw} ({round(value * point.scale, 3)} {point.unit})".strip()
    return out


class SafetyOverride:
    name: ClassVar[str] = "safety-override"
    accepts: ClassVar[tuple[type, ...]] = (ModbusRequest,)

    def __init__(self) -> None:
        self.incidents = Incidents()

    def observe(self, req: Any, ctx: Context) -> None:
        if not isinstance(req, ModbusRequest) or req.function not in WRITE_FUNCTIONS:
            return
        table, address, count = written_span(req)
        mapped = ctx.profile is not None and ctx.profile.has_register_map(req.dst)
        points = ctx.profile.safety_points_in(table, address, count) if ctx.profile is not None and mapped else []
        beyond = _beyond_limits(ctx, table, address, req.values) if mapped else ()
        reason = self._reason(req, ctx, table, address, count)
        if reason is None:
            if not beyond:
                return
            reason = "value beyond the profile's limit"
        names = tuple([p.name for p in points]) if points else ()
        # One incident per writer, target and reason; safety points each make their own, and
        # so does a value beyond a limit (a safety override), apart from plain writes.
        key: tuple[Any, ...] = (req.src, req.dst, reason, names)
        if beyond and not names:
            key = (*key, "beyond-limit")
        seen = self.incidents.by_key.get(key)
        values: dict[str, Any] = {"range": [f"{table}:{address}-{address + count - 1}"]}
        if seen is None or len(seen.values.get("written", ())) < WRITTEN_KEPT:
            # the values of the first writes are the evidence; later ones only count
            values.update({"function": req.function, "written": [_value_text(ctx, req.dst, table, address, req.values)],
                           "reason": reason, "safety_points": list(names), "port": req.dport})
        if beyond:
            values["beyond_limits"] = list(beyond)
        self.incidents.add(key, req, values)

    def _reason(self, req: ModbusRequest, ctx: Context, table: str, address: int, count: int) -> str | None:
        if ctx.profile is not None:
            if not ctx.profile.may_write(req.src, req.dst, table, address, count):
                return "host not allowed to write"
            if ctx.profile.in_maintenance(req.src, req.ts) is False:
                return "outside maintenance window"
            return None
        if ctx.baseline is not None:
            if ctx.baseline.has_write(req.src, req.dst, table, address, count):
                return None
            return "write never seen in the baseline"
        return "write (no profile or baseline to judge it)"

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, incident in self.incidents.items():
            src, dst, reason, what = key[:4]
            safety = bool(incident.values.get("safety_points"))
            beyond = incident.values.get("beyond_limits", [])
            if safety:
                verdict, severity = Verdict(VERDICT.rule, VERDICT.category, Severity.CRITICAL,
                                            ("T0836", "T0855", "T0880"), VERDICT.remedy), Severity.CRITICAL
            elif beyond:
                verdict, severity = VERDICT, Severity.HIGH
            elif reason.startswith("write (no profile"):
                verdict, severity = WRITE_VERDICT, Severity.LOW
            elif reason == "write never seen in the baseline":
                verdict, severity = WRITE_VERDICT, Severity.MEDIUM
            else:  # the profile forbids it: not an allowed writer, or outside its window
                verdict, severity = WRITE_VERDICT, Severity.HIGH
            if what:
                written = incident.values.get("written", [{}])[0]
                shown = ", ".join(f"{k}={v}" for k, v in written.items() if k in what)
            elif beyond:
                shown = ", ".join(beyond[:4]) + (f" and {len(beyond) - 4} more" if len(beyond) > 4 else "")
            else:
                shown = _points_written(incident.values)
            title = (f"{ctx.host_name(src)} wrote {shown} on PLC {ctx.host_name(dst)}"
                     f" ({reason}, {incident.count} write(s))")
            port = incident.values.get("port") or ctx.port_of(src, dst, "modbus", 502)
            findings.append(make_finding(ctx, verdict, key, incident, title, src,
                                         endpoint(dst, port), severity))
        return findings


def _points_written(values: dict[str, Any]) -> str:
    """The points a plain write touched, by name where the profile has one, else the spans."""
    names: list[str] = []
    for written in values.get("written", []):
        for name in written:
            if name not in names:
                names.append(name)
    spans = values.get("range", [])
    if names and len(names) <= 8:
        return ", ".join(names)
    return ", ".join(spans[:4]) + (f" and {len(spans) - 4} more ranges" if len(spans) > 4 else "")


def _beyond_limits(ctx: Context, table: str, address: int, values: tuple[int, ...]) -> tuple[str, ...]:
    """``name=value (limit)`` for every written value outside its point's profile range."""
    if ctx.profile is None:
        return ()
    out = []
    for offset, raw in enumerate(values[:125]):
        point = ctx.profile.point_at(table, address + offset)
        if point is None or (point.low is None and point.high is None):
            continue
        signed = raw - 65536 if point.type == "int16" and raw >= 32768 else raw
        value = round(signed * point.scale, 6)
        if point.high is not None and value > point.high:
            out.append(f"{point.name}={value:g} (max {point.high:g})")
        elif point.low is not None and value < point.low:
            out.append(f"{point.name}={value:g} (min {point.low:g})")
    return tuple(out)
