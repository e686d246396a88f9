"""safety-override: writes to safety-relevant points, by hosts not allowed to write, or
outside the maintenance window (T0836 Modify Parameter, T0855, T0880 Loss of Safety).

With a profile, the allow-list says who may write what and when; an allowed writer inside
its window is the normal maintenance case and raises nothing. Without a profile, a write the
baseline never saw is reported; without either, any write is noted at low severity.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.model import Finding, Severity
from cranewatch.protocols.modbus import TABLE_OF_FUNCTION, WRITE_FUNCTIONS, ModbusRequest

WRITTEN_KEPT = 10  # writes whose values an incident keeps as evidence

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
        points = (ctx.profile.safety_points_in(table, address, count)
                  if ctx.profile is not None and ctx.profile.has_register_map(req.dst) else [])
        reason = self._reason(req, ctx, table, address, count)
        if reason is None:
            return
        names = tuple([p.name for p in points]) if points else ()
        # One incident per writer, target and reason; safety points each make their own.
        key = (req.src, req.dst, reason, names)
        seen = self.incidents.by_key.get(key)
        values: dict[str, Any] = {"range": [f"{table}:{address}-{address + count - 1}"]}
        if seen is None or len(seen.values.get("written", ())) < WRITTEN_KEPT:
            # the values of the first writes are the evidence; later ones only count
            values.update({"function": req.function, "written": [_value_text(ctx, req.dst, table, address, req.values)],
                           "reason": reason, "safety_points": list(names), "port": req.dport})
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
            src, dst, reason, what = key
            safety = bool(incident.values.get("safety_points"))
            if safety:
                severity = Severity.CRITICAL
            elif reason.startswith("write (no profile"):
                severity = Severity.LOW
            else:
                severity = Severity.HIGH
            if what:
                written = incident.values.get("written", [{}])[0]
                shown = ", ".join(f"{k}={v}" for k, v in written.items() if k in what)
            else:
                spans = incident.values.get("range", [])
                shown = ", ".join(spans[:4]) + (f" and {len(spans) - 4} more ranges" if len(spans) > 4 else "")
            title = (f"{ctx.host_name(src)} wrote {shown} on PLC {ctx.host_name(dst)}"
                     f" ({reason}, {incident.count} write(s))")
            verdict = VERDICT if not safety else Verdict(
                VERDICT.rule, VERDICT.category, severity, ("T0836", "T0855", "T0880"), VERDICT.remedy)
            port = incident.values.get("port") or ctx.port_of(src, dst, "modbus", 502)
            findings.append(make_finding(ctx, verdict, key, incident, title, src,
                                         endpoint(dst, port), severity))
        return findings
