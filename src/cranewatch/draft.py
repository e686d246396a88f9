"""Draft a crane profile from a quarantine capture: a skeleton for a person to review.

``draft_profile(captures)`` runs the pipeline once with a ``ProfileDrafter`` (a
``baseline.BaselineLearner`` that also keeps per-register value statistics and per-service
counts, all bounded by the number of distinct hosts, services and addresses, never by the
capture's length) and ``render_draft`` writes the TOML: the crane zone and gateway, every
local host with MAC, IP, vendor (``oui``) and a guessed role, one ``[[allow]]`` per service
seen with who used it (for Modbus each master's function codes, read set and write set), and
register-map candidates with a guessed kind (constant, counter, boolean, bounded analogue
with its observed range). Every guess says so in a comment. The output depends only on the
captures (sorted, no clock), so drafting twice gives the same file.

Roles are guessed from behaviour: a host answering an industrial protocol is a PLC/RTU; its
clients are masters (an EWS when it writes, else an HMI/SCADA); an RTSP server is a camera; a
crane host publishing MQTT or HTTP towards the terminal is the OCR; a MAC that carries many
addresses is the gateway; terminal servers of DNS, NTP, syslog and MQTT are named by them.
Nothing is allowed to the outside and no point is a safety point: those are a person's call.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cranewatch.baseline import Baseline, BaselineLearner
from cranewatch.detect.base import is_global, is_unicast
from cranewatch.detect.facts import Conversation
from cranewatch.detect.recon import KNOWN_FUNCTIONS
from cranewatch.oui import OuiTable, load_oui
from cranewatch.protocols.modbus import (
    TABLE_OF_FUNCTION,
    WRITE_FUNCTIONS,
    ModbusRequest,
    RegisterSeries,
)

# Industrial protocols whose server is a field device (PLC, RTU) and whose clients are masters.
ICS_PROTOCOLS = {"modbus": 502, "s7comm": 102, "enip": 44818, "opcua": 4840, "dnp3": 20000,
                 "iec104": 2404, "bacnet": 47808, "profinet": 34964}
ICS_PORTS = {port: name for name, port in ICS_PROTOCOLS.items()}
# Well-known ports, for services the decoders did not name (one-way syslog, say).
PORT_PROTOCOLS = {53: "dns", 123: "ntp", 514: "syslog", 554: "rtsp", 1883: "mqtt", 8883: "mqtt",
                  80: "http", 8080: "http", 443: "https", 22: "ssh", 3389: "rdp", 5900: "vnc",
                  23: "telnet", 67: "dhcp", 68: "dhcp", **ICS_PORTS}
TERMINAL_SERVICES = {"dns": "dns", "ntp": "ntp", "syslog": "syslog", "mqtt": "mqtt-broker",
                     "dhcp": "dhcp"}
KEEP_PAIRS = 100_000  # services counted (a scan in the capture must not grow this without end)
VALUES_KEPT = 3  # distinct values a register keeps before it is "many-valued"
MIN_SAMPLES = 3


@dataclass(slots=True)
class PointStats:
    """What one register or bit showed over the capture (O(1) memory)."""

    samples: int = 0
    low: int = 65535
    high: int = 0
    signed_low: int = 32767
    signed_high: int = -32768
    values: set[int] = field(default_factory=set)
    many: bool = False
    steps: int = 0  # consecutive samples compared
    rises: int = 0  # ... that went up by less than half the range (wrap allowed)
    falls: int = 0
    slaves: set[str] = field(default_factory=set)

    def add(self, column: np.ndarray, slave: str) -> None:
        values = column.astype(np.int64)
        if not len(values):
            return
        self.slaves.add(slave)
        self.samples += len(values)
        self.low = min(self.low, int(values.min()))
        self.high = max(self.high, int(values.max()))
        signed = np.where(values >= 32768, values - 65536, values)
        self.signed_low = min(self.signed_low, int(signed.min()))
        self.signed_high = max(self.signed_high, int(signed.max()))
        if not self.many:
            self.values.update(int(v) for v in np.unique(values)[: VALUES_KEPT + 1])
            if len(self.values) > VALUES_KEPT:
                self.many, self.values = True, set()
        if len(values) > 1:
            delta = np.diff(values) % 65536
            self.steps += len(delta)
            self.rises += int(np.count_nonzero((delta > 0) & (delta < 32768)))
            self.falls += int(np.count_nonzero(delta >= 32768))

    def kind(self, table: str) -> tuple[str, str]:
        """The guessed kind and the point type: ``(kind text, "uint16"|"int16"|"bit")``."""
        bit = table in ("CO", "DI")
        if self.samples < MIN_SAMPLES:
            return f"too few samples ({self.samples}) to guess", "bit" if bit else "uint16"
        if not self.many and len(self.values) == 1:
            return f"constant {next(iter(self.values))}", "bit" if bit else "uint16"
        if bit or (not self.many and self.values <= {0, 1}):
            return "boolean (0/1)", "bit" if bit else "uint16"
        if self.steps and self.falls == 0 and self.rises >= 0.9 * self.steps:
            return "counter (rises at nearly every read)", "uint16"
        if self.low < 32768 <= self.high and self.signed_high - self.signed_low < self.high - self.low:
            return (f"bounded analogue, signed: observed {self.signed_low}..{self.signed_high} raw",
                    "int16")
        return f"bounded analogue: observed {self.low}..{self.high} raw", "uint16"


@dataclass(slots=True)
class ServiceUse:
    flows: int = 0
    bytes: int = 0
    first: float = 0.0
    last: float = 0.0


class ProfileDrafter(BaselineLearner):
    """A pipeline sink: what the baseline learns, plus register statistics and service counts."""

    def __init__(self) -> None:
        super().__init__()
        self.points: dict[tuple[str, int], PointStats] = {}
        self.use: dict[tuple[str, str, int], ServiceUse] = {}
        self.written: dict[tuple[str, str, str, int], set[int]] = {}

    def learn(self, fact: Any) -> None:
        super().learn(fact)
        if isinstance(fact, RegisterSeries):
            self._series(fact)
        elif isinstance(fact, Conversation):
            key = (fact.src, fact.dst, fact.dport)
            use = self.use.get(key)
            if use is None:
                if len(self.use) >= KEEP_PAIRS:
                    return
                use = self.use[key] = ServiceUse(first=fact.ts, last=fact.last_ts)
            use.flows += 1
            use.bytes += fact.bytes_to_server + fact.bytes_to_client
            use.first, use.last = min(use.first, fact.ts), max(use.last, fact.last_ts)
        elif isinstance(fact, ModbusRequest) and fact.function in WRITE_FUNCTIONS:
            table = TABLE_OF_FUNCTION.get(fact.function, "HR")
            for offset, value in enumerate(fact.values[:125] or (None,)):
                key4 = (fact.src, fact.dst, table, (fact.address or 0) + offset)
                kept = self.written.setdefault(key4, set())
                if value is not None and len(kept) < VALUES_KEPT:
                    kept.add(int(value))

    def _series(self, series: RegisterSeries) -> None:
        table = series.table
        if table == "?" or not len(series.values):
            return
        values = np.asarray(series.values)
        if values.ndim != 2:
            return
        for column in range(min(values.shape[1], series.quantity)):
            key = (table, series.address + column)
            stats = self.points.get(key)
            if stats is None:
                stats = self.points[key] = PointStats()
            stats.add(values[:, column], series.slave)


@dataclass(frozen=True)
class Draft:
    """What a draft is made of: the learned baseline, the drafter's statistics, the inputs."""

    baseline: Baseline
    drafter: ProfileDrafter
    hosts: tuple[Any, ...]  # pipeline.HostSummary
    inputs: tuple[Any, ...]  # pipeline.InputSummary
    oui: OuiTable
    crane_id: str


def draft_profile(captures: Sequence[str | Path], crane_id: str | None = None,
                  oui: OuiTable | None = None) -> Draft:
    """Analyse the captures once with a ``ProfileDrafter``."""
    from cranewatch.pipeline import analyze

    drafter = ProfileDrafter()
    result = analyze([str(c) for c in captures], sinks=[drafter])
    inputs = [{"path": str(i.path), "sha256": i.sha256, "packets": i.packets, "complete": i.complete}
              for i in result.inputs]
    return Draft(drafter.baseline(inputs), drafter, result.hosts, result.inputs,
                 oui if oui is not None else load_oui(),
                 crane_id or (Path(str(captures[0])).stem.upper() if captures else "CRANE"))


# -------------------------------------------------------------------------------- guessing


def _ip_key(ip: str) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (addr.version, int(addr))


def _on_lan(b: Baseline) -> frozenset[str]:
    """Addresses seen with a MAC of their own: on the captured LAN, whatever their range (some
    plants number their LAN from public ranges)."""
    return frozenset(ip for ip, macs in b.hosts.items() if macs and is_unicast(ip))


def _local(ip: str, lan: frozenset[str] = frozenset()) -> bool:
    """On the LAN, or a private unicast address (behind the gateway: the terminal)."""
    return ip in lan or (is_unicast(ip) and not is_global(ip))


def crane_networks(b: Baseline) -> list[str]:
    """The /24s of the LAN's hosts: the baseline's (private ones) and those of public
    addresses seen with a MAC of their own."""
    nets = {str(n) for n in b.crane_networks}
    nets |= {str(ipaddress.ip_network(f"{ip}/24", strict=False)) for ip in _on_lan(b)
             if ipaddress.ip_address(ip).version == 4 and not ip.endswith(".255")}
    return sorted(nets, key=lambda n: _ip_key(n.split("/")[0]))


@dataclass(frozen=True, slots=True)
class HostGuess:
    ip: str
    mac: str | None
    zone: str
    role: str
    why: str
    name: str = ""


def _protocol(b: Baseline, server: str, port: int) -> str:
    named = sorted(p for s, pt, p in b.protocols if s == server and pt == port)
    return named[0] if named else PORT_PROTOCOLS.get(port, "")


def _services(b: Baseline, drafter: ProfileDrafter) -> list[tuple[str, str, int, str]]:
    """(client, server, port, protocol) of the services seen between local hosts, sorted.

    A service counts when it answered (TCP handshake, UDP both ways), when the decoders named
    it, or when one-way UDP went to a well-known port (syslog)."""
    answered = {(s, p) for s, _, p in b.services}
    lan = _on_lan(b)
    out = []
    for client, server, port in b.pairs:
        if not (_local(client, lan) and _local(server, lan)) or client == server:
            continue
        if not 0 < port < 65536:  # ICMP and other portless protocols: no service to allow
            continue
        protocol = _protocol(b, server, port)
        if (server, port) in answered or protocol or (client, server) in b.masters:
            out.append((client, server, port, protocol or "any"))
    for master, slave in b.masters:  # Modbus folded into series has no flow of its own only if cut short
        if not any(c == master and s == slave for c, s, _, _ in out) and _local(master, lan) \
                and _local(slave, lan):
            out.append((master, slave, 502, "modbus"))
    return sorted(set(out), key=lambda s: (_ip_key(s[0]), _ip_key(s[1]), s[2]))


def guess_roles(draft: Draft) -> list[HostGuess]:
    """Every local host with its guessed role and the reason, sorted by address."""
    b, drafter = draft.baseline, draft.drafter
    crane = [ipaddress.ip_network(n) for n in crane_networks(b)]
    lan = _on_lan(b)
    services = _services(b, drafter)

    def zone(ip: str) -> str:
        addr = ipaddress.ip_address(ip)
        return "crane" if any(addr in n for n in crane) else "terminal"

    gateway_ips = {ip for ip, macs in b.hosts.items() if macs & b.gateways}
    ips = {ip for ip in b.hosts if _local(ip, lan)} | {ip for c, s, _, _ in services for ip in (c, s)}
    ics_servers = {s: p for c, s, port, p in services if p in ICS_PROTOCOLS} | \
        {s: "modbus" for _, s in b.masters}
    ics_clients = {c: p for c, s, port, p in services if p in ICS_PROTOCOLS} | \
        {m: "modbus" for m, _ in b.masters}
    writers = {m for m, _, _, _, _ in b.writes}
    rtsp_servers = {s for c, s, port, p in services if p == "rtsp" or port == 554}
    guesses = []
    for ip in sorted(ips, key=_ip_key):
        macs = sorted(b.hosts.get(ip, frozenset()))
        mac = macs[0] if len(macs) == 1 else None
        z = zone(ip)
        served = sorted({p for c, s, _, p in services if s == ip and p != "any"})
        towards_terminal = sorted({p for c, s, _, p in services
                                   if c == ip and p in ("mqtt", "http", "https") and zone(s) == "terminal"})
        if ip in ics_servers:
            role, why = "plc", f"answers {ics_servers[ip]} (an industrial-protocol server: PLC or RTU)"
        elif ip in rtsp_servers:
            role, why = "camera", "answers RTSP"
        elif ip in gateway_ips and z == "crane":
            role, why = "gateway", "its MAC carries many addresses (a router)"
        elif z == "crane" and towards_terminal:
            role, why = "ocr", f"sends {'/'.join(towards_terminal)} towards the terminal (OCR-like)"
        elif ip in ics_clients and ip in writers:
            role, why = "ews", f"{ics_clients[ip]} master that writes (engineering workstation)"
        elif ip in ics_clients:
            role, why = "hmi", f"{ics_clients[ip]} master that only reads (HMI/SCADA)"
        elif z == "terminal" and any(p in TERMINAL_SERVICES for p in served):
            first = next(p for p in served if p in TERMINAL_SERVICES)
            role, why = TERMINAL_SERVICES[first], f"answers {first}"
        elif served:
            role, why = "server", f"answers {', '.join(served)}"
        else:
            role, why = "host", "only a client"
        guesses.append(HostGuess(ip, mac, z, role, why))
    counts: dict[str, int] = {}
    for g in guesses:
        counts[g.role] = counts.get(g.role, 0) + 1
    seen: dict[str, int] = {}
    named = []
    for g in guesses:
        seen[g.role] = seen.get(g.role, 0) + 1
        name = g.role if counts[g.role] == 1 else f"{g.role}-{seen[g.role]}"
        named.append(HostGuess(g.ip, g.mac, g.zone, g.role, g.why, name))
    return named


def _spans(addresses: Sequence[tuple[str, int, int]]) -> list[str]:
    """(table, start, count) spans merged into ``TABLE:A-B`` ranges, sorted."""
    covered: dict[str, set[int]] = {}
    for table, start, count in addresses:
        covered.setdefault(table, set()).update(range(start, start + max(count, 1)))
    out = []
    for table in sorted(covered):
        run: list[int] = []
        for address in [*sorted(covered[table]), -2]:
            if run and address == run[-1] + 1:
                run.append(address)
                continue
            if run:
                out.append(f"{table}:{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else ""))
            run = [address]
    return out


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _list(items: Sequence[Any]) -> str:
    return "[" + ", ".join(_s(i) if isinstance(i, str) else str(i) for i in items) + "]"


def _networks(ips: Sequence[str]) -> list[str]:
    return sorted({str(ipaddress.ip_network(f"{ip}/24", strict=False)) for ip in ips
                   if ipaddress.ip_address(ip).version == 4},
                  key=lambda n: _ip_key(n.split("/")[0]))


def render_draft(draft: Draft) -> str:
    """The draft as profile TOML (see module docstring)."""
    from cranewatch.profile import PROTOCOLS

    b, drafter = draft.baseline, draft.drafter
    hosts = guess_roles(draft)
    by_ip = {h.ip: h for h in hosts}
    services = _services(b, drafter)
    lines = ["# A DRAFT crane profile, made by `cranewatch profile draft` from:"]
    for item in draft.inputs:
        lines.append(f"#   {item.path}  sha256 {item.sha256}  {item.packets} packets")
    lines += [
        "# Every line marked GUESS is inferred from traffic and must be reviewed: roles, zones,",
        "# the register map's kinds, and what is allowed. Nothing outside the crane's networks is",
        "# allowed and no point is a safety point until a person says so.",
        f"# Vendors: {draft.oui.source}.",
        "# Check with: cranewatch profile check FILE",
        "",
        "[crane]",
        f"id = {_s(draft.crane_id)}  # GUESS: from the capture's file name; use the crane's id",
        "",
        "[zones]",
    ]
    crane_nets = crane_networks(b)
    terminal = _networks([h.ip for h in hosts if h.zone == "terminal"])
    if crane_nets:
        lines.append(f"crane = {_list(crane_nets)}  # GUESS: the /24s of hosts seen with a MAC of their own")
    else:
        lines.append('crane = ["192.0.2.0/24"]  # GUESS: no local host was seen with its own MAC; set the crane LAN')
    if terminal:
        lines.append(f"terminal = {_list(terminal)}  # GUESS: the /24s of local hosts reached through the gateway")
    lines.append("")
    gateways = [h for h in hosts if h.role == "gateway"]  # by address
    if gateways:
        gw = gateways[0]
        lines += ["[gateway]  # GUESS: " + gw.why, f"ip = {_s(gw.ip)}"]
        if gw.mac:
            lines.append(f"mac = {_s(gw.mac)}")
        for other in gateways[1:]:
            lines.append(f"# another router MAC on the crane LAN: {other.ip} {other.mac or ''} — "
                         "a second way off the crane (a hidden uplink?) or the same router")
        lines.append("")
    elif b.gateways:
        lines += [f"# A router MAC was seen ({', '.join(sorted(b.gateways))}) but no address for it:"
                  " add [gateway] ip = ...", ""]
    for h in hosts:
        use_in = sorted({p for c, s, _, p in services if s == h.ip})
        use_out = sorted({p for c, s, _, p in services if c == h.ip})
        lines += ["[[hosts]]", f"name = {_s(h.name)}",
                  f"role = {_s(h.role)}  # GUESS: {h.why}", f"ip = {_s(h.ip)}"]
        if h.mac:
            vendor = draft.oui.vendor(h.mac) or ("unknown vendor" if draft.oui.found else "vendor not looked up")
            lines.append(f"mac = {_s(h.mac)}  # vendor: {vendor}")
        else:
            macs = sorted(b.hosts.get(h.ip, frozenset()))
            lines.append("# no MAC of its own seen" + (f" (several: {', '.join(macs)})" if macs else
                                                      " (reached through a router)"))
        lines.append(f"# serves: {', '.join(use_in) or 'nothing'}; uses: {', '.join(use_out) or 'nothing'}")
        lines.append("")
    lines.append("# --- services seen (one [[allow]] each; remove what should not be there) -------------")
    for client, server, port, protocol in services:
        use = drafter.use.get((client, server, port))
        proto = protocol if protocol in PROTOCOLS else "any"
        lines.append("[[allow]]")
        if use is not None:
            lines.append(f"# seen: {use.flows} flow(s), {use.bytes} bytes")
        lines += [f"client = {_s(by_ip[client].name)}", f"server = {_s(by_ip[server].name)}",
                  f"protocol = {_s(proto)}" + ("" if proto == protocol else f"  # {protocol}"),
                  f"port = {port}"]
        if proto == "modbus":
            sent = {f for m, s, f in b.functions if m == client and s == server}
            functions = sorted(sent & KNOWN_FUNCTIONS)
            undefined = sorted(sent - KNOWN_FUNCTIONS)
            if undefined:
                shown = ", ".join(map(str, undefined[:12])) + (" ..." if len(undefined) > 12 else "")
                lines.append(f"# also sent {len(undefined)} undefined function code(s) ({shown}): not "
                             "allowed (a fuzzer? see the recon findings)")
            reads = [(TABLE_OF_FUNCTION.get(f, "HR"), a, q) for m, s, f, a, q in b.reads
                     if m == client and s == server]
            writes = [(t, a, n) for m, s, t, a, n in b.writes if m == client and s == server]
            if functions:
                lines.append(f"functions = {_list(functions)}")
            ranges = _spans(reads + writes)
            if ranges:
                lines.append(f"registers = {_list(ranges)}  # read: {', '.join(_spans(reads)) or 'none'}; "
                             f"written: {', '.join(_spans(writes)) or 'none'}")
            if writes:
                lines.append("write = true  # GUESS: it wrote during the capture; give it a [[maintenance]] window")
        lines.append("")
    lan = _on_lan(b)
    outside = sorted({(c, s, p) for c, s, p in b.pairs if not (_local(c, lan) and _local(s, lan))},
                     key=lambda x: (_ip_key(x[0]), _ip_key(x[1]), x[2]))
    if outside:
        lines.append("# --- seen to or from outside addresses: NOT allowed; add [[outside]] only after review")
        for c, s, p in outside[:50]:
            lines.append(f"# {c} -> {s}:{p}")
        if len(outside) > 50:
            lines.append(f"# ... and {len(outside) - 50} more")
        lines.append("")
    receivers = sorted(by_ip[ip].name for ip in b.container_receivers if ip in by_ip)
    if receivers:
        lines += ["[data]", f"container_receivers = {_list(receivers)}  # GUESS: they received container numbers", ""]
    lines += ["# --- safety points: none are guessed. Name them here and mark their [[registers]]:",
              "# [safety]", '# points = ["..."]', ""]
    lines += _register_lines(drafter)
    return "\n".join(lines).rstrip("\n") + "\n"


def _register_lines(drafter: ProfileDrafter) -> list[str]:
    if not drafter.points:
        return ["# --- register map: no Modbus reads seen"]
    slaves = sorted({s for p in drafter.points.values() for s in p.slaves}, key=_ip_key)
    lines = ["# --- register-map candidates: every address read, with a GUESS of its kind from the",
             "# values seen (raw register values; give each a name, unit, scale and min/max).",
             f"# Read from: {', '.join(slaves)}" + (" (one map for all of them: split if they differ)"
                                                   if len(slaves) > 1 else "")]
    for (table, address), stats in sorted(drafter.points.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        kind, type_ = stats.kind(table)
        lines += ["[[registers]]", f"table = {_s(table)}", f"address = {address}",
                  f"name = {_s(f'{table.lower()}_{address}')}  # GUESS: {kind}; {stats.samples} samples"]
        if table not in ("CO", "DI"):
            lines.append(f"type = {_s(type_)}")
        lines.append("")
    written = sorted({(t, a) for (_, _, t, a) in drafter.written} - set(drafter.points))
    if written:
        lines.append("# written but never read: " + ", ".join(f"{t}:{a}" for t, a in written))
    return lines
