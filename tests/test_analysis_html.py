"""``cranewatch analyze --format html`` and the plots of process findings in both HTML pages.

The pages are opened in headless Chromium (as tests/test_report.py does): the DOM it builds
must hold every finding id the JSON lines report, the false-load finding's plot as a real
``<svg>`` element, and no console error. Ground truth for the finding is the lab's labels.json.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.fleet import import_fleet
from cranewatch.gate import analyze_and_record
from cranewatch.model import Evidence, Finding, Severity
from cranewatch.report.commissioning import build_report
from cranewatch.report.html import inline_svg, render_html, shown_values
from cranewatch.store import open_store
from test_report import chromium, console_lines

DATA = Path(__file__).resolve().parents[1] / "src" / "cranewatch" / "data"
PROFILE = DATA / "profiles" / "sts-07.toml"
NORMAL = DATA / "lab" / "normal" / "crane-lan.pcap"
FALSE_LOAD = DATA / "lab" / "false-load" / "crane-lan.pcap"
JUDGES = ["--profile", str(PROFILE), "--baseline", str(NORMAL)]


class _Structure(HTMLParser):
    """Which tags the page holds, and the tags inside each finding's <article>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.inside: dict[str, list[str]] = {}
        self._article: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag == "article":
            self._article = dict(attrs).get("id")
            self.inside[self._article or ""] = []
        elif self._article is not None:
            self.inside[self._article].append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._article = None


def _structure(html: str) -> _Structure:
    parser = _Structure()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def false_load_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("analysis-html")
    page, lines = folder / "analysis.html", folder / "analysis.jsonl"
    assert main(["analyze", str(FALSE_LOAD), *JUDGES, "--format", "html", "--out", str(page)]) == 0
    assert main(["analyze", str(FALSE_LOAD), *JUDGES, "--format", "jsonl", "--out", str(lines)]) == 0
    findings = [r for r in map(json.loads, lines.read_text().splitlines()) if r["type"] == "finding"]
    return page, findings


def test_page_is_self_contained_with_inputs_hosts_flows_and_modbus(false_load_page: tuple[Path, list[dict]]) -> None:
    page, _ = false_load_page
    html = page.read_text()
    parsed = _structure(html)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "img" not in parsed.tags
    assert not [v for k, v in parsed.attrs if k in ("src", "href") and v and not v.startswith("#")]
    assert not [k for k, _ in parsed.attrs if k.startswith("on")]
    for section in ("inputs", "findings", "hosts", "flows", "modbus", "warnings"):
        assert f'<section id="{section}">' in html
    from hashlib import sha256

    assert sha256(FALSE_LOAD.read_bytes()).hexdigest() in html
    # the lab's hosts (labels.json) and its polling (CMS and OCR read the PLC)
    labels = json.loads((FALSE_LOAD.parent / "labels.json").read_text())
    for poll in labels["polling"]:
        assert poll["master"] in html and poll["slave"] in html
    assert "FC4 read input registers" in html and "FC2 read discrete inputs" in html
    assert re.search(r"<td>modbus</td>", html)


def test_false_load_finding_carries_its_plot_and_no_raw_series(false_load_page: tuple[Path, list[dict]]) -> None:
    page, findings = false_load_page
    html = page.read_text()
    attack = next(a for a in json.loads((FALSE_LOAD.parent / "labels.json").read_text())["attacks"]
                  if a["category"] == "false-reading")
    process = [f for f in findings if f["category"] == "false-reading"
               and any(e.get("values", {}).get("signal") == attack["signal"] for e in f["evidence"])]
    assert len(process) == 1
    inside = _structure(html).inside[process[0]["id"]]
    assert "svg" in inside and "polyline" in inside
    assert "T0856" in html and "Remedy:" in html
    for raw in ("svg=", "window=", "residual="):
        assert raw not in html
    assert "residual_max=" in html  # the other values stay as key=value


def test_analysis_page_renders_in_headless_chromium(false_load_page: tuple[Path, list[dict]]) -> None:
    page, findings = false_load_page
    assert findings
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom) == []
    for f in findings:
        assert f'id="{f["id"]}"' in dom.stdout
    # Chromium parsed the plot as SVG: its namespace survives into the DOM
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in dom.stdout


def test_commissioning_report_embeds_the_plot_the_same_way(tmp_path: Path) -> None:
    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, DATA / "fleet" / "sts-07.toml")
        analyze_and_record(store, "STS-07", [FALSE_LOAD], profile=str(PROFILE), baseline=str(NORMAL))
        report = build_report(store, "STS-07")
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    plotted = [f for f in report.findings if any("svg" in e.values for e in f.evidence)]
    assert plotted
    parsed = _structure(page.read_text())
    for f in plotted:
        assert "svg" in parsed.inside[f.id]
    assert "svg=" not in page.read_text()
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0 and console_lines(dom) == []
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in dom.stdout


@pytest.mark.parametrize("svg", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><a href="javascript:alert(1)"><text>x</text></a></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><p>x</p></foreignObject></svg>',
    '<!DOCTYPE svg [<!ENTITY a "b">]><svg>&a;</svg>',
    "</figure><script>alert(1)</script>",
])
def test_anything_but_a_plain_drawing_is_shown_as_text(svg: str) -> None:
    out = str(inline_svg(svg))
    assert "<script" not in out and "<svg" not in out and out.startswith("<pre>")


def test_a_plain_drawing_is_embedded_as_is() -> None:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>a &lt; b</title>'
           '<polyline fill="none" stroke="#000" points="0,0 5,5"/><text x="1" y="9">t</text></svg>')
    assert str(inline_svg(svg)) == svg


def test_shown_values_leave_out_the_plot_and_its_series() -> None:
    values = {"svg": "<svg/>", "window": {"t": [1]}, "residual": [1.0], "signal": "hoist_load",
              "related": ["hoist_torque", "hoist_speed"], "threshold": 8.0}
    assert shown_values(values) == [("related", "hoist_torque, hoist_speed"), ("signal", "hoist_load"),
                                    ("threshold", "8.0")]


def test_a_finding_without_a_plot_renders_without_figure() -> None:
    from cranewatch.report.html import environment

    f = Finding(id="cw-x", rule="r", category="recon", severity=Severity.LOW, title="scan", first_seen=1.0, last_seen=2.0,
                evidence=(Evidence(source="a.pcap", frames=(1,), values={"ports": [22, 23]}),))
    template = environment().from_string('{% from "_findings.html.j2" import finding %}{{ finding(f) }}')
    html = template.render(f=f)
    assert "<figure" not in html and "ports=22, 23" in html
