"""recon: an unknown host scans the crane LAN and sweeps Modbus device identification.

From 10.20.7.66: nmap SYN scan of the crane LAN for ICS and remote-access ports, then a
scripted FC 43/14 (read device identification, basic/regular/extended) sweep over the
hosts and unit ids 0–3.
"""

from __future__ import annotations

from cranewatch.errors import EnvironmentProblem
from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario

PORTS = "21,22,23,80,102,443,502,554,1883,2404,4840,5900,8080,20000,44818"


def act(lab: Lab, until: float) -> None:
    scan = lab.run("rogue", ["nmap", "-n", "-sS", "-T4", "--max-retries", "1",
                             "--host-timeout", "20s", "-p", PORTS, "10.20.7.0/24"], timeout=90)
    if scan.returncode != 0:
        raise EnvironmentProblem(f"nmap failed: {scan.stderr.strip()}")
    (lab.logs / "nmap.log").write_text(scan.stdout)
    lab.run_part("rogue", "parts.modbus_tool", "recon", "--targets", "10.20.7.10", "10.20.7.20",
                 "10.20.7.30", "10.20.7.254", "--units", "4", name="modbus-recon")


SCENARIO = Scenario(
    name="recon",
    summary="an unknown host port-scans the crane LAN (nmap) and sweeps FC 43/14 device ids",
    extra_hosts=("rogue",),
    attacks=(AttackPlan("scan-and-identify", "recon", ("T0846", "T0888"), "10.20.7.66",
                        "10.20.7.0/24", "nmap SYN scan plus Modbus read device identification"),),
    act=act,
)
