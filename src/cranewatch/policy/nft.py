"""An nftables backend declared by templates: rulesets as data in, ``nft -f`` text out.

Like a pySigma backend, the text of every construct is a template in ``TEMPLATES``; the
quarantine and in-service generators only build a ``Ruleset`` (tables, sets, counters,
chains, rules — all plain data) and ``render`` fills the templates in a fixed order, so the
same input always gives byte-identical output.

Nothing a user or a profile wrote reaches the text unchecked (the ruleset is a firewall: one
injected ``accept`` or a newline before ``flush ruleset`` would open it): interface names
follow the kernel's rules in a safe character set (``interface_name``), names are nft
identifiers, addresses are re-printed by ``ipaddress``, and comments and quoted strings are
escaped (``comment_text``, ``nft_string``). ``render`` checks all of it again and refuses
what does not fit, so a generator bug cannot emit an injectable ruleset either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cranewatch.errors import UsageError

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
    "rule": "\t\t{match}{helper}{log}counter name \"{counter}\" {verdict}",
    "bare_rule": "\t\t{match}{verdict}",
    "log": "log prefix \"{prefix}\" ",
    # a conntrack helper object (the kernel's nf_conntrack_<type>; in an inet table for both
    # families) and the statement that assigns it to a connection's first packet
    "helper": "\tct helper {name} {{\n\t\ttype \"{type}\" protocol {protocol}\n\t}}",
    "helper_set": "ct helper set \"{name}\" ",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: match expressions, an optional log prefix, a named counter and a verdict."""

    match: tuple[str, ...]
    verdict: str  # accept | drop
    counter: str | None = None
    log_prefix: str | None = None
    comments: tuple[str, ...] = ()
    helper: str | None = None  # the name of a ``CtHelper`` of the ruleset, assigned to the connection


@dataclass(frozen=True, slots=True)
class CtHelper:
    """A conntrack helper object: ``type`` is the kernel helper's name (``ftp``)."""

    name: str
    type: str
    protocol: str  # tcp | udp


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
    helpers: tuple[CtHelper, ...] = ()

    def counters(self) -> list[str]:
        names = {r.counter for c in self.chains for r in c.rules if r.counter}
        return sorted(names)


# IFNAMSIZ is 16 with the terminating NUL; the kernel also refuses "/", ":" and white space.
# A narrower set than the kernel's: nothing in it means anything inside an nft string.
INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_IDENTIFIER = 63  # far below nft's 255; long names are cut and told apart by a hash
HOOKS = frozenset({"forward", "input", "output"})
VERDICTS = frozenset({"accept", "drop"})
HELPER_TYPE_RE = re.compile(r"^[a-z0-9-]{1,15}$")  # the kernel's helper names (ftp, tftp, sip ...)
# What a match expression may hold: words, addresses, set references, braces and commas, and
# quoted interface names (checked on their own).
MATCH_RE = re.compile(r'^[A-Za-z0-9_@.:/{}, *-]*(?:"[A-Za-z0-9_.-]{1,15}"[A-Za-z0-9_@.:/{}, *-]*)*$')


def interface_name(name: str) -> str:
    """``name`` when it is a Linux interface name nft can quote safely, else ``UsageError``."""
    if not INTERFACE_RE.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"interface {name!r} is not an interface name: 1-15 letters, digits, '_', '.' or '-'"
            " (Linux allows at most 15 characters)")
    return name


def table_name(crane: str) -> str:
    """``cranewatch_<crane>`` with the crane name folded to an nft identifier (STS-07 → sts_07)."""
    return identifier("cranewatch", crane)


def identifier(*parts: str) -> str:
    """A counter name from words: lower case, ``_`` between, nothing nft would need quoted."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower())).strip("_")
    if not name or not name[0].isalpha():
        name = f"n_{name}".rstrip("_")
    if len(name) > MAX_IDENTIFIER:  # keep it readable and unique: a cut name plus a hash
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_IDENTIFIER - 9].rstrip('_')}_{digest}"
    return name


NFT_STRING_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:,/+=@()")


def nft_string(text: str, limit: int | None = None) -> str:
    """Text safe inside an nft double-quoted string: letters, digits, space and ``-_.:,/+=@()``;
    anything else becomes ``?`` (nft has no escapes, and expands ``$name`` even inside quotes).
    Cut to ``limit`` bytes (all kept characters are ASCII)."""
    safe = "".join(c if c in NFT_STRING_SAFE else "?" for c in text)
    return safe[:limit] if limit is not None else safe


def comment_text(text: str) -> str:
    """Text safe after ``#``: control characters (a newline would end the comment) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def log_prefix(crane: str, purpose: str) -> str:
    # kernels cut log prefixes at 127 bytes; a crane name is short, the purpose is one word
    return nft_string(f"cw {crane} {purpose} drop: ", 127)


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
    """Networks in numeric order, host addresses without /32; a network inside another one of
    the list is left out (an nft interval set refuses overlapping elements)."""
    nets = {ipaddress.ip_network(a, strict=False) for a in addresses}
    outer = [n for n in nets if not any(o != n and o.version == n.version and n.subnet_of(o)  # type: ignore[arg-type]
                                        for o in nets)]
    ordered = sorted(outer, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n.network_address) if n.num_addresses == 1 else str(n) for n in ordered)


def address_sets(name: str, addresses: Sequence[str]) -> tuple[AddressSet, ...]:
    """One set per IP family (an nft set holds one address type): the IPv4 set is ``name``,
    the IPv6 set is ``name`` too when alone and ``name_ip6`` beside an IPv4 one."""
    by_family: dict[str, list[str]] = {}
    for address in addresses:
        by_family.setdefault(family_of(address), []).append(address)
    return tuple(
        AddressSet(name if fam == "ip" or "ip" not in by_family else f"{name}_ip6", fam,
                   sorted_addresses(by_family[fam]))
        for fam in ("ip", "ip6") if fam in by_family
    )


def _checked(ruleset: Ruleset) -> None:
    """Refuse a ruleset whose names, hooks, verdicts or matches nft could read otherwise."""
    names = [ruleset.table, *(s.name for s in ruleset.sets), *ruleset.counters(),
             *(c.name for c in ruleset.chains)]
    bad = [n for n in names if not IDENTIFIER_RE.fullmatch(n) or len(n) > 255]
    bad += [c.hook for c in ruleset.chains if c.hook not in HOOKS]
    bad += [r.verdict for c in ruleset.chains for r in c.rules if r.verdict not in VERDICTS]
    bad += [m for c in ruleset.chains for r in c.rules for m in r.match if not MATCH_RE.fullmatch(m)]
    helpers = {h.name for h in ruleset.helpers}
    bad += [h.name for h in ruleset.helpers if not IDENTIFIER_RE.fullmatch(h.name) or len(h.name) > 15
            or not HELPER_TYPE_RE.fullmatch(h.type) or h.protocol not in ("tcp", "udp")]
    bad += [r.helper for c in ruleset.chains for r in c.rules
            if r.helper is not None and (r.helper not in helpers or r.counter is None)]
    for s in ruleset.sets:
        if s.family not in ("ip", "ip6") or any(family_of(e) != s.family for e in s.elements):
            bad.append(f"set {s.name}: {', '.join(s.elements)}")
    if bad:
        raise ValueError(f"refusing to render an unsafe nftables ruleset: {bad!r}")


def render(ruleset: Ruleset) -> str:
    """The ruleset as ``nft -f`` text: header comments, reset, table with sets, counters, chains."""
    _checked(ruleset)
    t = TEMPLATES
    out: list[str] = [t["comment"].format(text=comment_text(line)) if line else "#"
                      for line in ruleset.header]
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
    for helper in ruleset.helpers:
        out.append(t["helper"].format(name=helper.name, type=helper.type, protocol=helper.protocol))
    for chain in ruleset.chains:
        out.append("")
        out.append(t["chain_open"].format(name=chain.name, hook=chain.hook))
        for rule in chain.rules:
            for text in rule.comments:
                out.append(t["rule_comment"].format(text=comment_text(text)))
            match = "".join(m + " " for m in rule.match)
            if rule.counter is None:
                out.append(t["bare_rule"].format(match=match, verdict=rule.verdict))
                continue
            log = t["log"].format(prefix=nft_string(rule.log_prefix, 127)) if rule.log_prefix else ""
            assign = t["helper_set"].format(name=rule.helper) if rule.helper else ""
            out.append(t["rule"].format(match=match, helper=assign, log=log, counter=rule.counter,
                                        verdict=rule.verdict))
        out.append(t["chain_close"].format())
    out.append(t["table_close"].format())
    return "\n".join(out) + "\n"
