"""c2: periodic callbacks (interval and jitter estimated), DNS tunnelling (label length,
entropy, volume per domain), and TLS to server names or fingerprints the baseline never saw
(T0869 Standard Application Layer Protocol, T0885 Commonly Used Port).

A beacon is a client opening connections to the same server and port again and again at a
steady interval: the median interval and the median absolute deviation around it say how
steady. Pairs the profile allows or the baseline knows (NTP to the terminal's time server,
syslog) are not callbacks; thresholds live in ``rules/c2.yaml``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import cache, lru_cache
from statistics import median
from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
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
        self.callbacks: dict[tuple[str, str, int, str], list[Conversation]] = defaultdict(list)
        self.domains: dict[str, list[DnsQuery]] = defaultdict(list)
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
            self.callbacks[(fact.src, fact.dst, fact.dport, fact.transport)].append(fact)
        elif isinstance(fact, DnsQuery):
            if fact.name.endswith((".arpa", ".local")) or (
                    ctx.baseline is not None and fact.name.lower().rstrip(".") in ctx.baseline.dns_names):
                return
            self.domains[registered_domain(fact.name)].append(fact)
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
        for key, convs in self.callbacks.items():
            if len(convs) < rules["min_connections"]:
                continue
            convs.sort(key=lambda c: c.ts)
            shape = periodicity([c.ts for c in convs], ctx.segment_starts)
            if shape is None:
                continue
            period, jitter = shape
            if period < rules["min_interval_s"] or jitter > rules["max_jitter_ratio"]:
                continue
            src, dst, port, transport = key
            inc = Incidents()
            for c in convs:
                inc.add(key, c, {"interval_s": round(period, 3), "jitter": round(jitter, 3),
                                 "protocols": [c.protocol or transport]})
            incident = inc.by_key[key]
            outside = ctx.is_outside(dst)
            title = (f"{ctx.host_name(src)} calls {ctx.host_name(dst)}:{port} every {period:.1f} s "
                     f"(jitter {jitter:.0%}, {len(convs)} callbacks)")
            findings.append(make_finding(ctx, VERDICT, ("beacon", *key), incident, title, src,
                                         endpoint(dst, port),
                                         Severity.HIGH if outside else Severity.MEDIUM))
        return findings

    def _tunnels(self, ctx: Context) -> list[Finding]:
        rules = thresholds()["dns_tunnel"]
        findings = []
        for domain, queries in self.domains.items():
            names = {q.name.lower() for q in queries}
            labels = [lab for n in names for lab in subdomain_labels(n)]
            longest = max((len(x) for x in labels), default=0)
            long_labels = [x for x in labels if len(x) >= rules["entropy_min_label"]]
            mean_entropy = sum(map(entropy, long_labels)) / len(long_labels) if long_labels else 0.0
            tunnel = len(names) >= rules["min_queries"] and (
                longest >= rules["long_label"] or mean_entropy >= rules["entropy_bits"])
            if not tunnel and not (ctx.baseline is not None and ctx.baseline.dns_names):
                continue
            inc = Incidents()
            for q in sorted(queries, key=lambda q: q.ts):
                inc.add((domain,), q, {"names": [q.name], "clients": [q.src], "resolvers": [q.dst]})
            incident = inc.by_key[(domain,)]
            incident.values["names"] = incident.values["names"][:10]
            incident.values.update({"distinct_names": len(names), "longest_label": longest,
                                    "mean_entropy": round(mean_entropy, 2)})
            first = min(queries, key=lambda q: q.ts)
            if tunnel:
                title = (f"DNS tunnelling suspected under {domain}: {len(names)} names, labels up to "
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
