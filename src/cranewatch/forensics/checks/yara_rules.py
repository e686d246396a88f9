"""YARA: the shipped rule set (``forensics/rules``) plus the user's ``--rules`` directory.

Rules are compiled once, split by their ``scope`` meta: text rules run on text files only
(private-key and ``/dev/tcp`` markers live inside the ssh and bash binaries), binary rules on
ELF and other non-text files. A match becomes a finding with the rule's meta: category,
severity, description, remedy, technique, and the first matching string's offset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yara

from cranewatch.errors import InputError, Location
from cranewatch.forensics.checks.base import FileView, ScanContext
from cranewatch.model import CATEGORIES, Finding, Severity

NAME = "yara"
_SCOPES = ("text", "binary", "any")


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules for text files and for binaries (``any`` rules are in both), so each
    file is matched once; ``sources`` names the rule files for the report."""

    text: yara.Rules | None
    binary: yara.Rules | None
    sources: tuple[str, ...]


def shipped_rules_dir() -> Path:
    return Path(str(resources.files("cranewatch.forensics").joinpath("rules")))


def _rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yar", ".yara") and p.is_file())


def _scope_of(rule: yara.Rule) -> str:
    scope = str(rule.meta.get("scope", "any"))
    return scope if scope in _SCOPES else "any"


def compile_rules(extra: Path | None = None) -> RuleSet:
    """Compile the shipped rules and those under ``extra``; a bad rule file is an InputError."""
    files = _rule_files(shipped_rules_dir())
    if extra is not None:
        if not extra.is_dir():
            raise InputError("--rules must be a directory of .yar files", Location(file=str(extra)))
        files += _rule_files(extra)
    by_kind: dict[str, dict[str, str]] = {"text": {}, "binary": {}}
    # Compile each file once to learn its rules' scopes, then once per kind of file with the
    # files that have rules for it (one compiled file's rules cannot be split).
    for number, path in enumerate(files):
        try:
            rules = yara.compile(filepath=str(path))
        except yara.Error as exc:
            raise InputError(f"YARA rule does not compile: {exc}", Location(file=str(path))) from None
        scopes = {_scope_of(rule) for rule in rules}
        for kind in ("text", "binary"):
            if kind in scopes or "any" in scopes:
                by_kind[kind][f"n{number}"] = str(path)
    text = yara.compile(filepaths=by_kind["text"]) if by_kind["text"] else None
    binary = yara.compile(filepaths=by_kind["binary"]) if by_kind["binary"] else None
    return RuleSet(text, binary, tuple(str(p) for p in files))


_RULES: RuleSet | None = None
_TIMEOUT = 30  # seconds (wall clock) of YARA per file


class Incomplete(Exception):
    """A file check stopped short (YARA's time limit hit, a YARA error): said in the scan's
    warnings, never dropped in silence, so that a result that depends on the machine's load shows."""
# gzip, xz, bzip2, zstd, PNG, JPEG, GIF, WOFF/OpenType fonts: nothing readable inside.
_PACKED = (b"\x1f\x8b", b"\xfd7zXZ", b"BZh", b"\x28\xb5\x2f\xfd", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"wOF", b"OTTO")


def install(rules: RuleSet | None) -> None:
    """Make ``rules`` the set ``check_file`` uses (set before worker processes fork)."""
    global _RULES
    _RULES = rules


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    rules = _RULES
    if rules is None or view.kind == "empty":
        return
    wanted = "text" if view.kind == "text" else "binary"
    if view.kind == "text" and view.distribution:
        return  # verified against the genuine package: the distribution's own text
    if view.kind == "binary" and (view.distribution or view.data.startswith(_PACKED)):
        return  # the distribution's data files; compressed or media bytes hide no plain strings
    compiled = rules.text if wanted == "text" else rules.binary
    if compiled is None:
        return
    try:
        matches = compiled.match(data=view.data, timeout=_TIMEOUT)
    except yara.TimeoutError:
        raise Incomplete(f"YARA rules stopped after {_TIMEOUT} s on this file: not every rule was matched") from None
    except yara.Error as exc:
        raise Incomplete(f"YARA rules not matched ({' '.join(str(exc).split())[:160]})") from None
    for match in matches:
        if _scope_of_match(match) in (wanted, "any"):
            yield _finding(match, view, ctx)


def _scope_of_match(match: yara.Match) -> str:
    scope = str(match.meta.get("scope", "any"))
    return scope if scope in _SCOPES else "any"


def _finding(match: yara.Match, view: FileView, ctx: ScanContext) -> Finding:
    meta = match.meta
    category = str(meta.get("category", "backdoor"))
    if category not in CATEGORIES:
        category = "backdoor"
    try:
        severity = Severity.parse(str(meta.get("severity", "medium")))
    except ValueError:
        severity = Severity.MEDIUM
    offset: int | None = None
    excerpt: str | None = None
    for string in match.strings:
        for instance in string.instances:
            if offset is None or instance.offset < offset:
                offset = instance.offset
                excerpt = bytes(instance.matched_data[:120]).decode("utf-8", "replace")
    line = view.line_at(len(view.data[:offset].decode("utf-8", "replace"))) if view.kind == "text" and offset is not None else None
    technique = tuple(t.strip() for t in str(meta.get("technique", "")).split(",") if t.strip())
    return ctx.finding(
        rule=f"yara.{match.rule}", category=category, severity=severity,
        title=str(meta.get("description", f"YARA rule {match.rule} matched")), path=view.path,
        line=line, offset=None if line is not None else offset, excerpt_text=excerpt, technique=technique,
        remedy=str(meta.get("remedy", "Review the file.")),
    )
