"""What a lab scenario is: the crane's normal day plus, optionally, one attack.

A scenario names the extra hosts it needs, the attack it performs (with the ground-truth
label: category of DESIGN.md, ATT&CK for ICS techniques, source and destination), an
optional PLC fault (a compromised PLC's behaviour, see ``faults``), a ``prepare`` step that
changes the network before the attack (a port forward, a route through the modem) and an
``act`` step that performs the attack against the running lab until a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cranewatch.lab.runner import Lab

__all__ = ["AttackPlan", "Scenario"]


@dataclass(frozen=True, slots=True)
class AttackPlan:
    """The label of an attack: what it is, in the terms detections report."""

    name: str
    category: str  # hidden-uplink, remote-access, data-leak, c2, safety-override, ...
    technique: tuple[str, ...]
    src: str  # address the attack comes from (as seen on the crane LAN where it matters)
    dst: str
    description: str
    signal: str | None = None  # for process attacks: the register(s) that lie


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str  # one line, for `cranewatch lab list`
    seed: int = 7
    extra_hosts: tuple[str, ...] = ()
    attacks: tuple[AttackPlan, ...] = ()  # one window; several labels when it is several things
    plc_fault: str | None = None
    prepare: Callable[[Lab], None] | None = None
    act: Callable[[Lab, float], None] | None = None  # (lab, deadline epoch) -> None
