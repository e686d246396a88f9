"""remote-ssh: an outside host logs into the CMS over SSH through a hidden cellular modem.

A modem router nobody ordered sits on the crane LAN (10.20.7.199, its own MAC, NAT to the
outside). It forwards TCP 22 from its outside address to the CMS, and the CMS has a route
to the vendor network through it. A vendor/attacker at 203.0.113.10 runs the OpenSSH
client; the CMS runs a real OpenSSH server. On the crane LAN the session appears between
203.0.113.10 and 10.20.7.30:22 behind the modem's MAC, not the gateway's.
"""

from __future__ import annotations

import subprocess
import time

from cranewatch.errors import EnvironmentProblem
from cranewatch.lab import services
from cranewatch.lab.runner import Lab
from cranewatch.lab.scenario import AttackPlan, Scenario

VENDOR, MODEM_OUTSIDE, CMS = "203.0.113.10", "198.51.100.77", "10.20.7.30"


def prepare(lab: Lab) -> None:
    key = lab.tmp / "vendor_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vendor@remote",
                    "-f", str(key)], check=True, capture_output=True)
    services.start_sshd(lab, "cms", key.with_suffix(".pub").read_text(),
                        "/bin/sh -c 'echo STS-07 CMS remote service; sleep 6; echo bye'")
    lab.nft("modem", f'add rule ip cwlab_modem prerouting iifname "eth1" tcp dport 22 '
                     f"dnat to {CMS}\n")
    lab.run("cms", ["ip", "route", "add", "203.0.113.0/24", "via", "10.20.7.199"])


def act(lab: Lab, until: float) -> None:
    key = lab.tmp / "vendor_ed25519"
    while time.time() < until - 9:
        done = lab.run("vendor", [
            "ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o",
            "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            # curve25519: the hybrid post-quantum KEX of new OpenSSH is not yet in tshark 4.0
            "-o", "KexAlgorithms=curve25519-sha256",
            f"root@{MODEM_OUTSIDE}"], timeout=30)
        if done.returncode != 0:
            raise EnvironmentProblem(f"ssh through the modem failed: {done.stderr.strip()}")
        if "STS-07" not in done.stdout:
            raise EnvironmentProblem(f"ssh session gave no banner: {done.stdout!r}")
        break


SCENARIO = Scenario(
    name="remote-ssh",
    summary="an outside host logs into the CMS with SSH through a hidden modem on the crane LAN",
    extra_hosts=(),
    attacks=(
        AttackPlan("ssh-via-modem", "remote-access", ("T0822", "T0886"), VENDOR, f"{CMS}:22",
                   "OpenSSH session from the internet to the CMS through a hidden modem"),
        AttackPlan("hidden-modem", "hidden-uplink", ("T0883", "T0884"), "10.20.7.199", VENDOR,
                   "traffic to an outside address through a router that is not the gateway"),
    ),
    prepare=prepare,
    act=act,
)
