"""rogue-master: a host polling or writing a PLC it never did in the baseline (T0848).

The masters of each PLC come from the baseline and from the profile's allowed Modbus
clients; without either there is no "never did" to judge against and the rule is silent.
Modbus is judged request by request; S7comm, EtherNet/IP, OPC UA and every protocol that
declares itself a master protocol (``ProtocolSpec.masters``) by their flows (a new
client of the PLC or outstation).
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.facts import Conversation
from cranewatch.detect.recon import _SeriesPoint
from cranewatch.model import Finding, Severity
from cranewatch.protocols.modbus import WRITE_FUNCTIONS, ModbusRequest, RegisterSeries
from cranewatch.protocols.registry import master_protocols

OTHER_ICS_PROTOCOLS = frozenset({"s7comm", "enip", "opcua"})

VERDICT = Verdict(
    rule="rogue-master",
    category="rogue-master",
    severity=Severity.HIGH,
    technique=("T0848",),
    remedy="A host that is not one of the PLC's masters is talking Modbus to it. Identify the "
    "host, block it at the crane gateway, and check the PLC's setpoints and coils.",
)


class RogueMaster:
    name: ClassVar[str] = "rogue-master"
    accepts: ClassVar[tuple[type, ...]] = (ModbusRequest, RegisterSeries, Conversation)

    def __init__(self) -> None:
        self.incidents = Incidents()
        self.protocols = OTHER_ICS_PROTOCOLS | master_protocols()

    @staticmethod
    def judges(ctx: Context) -> tuple[type, ...]:
        """Nothing without a profile or baseline: no master is known, so none is new."""
        return RogueMaster.accepts if ctx.profile is not None or ctx.baseline is not None else ()

    def observe(self, event: Any, ctx: Context) -> None:
        if isinstance(event, Conversation):
            self._session(event, ctx)
            return
        if isinstance(event, RegisterSeries):
            master, slave, function = event.master, event.slave, event.function
            if not len(event.ts):
                return
            occurrence: Any = _SeriesPoint(float(event.ts[0]), int(event.frame[0]), event.source)
            weight = len(event.ts)
        elif isinstance(event, ModbusRequest):
            master, slave, function = event.src, event.dst, event.function
            occurrence, weight = event, 1
        else:
            return
        if self._known(master, slave, ctx) is not False:
            return
        self.incidents.add((master, slave), occurrence, {
            "functions": [function], "writes": function in WRITE_FUNCTIONS}, weight=weight)
        if function in WRITE_FUNCTIONS:
            self.incidents.by_key[(master, slave)].values["writes"] = True

    def _session(self, conv: Conversation, ctx: Context) -> None:
        if ctx.profile is None and ctx.baseline is None:
            return
        if conv.protocol not in self.protocols:
            return
        if ctx.profile is not None and ctx.profile.allows(conv.src, conv.dst, conv.protocol, conv.dport):
            return
        if ctx.baseline is not None and ctx.baseline.has_pair(conv.src, conv.dst, conv.dport):
            return
        self.incidents.add((conv.src, conv.dst), conv, {"protocols": [conv.protocol], "writes": False,
                                                        "port": conv.dport})

    @staticmethod
    def _known(master: str, slave: str, ctx: Context) -> bool | None:
        if ctx.profile is None and ctx.baseline is None:
            return None
        if ctx.profile is not None and ctx.profile.allowances(master, slave, "modbus"):
            return True
        return ctx.baseline is not None and ctx.baseline.is_master(master, slave)

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            master, slave = key
            writes = bool(inc.values.get("writes"))
            functions = sorted(set(inc.values.get("functions", [])))
            inc.values["functions"] = functions
            if functions:
                title = (f"New Modbus master {ctx.host_name(master)} {'writes to' if writes else 'polls'} "
                         f"PLC {ctx.host_name(slave)} (FC {', '.join(map(str, functions))})")
                port = ctx.port_of(master, slave, "modbus", 502)
            else:
                protocols = ", ".join(inc.values.get("protocols", []))
                title = f"New {protocols} client {ctx.host_name(master)} of PLC {ctx.host_name(slave)}"
                port = inc.values.get("port") or 0
            findings.append(make_finding(ctx, VERDICT, key, inc, title, master, endpoint(slave, port),
                                         Severity.CRITICAL if writes else Severity.HIGH))
        return findings
