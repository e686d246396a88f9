"""beacon: the CMS calls an outside TLS server every 5 s ± 15 % (command and control).

An implant on the CMS resolves update.crane-vendor.example.com through the terminal
resolver (forwarded outside) and fetches /api/v1/checkin over TLS (curl, SNI) from an
OpenSSL s_server at 203.0.113.80:443, through the crane gateway's NAT.
"""

from __future__ import annotations

import subprocess

from cranewatch.lab import services
from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario


def prepare(lab: Lab) -> None:
    key, cert = lab.tmp / "c2.key", lab.tmp / "c2.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-keyout", str(key), "-out", str(cert), "-subj",
                    f"/CN={services.BEACON_DOMAIN}"], check=True, capture_output=True)
    server = lab.start("collector", ["openssl", "s_server", "-accept", "443", "-cert", str(cert),
                                     "-key", str(key), "-www", "-quiet"], "s_server")
    lab.wait_listening("collector", 443, server)


def act(lab: Lab, until: float) -> None:
    lab.run_part("cms", "parts.beacon", "--name", services.BEACON_DOMAIN, "--interval", "5",
                 "--until", f"{until:.3f}", "--seed", str(lab.seed), name="beacon")


SCENARIO = Scenario(
    name="beacon",
    summary="the CMS calls an outside TLS server every 5 s with jitter (C2 beacon)",
    attacks=(AttackPlan("tls-beacon", "c2", ("T0869",), "10.20.7.30", "203.0.113.80:443",
                        f"periodic TLS check-in to {services.BEACON_DOMAIN}"),),
    prepare=prepare,
    act=act,
)
