"""The sinks an analysis of captures runs: the network detectors and the process checks.

One place builds them, so ``cranewatch analyze``, the gate's quarantine analysis and the demo
judge traffic the same way. ``profile`` and ``baseline`` may be paths or loaded objects; the
profile is loaded once and shared. A baseline given as captures is learned by each part from
them (communications for the detectors, signal envelopes for the process checks); a saved
baseline file gives the detectors its communications and the process checks its ``"process"``
part when it has one (without it they judge by physics and the register map alone).

The process checks run only with a profile: its register map says which Modbus registers are
which crane signals. Without one, another plant's registers would be read as STS-07's hoist
load and wind speed, and every such capture would raise nonsense (a public Modbus test
capture gave six high "findings" that way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cranewatch.pipeline import Sink

Baseline = str | Path | Sequence[str | Path] | Any
SinkFactory = Callable[[Any, Any, "str | None"], list[Sink]]


def load_profile_once(profile: Any) -> Any:
    """A ``CraneProfile`` from a path (or the object itself, or None)."""
    if isinstance(profile, str | Path):
        from cranewatch.profile import load_profile

        return load_profile(profile)
    return profile


def detector_sinks(profile: Any, baseline: Baseline | None, crane: str | None) -> list[Sink]:
    """The network detectors' sink (the only one a live ``monitor`` window can ask repeatedly)."""
    from cranewatch.detect.engine import build_sink

    return [build_sink(profile=load_profile_once(profile), baseline=baseline, crane=crane)]


def process_sinks(profile: Any, baseline: Baseline | None, crane: str | None) -> list[Sink]:
    """The process checks' sink (signals, physics, envelopes; a plot per finding)."""
    from cranewatch.process.engine import build_sink

    return [build_sink(profile=load_profile_once(profile), baseline=_process_part(baseline), crane=crane)]


def _process_part(baseline: Baseline | None) -> Any:
    """What the process checks can learn from ``baseline``: paths and process baselines as they
    are; a loaded communications baseline (``baseline.Baseline``) holds no signal envelopes."""
    from cranewatch.process.envelope import ProcessBaseline

    if baseline is None or isinstance(baseline, str | Path | ProcessBaseline):
        return baseline
    if isinstance(baseline, Sequence) and all(isinstance(b, str | Path) for b in baseline):
        return baseline
    process = getattr(baseline, "process", None)
    # a saved crane baseline keeps the envelopes as JSON under "process"
    return ProcessBaseline.from_json(process) if isinstance(process, dict) else process


def build_sinks(profile: Any = None, baseline: Baseline | None = None, crane: str | None = None,
                *, process_baseline: Any = None, detectors: SinkFactory | None = None) -> list[Sink]:
    """Detectors and process checks for one analysis.

    ``process_baseline`` (a ``ProcessBaseline`` already learned) replaces what the process
    checks would otherwise learn from ``baseline``: a caller judging many captures against the
    same clean one learns it once. ``detectors`` replaces ``detector_sinks`` (a command's own
    hook, which its tests swap for fixed findings). Without a profile only the detectors run.
    """
    loaded = load_profile_once(profile)
    found = (detectors or detector_sinks)(loaded, baseline, crane)
    if loaded is None:
        return list(found)
    return [*found, *process_sinks(loaded, process_baseline if process_baseline is not None else baseline, crane)]
