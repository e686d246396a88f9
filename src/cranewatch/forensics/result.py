"""The scan's result: one frozen document that every renderer, the gate and the demo read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cranewatch.forensics.scanner import InputInfo, Inventory
from cranewatch.model import Finding, Severity


@dataclass(frozen=True, slots=True)
class ReferenceDiff:
    """What changed against the reference (golden) image: image-relative paths."""

    reference: InputInfo
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Inputs (with digests), inventory, findings, what the reference suppressed, warnings.

    ``problems`` (also listed first in ``warnings``) say what could not be read: skipped or
    unreachable members, unreadable files. Any problem makes the scan incomplete (exit 3).
    """

    inputs: tuple[InputInfo, ...]
    crane: str | None
    inventory: Inventory
    findings: tuple[Finding, ...]
    suppressed: tuple[Finding, ...] = ()
    diff: ReferenceDiff | None = None
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    vulndb: tuple[str, ...] = ()
    started: float = 0.0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.problems

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def counts(self) -> dict[str, int]:
        out = {str(s): 0 for s in reversed(Severity)}
        for f in self.findings:
            out[str(f.severity)] += 1
        return out

    def summary_json(self) -> dict[str, Any]:
        """The header record of ``--format jsonl`` (type ``scan``)."""
        inv = self.inventory
        out: dict[str, Any] = {
            "type": "scan",
            "crane": self.crane,
            "inputs": [{"path": i.path, "format": i.format, "size": i.size, "sha256": i.sha256} for i in self.inputs],
            "inventory": {
                "files": inv.files, "directories": inv.directories, "symlinks": inv.symlinks, "bytes": inv.bytes,
                "elf": inv.elf, "text": inv.text, "packages": len(inv.packages), "setuid": list(inv.setuid),
                "os": inv.os_release.get("PRETTY_NAME"),
                # how much of the image is verified against genuine packages (not the image's word)
                "trust": dict(inv.trust), "genuine_sources": list(inv.genuine_sources),
            },
            "counts": self.counts(),
            "suppressed": len(self.suppressed),
            "rules": list(self.rules),
            "vulndb": list(self.vulndb),
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }
        if self.diff is not None:
            out["reference"] = {
                "path": self.diff.reference.path, "sha256": self.diff.reference.sha256,
                "added": list(self.diff.added), "changed": list(self.diff.changed), "removed": list(self.diff.removed),
            }
        return out
