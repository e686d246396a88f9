"""What a run judges traffic against, loaded once at the edge: the crane's profile, the
communications baseline and the signal envelopes, as typed objects.

A command (or any program embedding cranewatch) turns its ``--profile`` and ``--baseline``
into one ``Judging`` before it reads a capture to analyse: a profile or a saved baseline that
does not load is one ``ProfileError`` listing every problem at its file and line. A baseline
given as a clean capture is learned here, in one pass of the pipeline (communications and,
with a profile, the signal envelopes); the sinks built from a ``Judging`` (``sinks``) never
run the pipeline themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cranewatch.baseline import Baseline, is_saved_baseline, learn_baselines, read_baseline
from cranewatch.process.envelope import ProcessBaseline
from cranewatch.profile import CraneProfile, load_profile


@dataclass(frozen=True, slots=True)
class Judging:
    """The profile, the communications baseline (for the detectors) and the signal envelopes
    (for the process checks); each may be missing."""

    profile: CraneProfile | None = None
    baseline: Baseline | None = None
    process_baseline: ProcessBaseline | None = None

    @property
    def crane_id(self) -> str | None:
        """The crane the profile names (None without a profile, or when it names none)."""
        return self.profile.crane_id if self.profile is not None else None


def process_part(baseline: Baseline | None) -> ProcessBaseline | None:
    """The signal envelopes a saved crane baseline keeps under ``"process"`` (None: it has none,
    the process checks then judge by physics and the register map alone)."""
    if baseline is None or baseline.process is None:
        return None
    return ProcessBaseline.from_json(baseline.process)


def load_judging(profile: str | Path | None = None,
                 baseline: str | Path | Sequence[str | Path] | None = None) -> Judging:
    """``--profile`` and ``--baseline`` as a command line gives them.

    The profile is read and checked first (every problem at its line). ``baseline`` is a saved
    baseline file (read and checked the same way; its process part, when it has one, gives the
    envelopes) or clean captures, learned from at once (``learn_judging``).
    """
    loaded = load_profile(profile) if profile is not None else None
    if baseline is None:
        return Judging(loaded)
    items = [baseline] if isinstance(baseline, str | Path) else list(baseline)
    if len(items) == 1 and is_saved_baseline(items[0]):
        saved = read_baseline(items[0])
        return Judging(loaded, saved, process_part(saved))
    return learn_judging(items, loaded)


def learn_judging(captures: Sequence[str | Path], profile: CraneProfile | None = None) -> Judging:
    """Learn the baseline from clean captures in one pass of the pipeline: the communications,
    and with a profile (its register map) the signal envelopes."""
    communications, envelopes = learn_baselines(captures, profile)
    return Judging(profile, communications, envelopes)


__all__ = ["Judging", "learn_judging", "load_judging", "process_part"]
