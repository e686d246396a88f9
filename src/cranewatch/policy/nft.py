"""An nftables backend declared by templates: rulesets as data in, ``nft -f`` text out.

Like a pySigma backend, the text of every construct is a template in ``TEMPLATES``; the
quarantine and in-service generators only build a ``Ruleset`` (tables, sets, counters,
chains, rules — all plain data) and ``render`` fills the templates in a fixed order, so the
same input always gives byte-identical output.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TEMPLATES: dict[str, str] = {
    "comment": "# {text}",
    # create-then-delete makes loading idempotent: `nft -f` replaces the table atomically
    "reset": "table inet {table}\ndelete table inet {table}\n",
    "table_open": "table inet {table} {{",
    "table_close": "}}",
    "set": "\tset {name} {{\n\t\ttype {type}\n\t\tflags interval\n\t\telements = {{ {elements} }}\n\t}}",
    "counter": "\tcounter {name} {{ }}",
    "chain_open": "\tchain {name} {{\n\t\ttype filter hook {hook} priority filter; policy accept;",
    "chain_close": "\t}}",
    "rule_comment": "\t\t# {text}",
    "rule": "\t\t{match}{log}counter name \"{counter}\" {verdict}",
    "bare_rule": "\t\t{match}{verdict}",
    "log": "log prefix \"{prefix}\" ",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: match expressions, an optional log prefix, a named counter and a verdict."""

    match: tuple[str, ...]
    verdict: str  # accept | drop
    counter: str | None = None
    log_prefix: str | None = None
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    hook: str  # forward | input | output
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class AddressSet:
    name: str
    family: str  # ip | ip6
    elements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A whole table: what the header says, its sets, its counters and its chains."""

    table: str
    header: tuple[str, ...]
    sets: tuple[AddressSet, ...]
    chains: tuple[Chain, ...]

    def counters(self) -> list[str]:
        names = {r.counter for c in self.chains for r in c.rules if r.counter}
        return sorted(names)


def table_name(crane: str) -> str:
    """``cranewatch_<crane>`` with the crane name folded to an nft identifier (STS-07 → sts_07)."""
    return "cranewatch_" + re.sub(r"[^a-z0-9]+", "_", crane.lower()).strip("_")


def identifier(*parts: str) -> str:
    """A counter name from words: lower case, ``_`` between, nothing nft would need quoted."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower())).strip("_")


def log_prefix(crane: str, purpose: str) -> str:
    # kernels cut log prefixes at 127 bytes; a crane name is short, the purpose is one word
    return f"cw {crane} {purpose} drop: "[:127]


def family_of(address: str) -> str:
    """``ip`` or ``ip6`` for an address or network."""
    return "ip6" if ipaddress.ip_network(address, strict=False).version == 6 else "ip"


def address_match(direction: str, addresses: Sequence[str]) -> str:
    """``ip saddr 10.20.7.20`` or ``ip daddr { a, b }`` (a single family per match)."""
    fam = family_of(addresses[0])
    if len(addresses) == 1:
        return f"{fam} {direction} {addresses[0]}"
    return f"{fam} {direction} {{ {', '.join(addresses)} }}"


def sorted_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Networks in numeric order, host addresses without /32."""
    nets = {ipaddress.ip_network(a, strict=False) for a in addresses}
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n.network_address) if n.num_addresses == 1 else str(n) for n in ordered)


def _quote_safe(text: str) -> str:
    # nft strings cannot hold a double quote; comments are ours, names come from the profile
    return text.replace('"', "'").replace("\n", " ")


def render(ruleset: Ruleset) -> str:
    """The ruleset as ``nft -f`` text: header comments, reset, table with sets, counters, chains."""
    t = TEMPLATES
    out: list[str] = [t["comment"].format(text=line) if line else "#" for line in ruleset.header]
    out.append("")
    out.append(t["reset"].format(table=ruleset.table))
    out.append(t["table_open"].format(table=ruleset.table))
    for s in ruleset.sets:
        addr_type = "ipv6_addr" if s.family == "ip6" else "ipv4_addr"
        out.append(t["set"].format(name=s.name, type=addr_type, elements=", ".join(s.elements)))
    if ruleset.sets:
        out.append("")
    for name in ruleset.counters():
        out.append(t["counter"].format(name=name))
    for chain in ruleset.chains:
        out.append("")
        out.append(t["chain_open"].format(name=chain.name, hook=chain.hook))
        for rule in chain.rules:
            for text in rule.comments:
                out.append(t["rule_comment"].format(text=_quote_safe(text)))
            match = "".join(m + " " for m in rule.match)
            if rule.counter is None:
                out.append(t["bare_rule"].format(match=match, verdict=rule.verdict))
                continue
            log = t["log"].format(prefix=_quote_safe(rule.log_prefix)) if rule.log_prefix else ""
            out.append(t["rule"].format(match=match, log=log, counter=rule.counter, verdict=rule.verdict))
        out.append(t["chain_close"].format())
    out.append(t["table_close"].format())
    return "\n".join(out) + "\n"
