"""recon: device identification sweeps, port and address scans, reads of unusual ranges
(T0846 Remote System Discovery, T0888 Remote System Information Discovery).

Scans are judged on finished flows: a client that touched many ports of one host, or one
port of many hosts, with flows that carried (almost) nothing, is scanning. Thresholds are
counts of distinct targets, not the lab's timings. What is kept per scanner is bounded
(``detect.bounded``): its probe count, first and last time, its first probes as evidence and
its distinct (host, port) targets up to ``MAX_TARGETS`` (more are counted, not told apart).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.bounded import Earliest
from cranewatch.detect.facts import Conversation
from cranewatch.model import Finding, Severity
from cranewatch.protocols.modbus import (
    ENCAPSULATED_INTERFACE,
    READ_FUNCTIONS,
    REPORT_SERVER_ID,
    TABLE_OF_FUNCTION,
    ModbusRequest,
    ModbusResponse,
    RegisterSeries,
)

SCAN_TARGETS = 10  # distinct (host, port) probed by one client before it counts as a scan
PORT_SCAN_PORTS = 10  # distinct ports of one host: a port scan
ADDRESS_SCAN_HOSTS = 8  # distinct hosts on one port: an address sweep
PROBE_PACKETS = 3  # a probe flow: at most this many packets from the scanner
EXCEPTIONS_FOR_PROBING = 5  # illegal function/address answers to one master
MALFORMED_FOR_FUZZING = 3  # malformed requests from one master before it reads as fuzzing
# Function codes a Modbus stack may send: the public ones (Modbus Application Protocol v1.1b3,
# 6.1), the user-defined ranges 65-72 and 100-110, and vendors' long-standing ones (Modicon
# programming 9, 10, 13, 14, 40, 42; reserved 18, 19; Schneider UMAS 90; 125, 126 firmware
# and programming on some Modicons). Anything else is undefined.
MAX_TARGETS = 1 << 16  # distinct (host, port) targets kept per scanner
KNOWN_FUNCTIONS = frozenset({*range(1, 25), 40, 42, 43, *range(65, 73), 90, *range(100, 111), 125, 126})

VERDICT = Verdict(
    rule="recon",
    category="recon",
    severity=Severity.HIGH,
    technique=("T0846", "T0888"),
    remedy="Find the scanning host and why it scans the crane LAN; a scan usually precedes an "
    "attack. Block it at the crane gateway and check it for compromise.",
)


@dataclass(slots=True)
class _Probes:
    """One scanner's probe flows summarised: count, times, first ones, distinct targets."""

    facts: Earliest = field(default_factory=Earliest)
    targets: set[tuple[str, int]] = field(default_factory=set)
    more_targets: int = 0  # distinct targets beyond MAX_TARGETS (each probe of them counted)

    def add(self, conv: Conversation) -> None:
        self.facts.add(conv)
        target = (conv.dst, conv.dport)
        if target not in self.targets:
            if len(self.targets) < MAX_TARGETS:
                self.targets.add(target)
            else:
                self.more_targets += 1


class Recon:
    name: ClassVar[str] = "recon"
    accepts: ClassVar[tuple[type, ...]] = (ModbusRequest, ModbusResponse, RegisterSeries, Conversation)

    def __init__(self) -> None:
        self.identify = Incidents()
        self.unusual = Incidents()
        self.probes: dict[str, _Probes] = defaultdict(_Probes)
        self.exceptions = Incidents()
        self.malformed = Incidents()

    @staticmethod
    def judges(ctx: Context) -> tuple[type, ...]:
        """Register series only with a profile or baseline: an unusual range is unusual for a
        known master."""
        if ctx.profile is not None or ctx.baseline is not None:
            return Recon.accepts
        return (ModbusRequest, ModbusResponse, Conversation)

    def observe(self, event: Any, ctx: Context) -> None:
        if isinstance(event, ModbusRequest):
            if event.detail and ("malformed" in event.detail or "illegal_quantity" in event.detail):
                self._malformed(event)
            elif event.function not in KNOWN_FUNCTIONS:
                # No stack sends a code the standard leaves undefined: a fuzzer does. Zeek's
                # modbus.log shows only the code ("unknown-29"), so this is what it can tell.
                self._malformed(event, f"undefined function code {event.function}")
            if (event.function == ENCAPSULATED_INTERFACE and (event.sub_function in (None, 14))) or \
                    event.function == REPORT_SERVER_ID:
                if ctx.baseline is not None and ctx.baseline.has_function(event.src, event.dst, event.function):
                    return
                self.identify.add((event.src,), event, {
                    "targets": [f"{event.dst}/unit {event.unit_id}"],
                    "function": event.function,
                    "objects": [event.detail.get("object_id")] if event.detail.get("object_id") is not None else [],
                })
            elif event.function in READ_FUNCTIONS and event.address is not None:
                self._range(event.src, event.dst, event.function, event.address, event.quantity or 1, event, ctx)
        elif isinstance(event, ModbusResponse):
            if event.exception_code in (1, 2):
                self.exceptions.add((event.dst, event.src), event, {
                    "exception_codes": [event.exception_code], "functions": [event.function]})
        elif isinstance(event, RegisterSeries):
            if len(event.ts):
                self._range(event.master, event.slave, event.function, event.address, event.quantity,
                            _SeriesPoint(float(event.ts[0]), int(event.frame[0]), event.source), ctx,
                            weight=len(event.ts))
        elif isinstance(event, Conversation) and event.packets_to_server <= PROBE_PACKETS \
                and event.bytes_to_server - 60 * event.packets_to_server < 64:
            self.probes[event.src].add(event)

    def _malformed(self, event: ModbusRequest, problem: str | None = None) -> None:
        """A request no Modbus stack would send: a fuzzer, or a probe of the PLC's parser."""
        problem = problem or event.detail.get("malformed") or f"FC {event.function} quantity {event.quantity}"
        self.malformed.add((event.src, event.dst), event, {
            "functions": [event.function], "problems": [problem]}, excerpt=event.detail.get("data"))

    def _range(self, master: str, slave: str, function: int, address: int, quantity: int,
               occurrence: Any, ctx: Context, weight: int = 1) -> None:
        """A read by a known master of a range it never reads (an unknown master is rogue-master's)."""
        table = TABLE_OF_FUNCTION.get(function, "?")
        known_master = False
        if ctx.profile is not None:
            allowances = ctx.profile.allowances(master, slave, "modbus")
            if allowances:
                known_master = True
                if any((not a.functions or function in a.functions)
                       and (not a.ranges or any(r.covers(table, address, quantity) for r in a.ranges))
                       for a in allowances):
                    return
        if ctx.baseline is not None and ctx.baseline.is_master(master, slave):
            known_master = True
            if ctx.baseline.has_read(master, slave, function, address, quantity):
                return
        if not known_master:
            return
        self.unusual.add((master, slave, function, address, quantity), occurrence,
                         {"function": function, "range": f"{table}:{address}-{address + quantity - 1}"},
                         weight=weight)

    def finish(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        for key, inc in self.identify.items():
            targets = inc.values.get("targets", [])
            hosts = sorted({target.split("/")[0] for target in targets}, key=_ip_sort)
            sweep = len(targets) > 1
            what = (f"sweep of {len(targets)} targets ({len(hosts)} host(s))" if sweep else "request")
            title = f"Modbus device identification {what} by {ctx.host_name(key[0])}"
            dst = covering(hosts)
            findings.append(make_finding(ctx, VERDICT, ("identify", *key), inc, title, key[0],
                                         endpoint(dst, 502) if dst and len(hosts) == 1 else dst,
                                         Severity.HIGH if sweep else Severity.MEDIUM))
        for key, inc in self.unusual.items():
            master, slave, function, _address, _quantity = key
            title = (f"{ctx.host_name(master)} read {inc.values['range']} (FC {function}) of "
                     f"{ctx.host_name(slave)}, a range it does not normally read")
            findings.append(make_finding(ctx, VERDICT, ("range", *key), inc, title, master,
                                         endpoint(slave, 502), Severity.MEDIUM))
        for key, inc in self.exceptions.items():
            if inc.count < EXCEPTIONS_FOR_PROBING:
                continue
            title = (f"{ctx.host_name(key[0])} got {inc.count} illegal function/address answers from "
                     f"{ctx.host_name(key[1])}: probing the process image")
            findings.append(make_finding(ctx, VERDICT, ("exceptions", *key), inc, title, key[0],
                                         endpoint(key[1], 502), Severity.MEDIUM))
        for key, inc in self.malformed.items():
            title = (f"{ctx.host_name(key[0])} sent {inc.count} malformed Modbus request(s) to "
                     f"{ctx.host_name(key[1])}: fuzzing or probing the PLC's protocol stack")
            severity = Severity.MEDIUM if inc.count >= MALFORMED_FOR_FUZZING else Severity.LOW
            findings.append(make_finding(ctx, VERDICT, ("malformed", *key), inc, title, key[0],
                                         endpoint(key[1], 502), severity))
        findings.extend(self._scans(ctx))
        return findings

    def _scans(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        for scanner, probes in self.probes.items():
            targets = probes.targets
            distinct = len(targets) + probes.more_targets
            if distinct < SCAN_TARGETS:
                continue
            by_host: dict[str, set[int]] = defaultdict(set)
            by_port: dict[int, set[str]] = defaultdict(set)
            for host, port in targets:
                by_host[host].add(port)
                by_port[port].add(host)
            if any(len(ports) >= PORT_SCAN_PORTS for ports in by_host.values()):
                kind = "port scan"
            elif any(len(hosts) >= ADDRESS_SCAN_HOSTS for hosts in by_port.values()):
                kind = "address sweep"
            else:
                kind = "scan"
            inc = probes.facts.incident((scanner,), lambda f: {"targets": [f.dst], "ports": [f.dport]})
            inc.values["ports"] = sorted(by_port)[:50]
            inc.values["targets"] = sorted(by_host, key=_ip_sort)[:50]
            title = (f"{kind} by {ctx.host_name(scanner)}: {len(by_host)} host(s), "
                     f"{len(by_port)} port(s), {distinct} probes")
            findings.append(make_finding(ctx, VERDICT, ("scan", scanner), inc, title, scanner,
                                         covering(list(by_host)), Severity.HIGH))
        return findings


def covering(hosts: list[str]) -> str | None:
    """One host, or the smallest network holding all the scanned hosts (e.g. 10.20.7.0/24)."""
    if len(hosts) == 1:
        return hosts[0]
    try:
        addresses = [ipaddress.ip_address(h) for h in hosts]
    except ValueError:
        return None
    if len({a.version for a in addresses}) != 1:
        return None
    bits = addresses[0].max_prefixlen
    values = [int(a) for a in addresses]
    prefix = bits - (min(values) ^ max(values)).bit_length()
    prefix = min(prefix, 24) if bits == 32 else prefix  # a sweep reads as the LAN it swept
    return str(ipaddress.ip_network(f"{addresses[0]}/{prefix}", strict=False))


def _ip_sort(ip: str) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (addr.version, int(addr))


class _SeriesPoint:
    """The first response of a register series, as an occurrence for the evidence."""

    __slots__ = ("frame", "source", "ts")

    def __init__(self, ts: float, frame: int, source: str) -> None:
        self.ts = ts
        self.frame = frame
        self.source = source
