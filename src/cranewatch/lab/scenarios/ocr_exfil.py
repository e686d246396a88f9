"""ocr-exfil: malware on the OCR controller posts container events to an outside host.

Besides publishing to the terminal broker as it should, the OCR controller uploads its
journal (the shift's moves: ISO 6346 numbers, ports of loading and discharge, weights) and
then every new event as JSON over plain HTTP to 203.0.113.80, with curl.
"""

from __future__ import annotations

from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def act(lab: Lab, until: float) -> None:
    lab.run_part("ocr", "parts.exfil", "http", "--journal", str(lab.tmp / "ocr-journal.jsonl"),
                 "--until", f"{until:.3f}", name="exfil-http")


SCENARIO = Scenario(
    name="ocr-exfil",
    summary="the OCR controller also POSTs container events over HTTP to an outside host",
    attacks=(AttackPlan("ocr-http-upload", "data-leak", ("T0882", "T0802"), "10.20.7.20",
                        "203.0.113.80:80", "container numbers, POL/POD and weights to the internet"),),
    act=act,
)
