"""c2: periodic callbacks (interval and jitter estimated), DNS tunnelling (label length,
entropy, volume per domain), and TLS to server names or fingerprints the baseline never saw
(T0869 Standard Application Layer Protocol, T0885 Commonly Used Port).

A beacon is a client opening connections to the same server and port again and again at a
steady interval: the median interval and the median absolute deviation around it say how
steady. Pairs the profile allows or the baseline knows (NTP to the terminal's time server,
syslog) are not callbacks; thresholds live in ``rules/c2.yaml``.

What is kept per pair and per domain is bounded (``detect.bounded``): counts, first and last
time, the first callbacks or queries as evidence, the callbacks' start times (the first
``CALLBACK_TIMES`` of a pair: a pair calling back for days is judged on those), and each
domain's distinct names (up to ``DOMAIN_NAMES``) with their label statistics.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from statistics import median
from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.bounded import Earliest, EarliestTimes, FirstValues
from cranewatch.detect.facts import Conversation, DnsQuery, TlsHello
from cranewatch.detect.rules import rule_data
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="c2",
    category="c2",
    severity=Severity.HIGH,
    technique=("T0869",),
    remedy="A crane host calls out on its own. Find the process making these connections on "
    "the host (it may be an implant or unsanctioned vendor software), block the destination at "
    "the crane gateway and keep the capture as evidence.",
)


CALLBACK_TIMES = 1 << 16  # start times kept per pair for the interval statistics
DOMAIN_NAMES = 1 << 16  # distinct names kept per domain (more are counted, not judged)


@dataclass(slots=True)
class _Callbacks:
    """One (client, server, port, transport): its callbacks summarised."""

    facts: Earliest = field(default_factory=Earliest)
    times: EarliestTimes = field(default_factory=lambda: EarliestTimes(CALLBACK_TIMES))
    protocols: FirstValues = field(default_factory=lambda: FirstValues(64))


@dataclass(slots=True)
class _Domain:
    """One registered domain: its queries summarised and its distinct names' label statistics."""

    facts: Earliest = field(default_factory=Earliest)
    first: tuple[float, int, DnsQuery] | None = None  # the earliest query (min by ts, then arrival)
    names: set[str] = field(default_factory=set)  # distinct, lower-case
    more_names: int = 0  # distinct names beyond DOMAIN_NAMES (not told apart: counted each time)
    longest: int = 0
    long_labels: int = 0
    entropy_sum: float = 0.0
    shown: FirstValues = field(default_factory=lambda: FirstValues(DOMAIN_NAMES))  # names as asked
    clients: FirstValues = field(default_factory=lambda: FirstValues(4096))
    resolvers: FirstValues = field(default_factory=lambda: FirstValues(4096))

    def add(self, query: DnsQuery, entropy_min_label: int) -> None:
        arrival = self.facts.add(query)
        if self.first is None or query.ts < self.first[0]:
            self.first = (query.ts, arrival, query)
        name = query.name.lower()
        if name not in self.names:
            if len(self.names) >= DOMAIN_NAMES:
                self.more_names += 1
            else:
                self.names.add(name)
                for label in subdomain_labels(name):
                    self.longest = max(self.longest, len(label))
                    if len(label) >= entropy_min_label:
                        self.long_labels += 1
                        self.entropy_sum += entropy(label)
        self.shown.add(query.name, query.ts, arrival)
        self.clients.add(query.src, query.ts, arrival)
        self.resolvers.add(query.dst, query.ts, arrival)

    @property
    def distinct(self) -> int:
        return len(self.names) + self.more_names


@cache
def thresholds() -> dict[str, Any]:
    return rule_data("c2")


@cache
def _exempt_protocols() -> frozenset[str]:
    return frozenset(thresholds()["beacon"]["exempt_protocols"])


def periodicity(times: list[float], cuts: Sequence[float] = ()) -> tuple[float, float] | None:
    """(median interval, jitter as MAD/median) of sorted start times, None if too few.

    An interval that spans one of ``cuts`` (where separate recordings meet) is no interval.
    """
    if len(times) < 3:
        return None
    times = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)
            if not any(a < cut <= b for cut in cuts)]
    if len(gaps) < 2:
        return None
    period = median(gaps)
    if period <= 0:
        return None
    mad = median(abs(g - period) for g in gaps)
    return period, mad / period


def _same(values: dict[str, Any], _fact: Any) -> dict[str, Any]:
    return values


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@lru_cache(maxsize=16384)  # asked for every DNS question; a crane asks the same few names all day
def registered_domain(name: str) -> str:
    """The domain a name belongs to (last two labels; three under ``co.uk``-like suffixes)."""
    labels = [x for x in name.lower().rstrip(".").split(".") if x]
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def subdomain_labels(name: str) -> list[str]:
    domain = registered_domain(name)
    rest = name.lower().rstrip(".")[: -len(domain)].rstrip(".")
    return [x for x in rest.split(".") if x]


class CommandAndControl:
    name: ClassVar[str] = "c2"
    accepts: ClassVar[tuple[type, ...]] = (Conversation, DnsQuery, TlsHello)

    def __init__(self) -> None:
        self.callbacks: dict[tuple[str, str, int, str], _Callbacks] = {}
        self.domains: dict[str, _Domain] = {}
        self.tls = Incidents()

    @staticmethod
    def judges(ctx: Context) -> tuple[type, ...]:
        """TLS hellos only with a baseline: a server name is new only against one."""
        return (Conversation, DnsQuery, TlsHello) if ctx.baseline is not None else (Conversation, DnsQuery)

    def observe(self, fact: Any, ctx: Context) -> None:
        if isinstance(fact, Conversation):
            if fact.protocol in _exempt_protocols():
                return
            if ctx.known_pair(fact.src, fact.dst, fact.dport):
                return
            if ctx.profile is None and ctx.baseline is None and not ctx.is_outside(fact.dst):
                return  # without context, periodic internal traffic is polling, not a callback
            key = (fact.src, fact.dst, fact.dport, fact.transport)
            pair = self.callbacks.get(key)
            if pair is None:
                pair = self.callbacks[key] = _Callbacks()
            arrival = pair.facts.add(fact)
            pair.times.add(fact.ts)
            pair.protocols.add(fact.protocol or fact.transport, fact.ts, arrival)
        elif isinstance(fact, DnsQuery):
            if fact.name.endswith((".arpa", ".local")) or (
                    ctx.baseline is not None and fact.name.lower().rstrip(".") in ctx.baseline.dns_names):
                return
            domain = registered_domain(fact.name)
            summary = self.domains.get(domain)
            if summary is None:
                summary = self.domains[domain] = _Domain()
            summary.add(fact, thresholds()["dns_tunnel"]["entropy_min_label"])
        elif isinstance(fact, TlsHello):
            self._tls(fact, ctx)

    def _tls(self, hello: TlsHello, ctx: Context) -> None:
        if ctx.profile is not None and ctx.profile.allowed_outside(hello.src, hello.dst, hello.dport):
            return
        if ctx.baseline is None:
            return
        name_known = hello.sni is None or hello.sni.lower() in ctx.baseline.tls_names
        fp_known = (hello.ja3 is None or hello.ja3 in ctx.baseline.ja3) and \
            (hello.ja4 is None or hello.ja4 in ctx.baseline.ja4)
        if name_known and fp_known and ctx.baseline.has_pair(hello.src, hello.dst, hello.dport):
            return
        self.tls.add((hello.src, hello.dst, hello.sni or ""), hello, {
            "sni": hello.sni or "", "ja3": [hello.ja3] if hello.ja3 else [],
            "ja4": [hello.ja4] if hello.ja4 else [], "port": hello.dport,
            "new_name": not name_known, "new_fingerprint": not fp_known})

    def finish(self, ctx: Context) -> list[Finding]:
        return [*self._beacons(ctx), *self._tunnels(ctx), *self._tls_findings(ctx)]

    def _beacons(self, ctx: Context) -> list[Finding]:
        rules = thresholds()["beacon"]
        findings = []
        for key, pair in self.callbacks.items():
            if pair.facts.count < rules["min_connections"]:
                continue
            shape = periodicity(pair.times.values(), ctx.segment_starts)
            if shape is None:
                continue
            period, jitter = shape
            if period < rules["min_interval_s"] or jitter > rules["max_jitter_ratio"]:
                continue
            src, dst, port, _transport = key
            values: dict[str, Any] = {"interval_s": round(period, 3), "jitter": round(jitter, 3),
                                      "protocols": []}
            incident = pair.facts.incident(key, functools.partial(_same, values))
            incident.values["protocols"] = pair.protocols.ordered()
            outside = ctx.is_outside(dst)
            title = (f"{ctx.host_name(src)} calls {ctx.host_name(dst)}:{port} every {period:.1f} s "
                     f"(jitter {jitter:.0%}, {pair.facts.count} callbacks)")
            findings.append(make_finding(ctx, VERDICT, ("beacon", *key), incident, title, src,
                                         endpoint(dst, port),
                                         Severity.HIGH if outside else Severity.MEDIUM))
        return findings

    def _tunnels(self, ctx: Context) -> list[Finding]:
        rules = thresholds()["dns_tunnel"]
        findings = []
        for domain, summary in self.domains.items():
            distinct, longest = summary.distinct, summary.longest
            mean_entropy = summary.entropy_sum / summary.long_labels if summary.long_labels else 0.0
            tunnel = distinct >= rules["min_queries"] and (
                longest >= rules["long_label"] or mean_entropy >= rules["entropy_bits"])
            if not tunnel and not (ctx.baseline is not None and ctx.baseline.dns_names):
                continue
            incident = summary.facts.incident((domain,), lambda _: {"names": [], "clients": [], "resolvers": []})
            incident.values.update({"names": summary.shown.ordered(10), "clients": summary.clients.ordered(),
                                    "resolvers": summary.resolvers.ordered()})
            incident.values.update({"distinct_names": distinct, "longest_label": longest,
                                    "mean_entropy": round(mean_entropy, 2)})
            assert summary.first is not None
            first = summary.first[2]
            if tunnel:
                title = (f"DNS tunnelling suspected under {domain}: {distinct} names, labels up to "
                         f"{longest} chars, entropy {mean_entropy:.1f} bits/char")
                severity = Severity.HIGH
            else:
                title = f"DNS lookups of {domain}, a domain never seen in the baseline"
                severity = Severity.LOW
            findings.append(make_finding(ctx, VERDICT, ("dns", domain), incident, title, first.src,
                                         endpoint(first.dst, first.dport or 53), severity))
        return findings

    def _tls_findings(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.tls.items():
            src, dst, sni = key
            why = []
            if inc.values.get("new_name"):
                why.append(f"server name {sni!r} never seen")
            if inc.values.get("new_fingerprint"):
                why.append("client fingerprint never seen")
            if not why:
                why.append("server never contacted in the baseline")
            title = f"TLS from {ctx.host_name(src)} to {ctx.host_name(dst)}: {', '.join(why)}"
            outside = ctx.is_outside(dst)
            findings.append(make_finding(ctx, VERDICT, ("tls", *key), inc, title, src,
                                         endpoint(dst, inc.values.get("port")),
                                         Severity.HIGH if outside else Severity.MEDIUM))
        return findings
