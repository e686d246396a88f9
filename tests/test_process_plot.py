"""Findings carry a small, self-contained SVG of the signals around them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cranewatch.lab.faults import Tamper
from cranewatch.lab.registers import STS07_LIMITS
from cranewatch.process.engine import ProcessConfig, run_checks
from cranewatch.process.simulate import simulate

T0 = 1_700_000_000.0
SVG = "{http://www.w3.org/2000/svg}"


def test_finding_svg_is_wellformed_and_static() -> None:
    frame = simulate(120, seed=11, start=T0, tamper=Tamper("false-load", T0 + 10, T0 + 40))
    finding = next(f for f in run_checks(frame, ProcessConfig(limits=STS07_LIMITS)) if f.rule == "process-torque-load")
    svg = finding.evidence[0].values["svg"]
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert int(root.get("width", "0")) <= 600
    assert len(svg) < 40_000
    assert "<script" not in svg and "href" not in svg and "on" + "load" not in svg
    lanes = [e.text for e in root.iter(f"{SVG}text")]
    assert "hoist_load" in lanes and "hoist_torque" in lanes
    polylines = list(root.iter(f"{SVG}polyline"))
    assert len(polylines) >= 2
    assert len(polylines[0].get("points", "").split()) > 50
    # The JSON form keeps it: the HTML report embeds Evidence.values["svg"] as is.
    assert finding.to_json()["evidence"][0]["values"]["svg"] == svg
