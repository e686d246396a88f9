"""plc-control: commands that change what a PLC runs or whether it runs at all.

Modbus diagnostics restart / force-listen-only (FC 8), S7 CPU stop/start, block download,
upload and delete, CIP stop/reset/program transfer, OPC UA writes and calls. What each
operation means, its severity and technique are data (``rules/plc_control.yaml``). The EWS
doing it inside a maintenance window is reported at low severity: planned, but on record.
OPC UA writes and calls are what a SCADA client does all day: with neither profile nor
baseline to say the client is not one of the server's, they are noted at low severity (as
Modbus writes are), not raised.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.facts import PlcCommand
from cranewatch.detect.rules import rule_data
from cranewatch.model import Finding, Severity
from cranewatch.protocols.modbus import DIAGNOSTICS, ModbusRequest

# FC 8 sub-functions that act on the device rather than only echo or read counters.
MODBUS_DIAGNOSTIC_OPERATIONS = {1: "modbus-restart-communications", 4: "modbus-force-listen-only",
                                10: "modbus-clear-counters", 20: "modbus-clear-counters"}
PROTOCOL_PORTS = {"modbus": 502, "s7comm": 102, "enip": 44818, "opcua": 4840}
# What a SCADA client does every day to the server it supervises: like a Modbus write, with
# neither profile nor baseline to say this client is not one of them it is only noted (low).
ROUTINE_OPERATIONS = frozenset({"opcua-write", "opcua-call"})


@cache
def operations() -> dict[str, dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = rule_data("plc_control")["operations"]
    return ops


def verdict_for(operation: str) -> Verdict:
    op = operations()[operation]
    return Verdict("plc-control", "plc-control", Severity.parse(op["severity"]),
                   tuple(op["technique"]), op["remedy"])


class PlcControl:
    name: ClassVar[str] = "plc-control"
    accepts: ClassVar[tuple[type, ...]] = (ModbusRequest, PlcCommand)

    def __init__(self) -> None:
        self.incidents = Incidents()

    def observe(self, event: Any, ctx: Context) -> None:
        if isinstance(event, ModbusRequest):
            if event.function != DIAGNOSTICS:
                return
            operation = MODBUS_DIAGNOSTIC_OPERATIONS.get(event.sub_function or 0)
            if operation is None:
                return
            protocol = "modbus"
            values: dict[str, Any] = {"function": 8, "sub_function": event.sub_function,
                                          "unit_id": event.unit_id}
            port = event.dport or 502
        elif isinstance(event, PlcCommand):
            if event.operation not in operations():
                return
            operation, protocol, values = event.operation, event.protocol, dict(event.values)
            if event.target:
                values["target"] = [event.target]
            port = event.dport or PROTOCOL_PORTS.get(protocol, 0)
        else:
            return
        planned: bool | None = self._planned(event, ctx, protocol, port)
        if not planned and operation in ROUTINE_OPERATIONS and ctx.profile is None and ctx.baseline is None:
            planned = None  # unjudged: no inventory says whether this client is a normal one
        values["port"] = port
        values["protocol"] = protocol
        self.incidents.add((event.src, event.dst, operation, planned), event, values)

    @staticmethod
    def _planned(event: Any, ctx: Context, protocol: str, port: int) -> bool:
        if ctx.profile is None:
            return False
        if not ctx.profile.allows(event.src, event.dst, protocol, port):
            return False
        return ctx.profile.in_maintenance(event.src, event.ts) is True

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, incident in self.incidents.items():
            src, dst, operation, planned = key
            verdict = verdict_for(operation)
            title = f"{operations()[operation]['title']} by {ctx.host_name(src)} → {ctx.host_name(dst)}"
            severity = verdict.severity
            if planned:
                severity = Severity.LOW
                title += " (allowed client, inside a maintenance window)"
            elif planned is None:
                severity = Severity.LOW
                title += " (no profile or baseline to judge it)"
            findings.append(make_finding(ctx, verdict, (src, dst, operation), incident, title, src,
                                         endpoint(dst, incident.values.get("port")), severity))
        return findings
