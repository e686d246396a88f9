"""The analysis result (``cranewatch analyze --format html``) as one self-contained HTML page.

Inline CSS, no scripts, no outside resources: inputs with their sha256, hosts, flows by
protocol, Modbus masters and slaves, warnings, and the findings grouped by severity with their
evidence, technique and remedy; a process finding shows the plot its check drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cranewatch import __version__
from cranewatch.model import Finding, Severity
from cranewatch.pipeline import AnalysisResult, ModbusPeer
from cranewatch.report.html import environment
from cranewatch.report.text import FUNCTION_NAMES
from cranewatch.skipped import SkippedCheck

MAX_HOSTS = 500
MAX_RANGES = 40
MAX_WARNINGS = 200


@dataclass(frozen=True, slots=True)
class PeerView:
    """A Modbus master or slave as the page lists it."""

    peer: ModbusPeer
    functions: tuple[tuple[int, str, int], ...]  # (code, name, requests)
    ranges: tuple[tuple[str, int, int, int, str, int], ...]  # (table, first, last, quantity, access, requests)
    more_ranges: int


def peer_view(peer: ModbusPeer) -> PeerView:
    functions = tuple((fc, FUNCTION_NAMES.get(fc, f"code {fc}"), n) for fc, n in peer.functions)
    ranked = sorted(peer.ranges, key=lambda r: (-r[4], r[0], r[1]))
    ranges = tuple((table, address, address + quantity - 1, quantity, access, count)
                   for table, address, quantity, access, count in ranked[:MAX_RANGES])
    return PeerView(peer, functions, ranges, max(0, len(ranked) - MAX_RANGES))


def by_severity(findings: tuple[Finding, ...]) -> list[tuple[Severity, list[Finding]]]:
    """Findings grouped from the most to the least severe (empty groups left out)."""
    groups = []
    for severity in sorted(Severity, reverse=True):
        group = [f for f in findings if f.severity == severity]
        if group:
            groups.append((severity, sorted(group, key=lambda f: (f.first_seen or 0.0, f.id))))
    return groups


def render(result: AnalysisResult, skipped: Sequence[SkippedCheck] = ()) -> str:
    """The page for one analysis result; ``skipped``: what the run could not check."""
    return environment().get_template("analysis.html.j2").render(
        r=result,
        skipped=skipped,
        tool_version=__version__,
        hosts=result.hosts[:MAX_HOSTS],
        more_hosts=max(0, len(result.hosts) - MAX_HOSTS),
        masters=[peer_view(p) for p in result.modbus_masters],
        slaves=[peer_view(p) for p in result.modbus_slaves],
        warnings=result.warnings[:MAX_WARNINGS],
        more_warnings=max(0, len(result.warnings) - MAX_WARNINGS) + result.warnings_suppressed,
        groups=by_severity(result.findings),
    )
