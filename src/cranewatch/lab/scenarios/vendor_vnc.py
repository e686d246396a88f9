"""vendor-vnc: a vendor opens an inbound VNC (RFB 3.8) session to the CMS's HMI.

The crane gateway has a port forward nobody documented: 198.51.100.2:5900 to the CMS. The
vendor at 203.0.113.10 connects, completes the RFB handshake (security None), pulls the HMI
screen and keeps an interactive session (pointer, keys, incremental updates) going.
"""

from __future__ import annotations

from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario

CMS = "10.20.7.30"


def prepare(lab: Lab) -> None:
    server = lab.python("cms", "parts.rfb", "server", name="rfb-server")
    lab.wait_listening("cms", 5900, server)
    lab.nft("gw", f'add rule ip cwlab_gw prerouting iifname "eth2" tcp dport 5900 '
                  f"dnat to {CMS}:5900\n")


def act(lab: Lab, until: float) -> None:
    lab.run_part("vendor", "parts.rfb", "client", "--host", "198.51.100.2",
                 "--until", f"{until:.3f}", name="rfb-client")


SCENARIO = Scenario(
    name="vendor-vnc",
    summary="a vendor opens an inbound VNC session to the CMS through a gateway port forward",
    attacks=(AttackPlan("inbound-vnc", "remote-access", ("T0822", "T0886"), "203.0.113.10",
                        f"{CMS}:5900", "RFB 3.8 remote-desktop session from the internet"),),
    prepare=prepare,
    act=act,
)
