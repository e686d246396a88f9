"""The commissioning report as one self-contained HTML page (inline CSS, no scripts, prints to PDF)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from cranewatch.commap import render_svg
from cranewatch.gate import GateDecision
from cranewatch.model import evidence_value, iso_time
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
    ("evidence-gap", "Evidence gaps"),
    ("missing-evidence", "Missing evidence"),
    ("closed-finding", "Findings closed by a disposition (not counted)"),
)


# what a plot of the process checks is drawn with (process/plot.py); anything else is not embedded
SVG_ELEMENTS = frozenset({"svg", "g", "title", "desc", "rect", "line", "polyline", "polygon", "path",
                          "circle", "ellipse", "text", "tspan"})
# evidence values the page shows otherwise (the plot) or that are too long to read as text
PLOT_VALUES = frozenset({"svg", "window", "residual"})


def inline_svg(svg: object) -> Markup:
    """A process plot as markup to embed, when it is plain drawing: SVG elements only, no
    scripts, event handlers, links, entities or styles. Anything else is shown as text."""
    text = str(svg)
    if plain_svg(text):
        return Markup(text)
    return Markup("<pre>") + text + Markup("</pre>")


def plain_svg(text: str) -> bool:
    """Whether ``text`` is plain drawing (the process plots): SVG elements only, no scripts,
    event handlers, links, entities or styles."""
    try:
        root = ET.fromstring(text) if "<!" not in text else None
    except ET.ParseError:
        return False
    return root is not None and all(_plain_element(el) for el in root.iter())


def _plain_element(element: ET.Element) -> bool:
    tag = element.tag.rsplit("}", 1)[-1]
    return tag in SVG_ELEMENTS and not any(
        name.rsplit("}", 1)[-1].lower().startswith("on") or name.rsplit("}", 1)[-1].lower() in ("href", "style")
        for name in element.attrib
    )


def shown_values(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Evidence values as ``key=value`` text, without the plot and its raw series."""
    out = []
    for key, raw in sorted(values.items()):
        if key in PLOT_VALUES:
            continue
        value = evidence_value(key, raw)
        if isinstance(value, list | tuple):
            text = ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
        elif isinstance(value, dict):
            text = json.dumps(value, sort_keys=True)
        else:
            text = str(value)
        out.append((key, text))
    return out


def environment() -> Environment:
    """The Jinja environment of cranewatch's HTML pages (autoescaped, strict, shared filters)."""
    env = Environment(
        loader=PackageLoader("cranewatch.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = lambda ts: (iso_time(ts) or "")[:19].replace("T", " ") + (" UTC" if ts else "")
    env.filters["inline_svg"] = inline_svg
    env.filters["shown_values"] = shown_values
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
        "comm_svg": render_svg(report.comm_map) if report.comm_map is not None else "",
        "roles": SIGNATURE_ROLES,
    }
    return environment().get_template("commissioning.html.j2").render(**context)


def render_report(store: Store, crane: str, *, decision: GateDecision | None = None) -> str:
    """The commissioning report of ``crane`` as HTML, from what the store holds."""
    return render_html(build_report(store, crane, decision=decision))
