"""The sinks an analysis of captures runs: the network detectors and the process checks.

One place builds them, so ``cranewatch analyze``, the gate's quarantine analysis and the demo
judge traffic the same way. They take what was loaded once at the edge (``judging``): a
``CraneProfile``, a communications ``Baseline`` and a ``ProcessBaseline``; building them reads
no file and runs no pipeline (a baseline given as captures was learned before). A saved crane
baseline gives the process checks its ``"process"`` part when it has one (without it they
judge by physics and the register map alone).

The process checks run only with a profile: its register map says which Modbus registers are
which crane signals. Without one, another plant's registers would be read as STS-07's hoist
load and wind speed, and every such capture would raise nonsense (a public Modbus test
capture gave six high "findings" that way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cranewatch.pipeline import Sink

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.judging import Judging
    from cranewatch.process.envelope import ProcessBaseline
    from cranewatch.profile import CraneProfile

SinkFactory = Callable[["CraneProfile | None", "Baseline | None", "str | None"], list[Sink]]


def detector_sinks(profile: CraneProfile | None, baseline: Baseline | None,
                   crane: str | None) -> list[Sink]:
    """The network detectors' sink (the only one a live ``monitor`` window can ask repeatedly)."""
    from cranewatch.detect.engine import build_sink

    return [build_sink(profile=profile, baseline=baseline, crane=crane)]


def process_sinks(profile: CraneProfile, baseline: ProcessBaseline | None,
                  crane: str | None) -> list[Sink]:
    """The process checks' sink (signals, physics, envelopes; a plot per finding)."""
    from cranewatch.process.engine import build_sink

    return [build_sink(profile=profile, baseline=baseline, crane=crane)]


def build_sinks(profile: CraneProfile | None = None, baseline: Baseline | None = None,
                crane: str | None = None, *, process_baseline: ProcessBaseline | None = None,
                detectors: SinkFactory | None = None) -> list[Sink]:
    """Detectors and process checks for one analysis.

    ``process_baseline`` (a ``ProcessBaseline`` already learned) replaces the process part of
    ``baseline``: a caller judging many captures against the same clean one learns it once.
    ``detectors`` replaces ``detector_sinks`` (a command's own hook, which its tests swap for
    fixed findings). Without a profile only the detectors run.
    """
    found = (detectors or detector_sinks)(profile, baseline, crane)
    if profile is None:
        return list(found)
    if process_baseline is None:
        from cranewatch.judging import process_part

        process_baseline = process_part(baseline)
    return [*found, *process_sinks(profile, process_baseline, crane)]


def judged_sinks(judging: Judging, crane: str | None,
                 detectors: SinkFactory | None = None) -> list[Sink]:
    """``build_sinks`` for what a command loaded at its edge."""
    return build_sinks(judging.profile, judging.baseline, crane,
                       process_baseline=judging.process_baseline, detectors=detectors)
