"""Learn a crane's normal communications from clean captures; save and load them versioned.

``BaselineLearner`` is a pipeline sink: it sees the same facts the detectors see (through
``detect.adapt``) and learns hosts and MAC/IP bindings, gateways (MACs that carry many
addresses: routers), DHCP and DNS servers, the communication graph with protocols and ports,
Modbus function codes and register ranges per master, writes, polling periods, DNS names, TLS
server names and JA3/JA4 fingerprints, remote sessions and who receives container data.
``Baseline`` is the frozen result; ``save_baseline`` writes it as JSON with a schema version,
the tool version and the inputs' sha256, and ``summary_text`` gives a readable account.
``read_baseline`` reads a saved one; ``learn_baseline`` learns one from captures (a command
calls either at its edge: ``judging``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cranewatch import __version__
from cranewatch.configschema import (
    BOOL,
    FINITE,
    INT,
    STR,
    ListOf,
    MapOf,
    Nullable,
    Scalar,
    Shape,
    Table,
    Tuple,
    check,
    json_line,
)
from cranewatch.detect import adapt
from cranewatch.detect.content import find_container_data
from cranewatch.detect.facts import (
    Binding,
    Conversation,
    DhcpMessage,
    DnsQuery,
    HttpRequest,
    MqttPublish,
    Payload,
    RemoteSession,
    TlsHello,
)
from cranewatch.errors import CaptureError, CranewatchError, Location, ProfileError
from cranewatch.model import Finding
from cranewatch.process.envelope import ProcessBaseline, process_problems
from cranewatch.protocols.modbus import (
    TABLE_OF_FUNCTION,
    WRITE_FUNCTIONS,
    ModbusRequest,
    RegisterSeries,
)

if TYPE_CHECKING:
    from cranewatch.process.engine import ProcessSink
    from cranewatch.profile import CraneProfile

SCHEMA_VERSION = 1
# A MAC that sends for this many IPv4 addresses is a router. (Not "any public address": some
# plant LANs are numbered from public ranges, and every host there would look like a router.)
ROUTER_MIN_ADDRESSES = 2

Span = tuple[str, int, int]  # table, first address, count


@dataclass(frozen=True)
class Baseline:
    """What the crane normally does (see module docstring). Sets are of text/tuples."""

    hosts: dict[str, frozenset[str]] = field(default_factory=dict)  # ip -> MACs
    gateways: frozenset[str] = frozenset()  # router MACs
    crane_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    dhcp_servers: frozenset[str] = frozenset()
    default_routers: frozenset[str] = frozenset()
    dns_servers: frozenset[str] = frozenset()
    pairs: frozenset[tuple[str, str, int]] = frozenset()  # client, server, server port
    services: frozenset[tuple[str, str, int]] = frozenset()  # server, transport, port
    protocols: frozenset[tuple[str, int, str]] = frozenset()  # server, port, protocol
    masters: frozenset[tuple[str, str]] = frozenset()  # master, slave
    functions: frozenset[tuple[str, str, int]] = frozenset()  # master, slave, function
    reads: frozenset[tuple[str, str, int, int, int]] = frozenset()  # master, slave, fc, addr, qty
    writes: frozenset[tuple[str, str, str, int, int]] = frozenset()  # master, slave, table, addr, n
    periods: dict[str, float] = field(default_factory=dict)  # "master>slave fc addr+qty" -> s
    dns_names: frozenset[str] = frozenset()
    tls_names: frozenset[str] = frozenset()
    ja3: frozenset[str] = frozenset()
    ja4: frozenset[str] = frozenset()
    remote: frozenset[tuple[str, str, str]] = frozenset()  # client, server, protocol
    container_receivers: frozenset[str] = frozenset()
    inputs: tuple[dict[str, Any], ...] = ()
    created: str = ""
    tool_version: str = __version__
    # The process checks' envelopes (``process.envelope.ProcessBaseline`` as JSON), learned
    # when a profile gave the register map; None otherwise.
    process: dict[str, Any] | None = None
    # The protocol names the learning tool could give a conversation. A name outside them is
    # one the tool learned to give later (a new protocol module): the baseline saw that service
    # but could not name it, so the name alone is no change of protocol.
    named: frozenset[str] = field(default_factory=lambda: namable_protocols())

    # -- questions detectors ask -----------------------------------------------------------
    def macs_of(self, ip: str) -> frozenset[str]:
        return self.hosts.get(ip, frozenset())

    def has_pair(self, client: str, server: str, port: int | None = None) -> bool:
        for a, b in ((client, server), (server, client)):
            if port is not None and (a, b, port) in self.pairs:
                return True
            if port is None and any(p[0] == a and p[1] == b for p in self.pairs):
                return True
        return False

    def has_service(self, server: str, transport: str, port: int) -> bool:
        return (server, transport, port) in self.services

    def has_protocol(self, server: str, port: int, protocol: str) -> bool:
        return (server, port, protocol) in self.protocols or protocol not in self.named

    def is_master(self, master: str, slave: str) -> bool:
        return (master, slave) in self.masters

    def has_function(self, master: str, slave: str, function: int) -> bool:
        return (master, slave, function) in self.functions

    def has_read(self, master: str, slave: str, function: int, address: int, quantity: int) -> bool:
        return any(m == master and s == slave and f == function and a <= address
                   and address + quantity <= a + q
                   for m, s, f, a, q in self.reads)

    def has_write(self, master: str, slave: str, table: str, address: int, count: int) -> bool:
        return any(m == master and s == slave and t == table and a <= address
                   and address + count <= a + n
                   for m, s, t, a, n in self.writes)

    def has_remote(self, client: str, server: str, protocol: str) -> bool:
        return (client, server, protocol) in self.remote


class BaselineLearner:
    """A pipeline sink that learns a ``Baseline`` (call ``baseline()`` after the run)."""

    def __init__(self) -> None:
        self.ip_macs: dict[str, set[str]] = defaultdict(set)
        self.bound: dict[str, set[str]] = defaultdict(set)  # from ARP/DHCP: authoritative
        self.mac_ips: dict[str, set[str]] = defaultdict(set)
        self.pairs: set[tuple[str, str, int]] = set()
        self.services: set[tuple[str, str, int]] = set()
        self.protocols: set[tuple[str, int, str]] = set()
        self.masters: set[tuple[str, str]] = set()
        self.functions: set[tuple[str, str, int]] = set()
        self.reads: set[tuple[str, str, int, int, int]] = set()
        self.writes: set[tuple[str, str, str, int, int]] = set()
        self.periods: dict[str, float] = {}
        self.dns_names: set[str] = set()
        self.dns_servers: set[str] = set()
        self.tls_names: set[str] = set()
        self.ja3: set[str] = set()
        self.ja4: set[str] = set()
        self.dhcp_servers: set[str] = set()
        self.default_routers: set[str] = set()
        self.remote: set[tuple[str, str, str]] = set()
        self.container_receivers: set[str] = set()

    # -- sink interface --------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        for fact in adapt.facts_from_event(event):
            self.learn(fact)

    def on_series(self, series: RegisterSeries) -> None:
        self.learn(series)

    def on_flow_end(self, flow: Any) -> None:
        self.learn(adapt.conversation(flow))

    def on_payload(self, flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> None:
        self.learn(adapt.payload(flow, from_client, data, ts, frame))

    def finish(self) -> list[Finding]:
        return []

    # -- learning --------------------------------------------------------------------------
    def learn(self, fact: Any) -> None:
        if isinstance(fact, Conversation):
            self._conversation(fact)
        elif isinstance(fact, RegisterSeries):
            self.masters.add((fact.master, fact.slave))
            self.functions.add((fact.master, fact.slave, fact.function))
            self.reads.add((fact.master, fact.slave, fact.function, fact.address, fact.quantity))
            if len(fact.ts) >= 3:
                gaps = np.diff(np.asarray(fact.ts, dtype=float))
                key = f"{fact.master}>{fact.slave} fc{fact.function} {fact.address}+{fact.quantity}"
                self.periods[key] = round(float(np.median(gaps)), 4)
        elif isinstance(fact, ModbusRequest):
            self.masters.add((fact.src, fact.dst))
            self.functions.add((fact.src, fact.dst, fact.function))
            if fact.function in WRITE_FUNCTIONS:
                table = TABLE_OF_FUNCTION.get(fact.function, "HR")
                count = fact.quantity or len(fact.values) or 1
                self.writes.add((fact.src, fact.dst, table, fact.address or 0, count))
        elif isinstance(fact, Binding):
            self.bound[fact.ip].add(fact.mac)
        elif isinstance(fact, DnsQuery):
            self.dns_names.add(fact.name.lower().rstrip("."))
            self.dns_servers.add(fact.dst)
        elif isinstance(fact, TlsHello):
            if fact.sni:
                self.tls_names.add(fact.sni.lower())
            if fact.ja3:
                self.ja3.add(fact.ja3)
            if fact.ja4:
                self.ja4.add(fact.ja4)
        elif isinstance(fact, DhcpMessage):
            if fact.message_type in ("offer", "ack"):
                self.dhcp_servers.add(fact.server_ip or fact.src)
                self.default_routers.update(fact.router)
        elif isinstance(fact, RemoteSession):
            self.remote.add((fact.src, fact.dst, fact.protocol))
        elif isinstance(fact, HttpRequest | MqttPublish | Payload):
            self._content(fact)

    def _conversation(self, c: Conversation) -> None:
        self.pairs.add((c.src, c.dst, c.dport))
        for ip, macs in ((c.src, c.client_macs), (c.dst, c.server_macs)):
            for mac in macs:
                self.ip_macs[ip].add(mac)
                self.mac_ips[mac].add(ip)
        answered = c.packets_to_client > 0 and (c.transport != "tcp" or c.handshake)
        if answered:
            self.services.add((c.dst, c.transport, c.dport))
            if c.protocol:
                self.protocols.add((c.dst, c.dport, c.protocol))

    def _content(self, fact: HttpRequest | MqttPublish | Payload) -> None:
        if isinstance(fact, HttpRequest):
            data, dst = fact.uri.encode() + fact.body, fact.dst
        elif isinstance(fact, MqttPublish):
            data, dst = fact.topic.encode() + b"\n" + fact.payload, fact.dst
        else:
            data, dst = fact.data, fact.dst if fact.from_client else fact.src
        if find_container_data(data):
            self.container_receivers.add(dst)

    def baseline(self, inputs: Sequence[dict[str, Any]] = ()) -> Baseline:
        from cranewatch.detect.base import is_global

        gateways = {mac for mac, ips in self.mac_ips.items()
                    if len({ip for ip in ips if "." in ip}) >= ROUTER_MIN_ADDRESSES}
        hosts: dict[str, frozenset[str]] = {}
        for ip in set(self.ip_macs) | set(self.bound):
            own = self.bound.get(ip) or {m for m in self.ip_macs.get(ip, set()) if m not in gateways}
            hosts[ip] = frozenset(own)
        networks: set[ipaddress.IPv4Network] = set()
        for ip, macs in hosts.items():
            addr = ipaddress.ip_address(ip)
            if macs and addr.version == 4 and not addr.is_multicast and not is_global(ip) \
                    and not ip.endswith(".255"):
                networks.add(ipaddress.ip_network(f"{ip}/24", strict=False))  # type: ignore[arg-type]
        return Baseline(
            hosts=hosts, gateways=frozenset(gateways), crane_networks=tuple(sorted(networks)),
            dhcp_servers=frozenset(self.dhcp_servers), default_routers=frozenset(self.default_routers),
            dns_servers=frozenset(self.dns_servers), pairs=frozenset(self.pairs),
            services=frozenset(self.services), protocols=frozenset(self.protocols),
            masters=frozenset(self.masters), functions=frozenset(self.functions),
            reads=frozenset(self.reads), writes=frozenset(self.writes), periods=dict(self.periods),
            dns_names=frozenset(self.dns_names), tls_names=frozenset(self.tls_names),
            ja3=frozenset(self.ja3), ja4=frozenset(self.ja4), remote=frozenset(self.remote),
            container_receivers=frozenset(self.container_receivers), inputs=tuple(inputs),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )


def namable_protocols() -> frozenset[str]:
    """Every name a conversation's protocol can have with the protocol modules registered now."""
    from cranewatch.protocols.registry import load_all

    return frozenset(n for spec in load_all().values()
                     for n in (spec.name, *(d.name for d in spec.decoders), *spec.policy_names(),
                               spec.helped) if n)


# Names given by protocol modules added after baselines began to be saved, before the saved
# form listed its names: a baseline without "named" could give none of these.
_NAMED_LATER = frozenset({"ftp", "ftp-data", "smb"})


# -- saving and loading ----------------------------------------------------------------------

_SET_FIELDS = ("gateways", "dhcp_servers", "default_routers", "dns_servers", "pairs", "services",
               "protocols", "masters", "functions", "reads", "writes", "dns_names", "tls_names",
               "ja3", "ja4", "remote", "container_receivers")


def to_json(b: Baseline) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "tool_version": b.tool_version,
                           "created": b.created, "inputs": list(b.inputs)}
    out["hosts"] = {ip: sorted(macs) for ip, macs in sorted(b.hosts.items())}
    out["crane_networks"] = [str(n) for n in b.crane_networks]
    for name in _SET_FIELDS:
        out[name] = sorted([list(x) if isinstance(x, tuple) else x for x in getattr(b, name)])
    out["periods"] = dict(sorted(b.periods.items()))
    out["named"] = sorted(b.named)
    if b.process is not None:
        out["process"] = b.process
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Hosts are IP addresses: the detectors and the in-service ruleset take them as such.
IP = Scalar((str,), "an IP address", _is_ip)
_ADDRESSES = ListOf(STR)
# What ``to_json`` writes: a saved baseline is checked against it, key by key, on loading.
BASELINE_SHAPE: Shape = Table({
    "schema": INT, "tool_version": STR, "created": STR,
    "inputs": ListOf(Table({"path": STR, "sha256": STR, "packets": INT, "complete": BOOL,
                            "warnings": ListOf(STR)})),
    "hosts": MapOf(ListOf(STR), key_test=_is_ip, key_name="an IP address"),
    "crane_networks": _ADDRESSES,
    "gateways": _ADDRESSES, "dhcp_servers": _ADDRESSES, "default_routers": _ADDRESSES,
    "dns_servers": _ADDRESSES,
    "pairs": ListOf(Tuple((IP, IP, INT))),
    "services": ListOf(Tuple((IP, STR, INT))),
    "protocols": ListOf(Tuple((IP, INT, STR))),
    "masters": ListOf(Tuple((IP, IP))),
    "functions": ListOf(Tuple((IP, IP, INT))),
    "reads": ListOf(Tuple((IP, IP, INT, INT, INT))),
    "writes": ListOf(Tuple((IP, IP, STR, INT, INT))),
    "dns_names": ListOf(STR), "tls_names": ListOf(STR), "ja3": ListOf(STR), "ja4": ListOf(STR),
    "remote": ListOf(Tuple((IP, IP, STR))),
    "container_receivers": _ADDRESSES,
    "periods": MapOf(FINITE),
    "process": Nullable(Scalar((dict,), "a table")),  # checked by process.envelope
    "named": ListOf(STR),
})


def from_json(data: dict[str, Any], source: str = "<baseline>", text: str | None = None) -> Baseline:
    """A saved baseline; every key of the wrong type or unknown is a problem located at its line
    in ``text`` (the file's JSON, when given), all raised together as one ``ProfileError``."""
    loc = Location(file=source)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        found = data.get("schema") if isinstance(data, dict) else None
        line = (json_line(text, ("schema",)) if text else None) or (1 if text else None)
        raise ProfileError(f"not a cranewatch baseline of schema {SCHEMA_VERSION} (schema {found!r})",
                           Location(file=source, line=line))
    cleaned, shape_problems = check(data, BASELINE_SHAPE)
    problems = [(p.path, p.message) for p in shape_problems]
    networks = []
    for i, net in enumerate(cleaned.get("crane_networks", [])):
        try:
            networks.append(ipaddress.ip_network(net))
        except ValueError:
            problems.append((("crane_networks", i), f"crane_networks[{i}]: {net!r} is not a network (CIDR)"))
    process = cleaned.get("process")
    if process is not None:
        problems += [(("process", *path), f"process.{message}") for path, message in process_problems(process)]
    if problems:
        located: list[CranewatchError] = [ProfileError(message, Location(file=source, line=json_line(text, path) if text else None))
                   for path, message in problems]
        count = len(located)
        raise ProfileError(f"baseline has {count} problem{'s' if count > 1 else ''}", loc, located)
    sets = {name: frozenset(tuple(x) if isinstance(x, list) else x for x in cleaned.get(name, []))
            for name in _SET_FIELDS}
    return Baseline(
        hosts={ip: frozenset(macs) for ip, macs in cleaned.get("hosts", {}).items()},
        crane_networks=tuple(networks),
        periods={k: float(v) for k, v in cleaned.get("periods", {}).items()},
        inputs=tuple(cleaned.get("inputs", [])), created=str(cleaned.get("created", "")),
        tool_version=str(cleaned.get("tool_version", "")),
        process=process,
        named=(frozenset(cleaned["named"]) if "named" in cleaned
               else namable_protocols() - _NAMED_LATER),
        **sets,  # type: ignore[arg-type]
    )


def baseline_text(b: Baseline) -> str:
    """The saved form of a baseline: versioned JSON."""
    return json.dumps(to_json(b), indent=1) + "\n"


def save_baseline(b: Baseline, path: str | Path) -> None:
    Path(path).write_text(baseline_text(b), encoding="utf-8")


def read_baseline(path: str | Path) -> Baseline:
    where = Location(file=str(path))
    try:
        text = Path(path).read_bytes().decode("utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise ProfileError(f"cannot read baseline: {exc.strerror}", where) from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"baseline is not UTF-8 text ({exc.reason})",
                           Location(file=str(path), offset=exc.start)) from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"baseline is not JSON: {exc.msg}",
                           Location(file=str(path), line=exc.lineno, column=exc.colno)) from None
    except RecursionError:
        raise ProfileError("baseline is not JSON a baseline could be: nested too deeply", where) from None
    return from_json(data, str(path), text)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def learn_baseline(captures: Sequence[str | Path], profile: CraneProfile | None = None) -> Baseline:
    """Run the pipeline over clean captures with a learner and return what it learned.

    With a ``profile`` (a loaded ``CraneProfile``) the same pass also learns the process
    checks' envelopes from the register values, kept under ``process``.
    """
    from dataclasses import replace

    from cranewatch.process.engine import learn_from_sink

    learned, process_sink = _learn(captures, profile)
    if process_sink is not None:
        envelopes = learn_from_sink(process_sink)  # per segment: never across two recordings
        if envelopes is not None:
            learned = replace(learned, process=envelopes.to_json())
    return learned


def learn_baselines(captures: Sequence[str | Path],
                    profile: CraneProfile | None = None) -> tuple[Baseline, ProcessBaseline | None]:
    """The communications baseline and, with a ``profile``, the process envelopes of clean
    captures, both from one pass of the pipeline (``analyze --baseline CAPTURE``). The
    envelopes are those of ``process.engine.learn_from_captures``; the communications keep no
    process part."""
    from cranewatch.process.engine import envelopes_of

    learned, process_sink = _learn(captures, profile)
    return learned, envelopes_of(process_sink) if process_sink is not None else None


def _learn(captures: Sequence[str | Path],
           profile: CraneProfile | None) -> tuple[Baseline, ProcessSink | None]:
    """One pass over ``captures``: what the learner learned, and the process sink that read the
    register values beside it (with a profile)."""
    from cranewatch.pipeline import analyze
    from cranewatch.process.engine import ProcessSink

    learner = BaselineLearner()
    process_sink = ProcessSink(profile=profile) if profile is not None else None
    sinks: list[Any] = [learner] if process_sink is None else [learner, process_sink]
    result = analyze([str(c) for c in captures], sinks=sinks)
    for item in result.inputs:
        if item.packets == 0 and not item.complete:
            problem = item.warnings[0] if item.warnings else "not a readable capture"
            raise CaptureError(f"cannot learn a baseline from it: {problem}", Location(file=str(item.path)))
    inputs = [{"path": str(i.path), "sha256": i.sha256, "packets": i.packets, "complete": i.complete,
               **({"warnings": list(i.warnings)} if i.warnings else {})} for i in result.inputs]
    return learner.baseline(inputs), process_sink


def is_saved_baseline(path: str | Path) -> bool:
    p = Path(path)
    if p.suffix.lower() == ".json":
        return True
    try:
        with open(p, "rb") as handle:
            return handle.read(1).strip() == b"{"
    except OSError:
        return False


def summary_text(b: Baseline) -> str:
    """A readable account of a baseline."""
    lines = [f"cranewatch baseline (schema {SCHEMA_VERSION}, cranewatch {b.tool_version}, {b.created})"]
    for i in b.inputs:
        lines.append(f"  input {i.get('path')}  sha256 {str(i.get('sha256'))[:16]}…  {i.get('packets')} packets")
    lines.append(f"hosts ({len(b.hosts)}):")
    for ip, macs in sorted(b.hosts.items(), key=lambda kv: _ip_key(kv[0])):
        lines.append(f"  {ip:<16} {', '.join(sorted(macs)) or '(behind a router)'}")
    lines.append(f"gateways (router MACs): {', '.join(sorted(b.gateways)) or 'none seen'}")
    lines.append(f"crane networks: {', '.join(map(str, b.crane_networks)) or 'none'}")
    lines.append(f"DHCP servers: {', '.join(sorted(b.dhcp_servers)) or 'none'}; "
                 f"DNS servers: {', '.join(sorted(b.dns_servers)) or 'none'}")
    lines.append(f"communications ({len(b.pairs)}):")
    for client, server, port in sorted(b.pairs, key=lambda p: (_ip_key(p[0]), _ip_key(p[1]), p[2])):
        protos = sorted({p for s, pt, p in b.protocols if s == server and pt == port})
        lines.append(f"  {client:<16} → {server}:{port} {' '.join(protos)}")
    lines.append("Modbus masters:")
    for master, slave in sorted(b.masters):
        fcs = sorted(f for m, s, f in b.functions if m == master and s == slave)
        ranges = sorted(f"{TABLE_OF_FUNCTION.get(f, '?')}:{a}-{a + q - 1}"
                        for m, s, f, a, q in b.reads if m == master and s == slave)
        lines.append(f"  {master} → {slave}: FC {', '.join(map(str, fcs))}; reads {', '.join(ranges)}")
        for m, s, t, a, n in sorted(b.writes):
            if m == master and s == slave:
                lines.append(f"      writes {t}:{a}-{a + n - 1}")
    if b.periods:
        lines.append("polling periods:")
        for key, period in sorted(b.periods.items()):
            lines.append(f"  {key}: {period * 1000:.0f} ms")
    lines.append(f"DNS names ({len(b.dns_names)}): {', '.join(sorted(b.dns_names)[:20])}")
    lines.append(f"TLS server names ({len(b.tls_names)}): {', '.join(sorted(b.tls_names)[:20])}")
    lines.append(f"JA3 ({len(b.ja3)}), JA4 ({len(b.ja4)}); remote sessions: {len(b.remote)}")
    lines.append(f"container data receivers: {', '.join(sorted(b.container_receivers)) or 'none'}")
    from cranewatch.report.terminal import printable_lines  # DNS and TLS names are the wire's

    return printable_lines(lines)


def _ip_key(ip: str) -> tuple[int, int]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0)
    return (addr.version, int(addr))


__all__ = ["Baseline", "BaselineLearner", "learn_baseline", "learn_baselines", "read_baseline",
           "save_baseline", "summary_text"]
