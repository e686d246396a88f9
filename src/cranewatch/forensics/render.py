"""Renderers of a ``ScanResult``: text for the analyst, JSON lines for the SIEM, HTML to file."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jinja2

from cranewatch.forensics.result import ScanResult
from cranewatch.model import Finding, Severity, iso_time
from cranewatch.report.terminal import printable_lines


def _where(finding: Finding) -> str:
    if not finding.evidence:
        return ""
    e = finding.evidence[0]
    where = (e.path or "") if e.values.get("partition") else "/" + (e.path or "")  # p2:/etc/x: its own root
    if e.line is not None:
        where += f":{e.line}"
    elif e.offset is not None:
        where += f" @{e.offset}"
    return where


def render_text(result: ScanResult, *, min_severity: Severity = Severity.INFO) -> str:
    """A report for the terminal: inputs, inventory, findings by severity, reference diff."""
    inv = result.inventory
    lines = []
    for info in result.inputs:
        lines.append(f"image     {info.path} ({info.format}, {info.size} bytes, sha256 {info.sha256[:16]}…)")
    lines.append(
        f"inventory {inv.files} files, {inv.directories} dirs, {inv.symlinks} links, {inv.elf} ELF, "
        f"{len(inv.packages)} packages" + (f", {inv.os_release['PRETTY_NAME']}" if "PRETTY_NAME" in inv.os_release else "")
    )
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
    lines.append(f"findings  {len(result.findings)}" + (f" ({counts})" if counts else "") + f" in {result.seconds:.1f} s")
    if result.suppressed:
        lines.append(f"          {len(result.suppressed)} more present in the reference image (suppressed; --show-suppressed)")
    lines.append("")
    for f in result.findings:
        if f.severity < min_severity:
            continue
        lines.append(f"{str(f.severity).upper():8} {f.category:20} {_where(f)}")
        lines.append(f"         {f.title}")
        if f.evidence and f.evidence[0].excerpt:
            lines.append(f"         | {f.evidence[0].excerpt}")
        lines.append(f"         → {f.remedy}")
    if result.diff is not None:
        d = result.diff
        lines.append("")
        lines.append(f"against reference {d.reference.path}: {len(d.added)} added, {len(d.changed)} changed, {len(d.removed)} removed")
        for label, paths in (("+", d.added), ("~", d.changed), ("-", d.removed)):
            for path in paths[:200]:
                lines.append(f"  {label} /{path}")
            if len(paths) > 200:
                lines.append(f"  {label} … {len(paths) - 200} more")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    return printable_lines(lines)  # a file name's newline or ESC is shown, never obeyed


def render_jsonl(result: ScanResult) -> Iterator[str]:
    """One ``scan`` header line, one line per finding (the Finding contract), then warnings."""
    header = result.summary_json()
    header["started"] = iso_time(result.started)
    yield json.dumps(header, sort_keys=False)
    for f in result.findings:
        yield json.dumps(f.to_json())
    for warning in result.warnings:
        yield json.dumps({"type": "warning", "message": warning})


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("cranewatch.forensics", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(result: ScanResult) -> str:
    """A self-contained HTML page (no external assets) of the scan."""
    template = _ENV.get_template("scan_image.html.j2")
    return template.render(result=result, where=_where, iso_time=iso_time, counts=result.counts())
