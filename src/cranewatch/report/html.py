"""The commissioning report as one self-contained HTML page (inline CSS, no scripts, prints to PDF)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from cranewatch.gate import GateDecision
from cranewatch.model import iso_time
from cranewatch.report.commissioning import (
    SIGNATURE_ROLES,
    CommissioningReport,
    build_report,
    report_records,
)
from cranewatch.store import Store

REASON_HEADINGS = (
    ("blocking-finding", "Blocking findings"),
    ("review-finding", "Findings to review"),
    ("incomplete-run", "Incomplete runs"),
    ("review-component", "Components to confirm"),
    ("review-baseline", "Baseline beyond the profile"),
    ("missing-evidence", "Missing evidence"),
)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cranewatch.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = lambda ts: (iso_time(ts) or "")[:19].replace("T", " ") + (" UTC" if ts else "")
    return env


def render_html(report: CommissioningReport) -> str:
    """Render a built report document."""
    records = report_records(report)
    context: dict[str, Any] = {
        "r": report,
        "crane": report.crane,
        "decision": report.decision,
        "reason_groups": [
            (heading, [x for x in report.decision.reasons if x.kind == kind])
            for kind, heading in REASON_HEADINGS
        ] if report.decision else [],
        "digest": records[-1]["digest"],
        "roles": SIGNATURE_ROLES,
    }
    return _environment().get_template("commissioning.html.j2").render(**context)


def render_report(store: Store, crane: str, *, decision: GateDecision | None = None) -> str:
    """The commissioning report of ``crane`` as HTML, from what the store holds."""
    return render_html(build_report(store, crane, decision=decision))
