"""The Public Suffix List: is a dotted word a host name on the Internet, or an identifier?

``workorders.serve`` or ``config.value`` look like host names to a pattern; only a name that
ends in a real public suffix (``com``, ``co.uk``, ``s3.amazonaws.com`` …) under a registrable
label can be resolved on the Internet. The list is read at run time from Debian's
``publicsuffix`` package (``/usr/share/publicsuffix/public_suffix_list.dat``, MPL-2.0 data;
``$CRANEWATCH_PSL`` names another copy), never bundled. Rules follow publicsuffix.org's
algorithm: the longest matching rule wins, ``*`` matches one label, ``!`` rules are exceptions.
Unlike a browser, the implicit ``*`` rule is not applied: a name whose last label is no known
top-level domain (``plc.crane``, ``hmi.site``) is not a public host name.

Without the list (``available()`` False), every dotted name counts as public, as before the
list was used, and the scan says so.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

DEFAULT = Path("/usr/share/publicsuffix/public_suffix_list.dat")


@cache
def _rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """(plain rules, wildcard parents, exceptions), or None when no list can be read."""
    path = Path(os.environ.get("CRANEWATCH_PSL") or DEFAULT)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    plain: set[str] = set()
    wild: set[str] = set()
    exceptions: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip().split()[0] if raw.strip() else ""
        if not line or line.startswith("//"):
            continue
        try:
            rule = line.lower() if line.isascii() else line.lower().encode("idna").decode("ascii")
        except UnicodeError:
            continue  # a rule Python's IDNA 2003 codec cannot spell: no ASCII host ends in it
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wild.add(rule[2:])
        else:
            plain.add(rule)
    return frozenset(plain), frozenset(wild), frozenset(exceptions)


def available() -> bool:
    return _rules() is not None


def public_suffix(host: str) -> str | None:
    """The public suffix ``host`` ends in by an explicit rule of the list, or None."""
    rules = _rules()
    if rules is None:
        return None
    plain, wild, exceptions = rules
    labels = host.lower().rstrip(".").split(".")
    best: str | None = None
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in exceptions:
            return ".".join(labels[i + 1:])  # an exception: its parent is the suffix
        parent = ".".join(labels[i + 1:])
        if candidate in plain or (parent and parent in wild):
            best = candidate
            break  # the longest match comes first
    return best


def is_internet_name(host: str) -> bool:
    """Whether ``host`` is a registrable name on the Internet: a label under a public suffix.
    True for every dotted name when the list is not available."""
    host = host.lower().rstrip(".")
    if "." not in host:
        return False
    if not available():
        return True
    suffix = public_suffix(host)
    return suffix is not None and len(host) > len(suffix) + 1 and host.endswith("." + suffix)
