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
    """Compiled rules by scope; ``sources`` names the rule files for the report."""

    text: yara.Rules | None
    binary: yara.Rules | None
    any: yara.Rules | None
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
    compiled: dict[str, list[str]] = {s: [] for s in _SCOPES}
    # Compile each file once to learn each rule's scope, then once per scope with only the
    # files that have rules of that scope (YARA cannot split one compiled file's rules).
    for number, path in enumerate(files):
        try:
            rules = yara.compile(filepath=str(path))
        except yara.Error as exc:
            raise InputError(f"YARA rule does not compile: {exc}", Location(file=str(path))) from None
        scopes = {_scope_of(rule) for rule in rules}
        for scope in scopes:
            compiled[scope].append(f"{number}:{path}")
    sets: dict[str, yara.Rules | None] = {}
    for scope, entries in compiled.items():
        if not entries:
            sets[scope] = None
            continue
        filepaths = {f"n{entry.split(':', 1)[0]}": entry.split(":", 1)[1] for entry in entries}
        sets[scope] = yara.compile(filepaths=filepaths)
    return RuleSet(sets["text"], sets["binary"], sets["any"], tuple(str(p) for p in files))


_RULES: RuleSet | None = None


def install(rules: RuleSet | None) -> None:
    """Make ``rules`` the set ``check_file`` uses (set before worker processes fork)."""
    global _RULES
    _RULES = rules


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    rules = _RULES
    if rules is None or view.kind == "empty":
        return
    wanted = "text" if view.kind == "text" else "binary"
    if view.kind == "text" and not view.in_config_scope and view.owner is not None:
        return  # a distribution's documentation, not a script anyone runs
    for scope_rules in (rules.text if wanted == "text" else rules.binary, rules.any):
        if scope_rules is None:
            continue
        try:
            matches = scope_rules.match(data=view.data, timeout=30)
        except yara.Error:
            continue
        for match in matches:
            if _scope_of_match(match) not in (wanted, "any"):
                continue
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
