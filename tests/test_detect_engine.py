"""The detection sink's shortcuts change nothing: routing by what each detector can judge in
the run's context gives the findings that handing every detector every fact it accepts gives,
and a finished flow read straight from the pipeline is the fact its summary would have made.

Checked on the lab's captures (src/cranewatch/data/lab/), with and without profile/baseline.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cranewatch.baseline import Baseline, learn_baseline
from cranewatch.detect import adapt
from cranewatch.detect.base import Context
from cranewatch.detect.engine import DetectionSink, all_detectors, judged_types
from cranewatch.detect.facts import Conversation
from cranewatch.flows import Flow, FlowSummary
from cranewatch.model import Finding
from cranewatch.pipeline import Analysis, ip_text, mac_text
from cranewatch.profile import CraneProfile, load_profile

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"


def captures() -> list[str]:
    if not LAB.is_dir():
        return []
    return sorted(d.name for d in LAB.iterdir() if (d / "crane-lan.pcap").exists())


class Recorder:
    """Keeps what the pipeline gives sinks, to replay it into several detection sinks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.conversations: list[tuple[Conversation, Conversation]] = []

    def on_event(self, event: Any) -> None:
        self.calls.append(("event", event))

    def on_series(self, series: Any) -> None:
        self.calls.append(("series", series))

    def on_flow(self, flow: Flow) -> None:
        # both readings now: the flow object is the pipeline's and not kept
        direct = adapt.flow_conversation(flow)
        summary = flow.summary(ip_text, mac_text)
        self.calls.append(("flow_end", summary))
        self.conversations.append((direct, adapt.conversation(summary)))

    def on_flow_end(self, flow: FlowSummary) -> None:
        raise AssertionError("a sink with on_flow gets no summaries")

    def on_payload(self, flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> None:
        self.calls.append(("payload", (flow, from_client, data, ts, frame)))

    def finish(self) -> list[Finding]:
        return []


@cache
def recorded(name: str) -> Recorder:
    recorder = Recorder()
    Analysis([recorder]).run([LAB / name / "crane-lan.pcap"])
    return recorder


@cache
def baseline() -> Baseline:
    return learn_baseline([LAB / "normal" / "crane-lan.pcap"])


@cache
def profile() -> CraneProfile:
    return load_profile(REPO / "profiles" / "sts-07.toml")


def replay(recorder: Recorder, sink: DetectionSink) -> list[Finding]:
    for what, item in recorder.calls:
        if what == "event":
            sink.on_event(item)
        elif what == "series":
            sink.on_series(item)
        elif what == "flow_end":
            sink.on_flow_end(item)
        else:
            sink.on_payload(*item)
    return sink.finish()


CONTEXTS = {"none": (False, False), "profile": (True, False), "baseline": (False, True)}


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("name", captures())
def test_routing_by_context_keeps_the_findings(name: str, context: str) -> None:
    with_profile, with_baseline = CONTEXTS[context]

    def ctx() -> Context:
        return Context(profile=profile() if with_profile else None,
                       baseline=baseline() if with_baseline else None, crane="STS-07")

    routed = DetectionSink(ctx())
    everything = DetectionSink(ctx())
    everything.judged = [(d, d.accepts) for d in everything.detectors]  # no shortcut
    expected = replay(recorded(name), everything)
    assert replay(recorded(name), routed) == expected
    if context == "none":  # the shortcut really skipped something here
        assert sum(len(t) for _, t in routed.judged) < sum(len(t) for _, t in everything.judged)


@pytest.mark.parametrize("name", captures())
def test_a_flow_read_directly_is_the_conversation_of_its_summary(name: str) -> None:
    pairs = recorded(name).conversations
    assert pairs
    for direct, via_summary in pairs:
        assert direct == via_summary
        names = [f.name for f in fields(Conversation)]
        assert [type(getattr(direct, n)) for n in names] == [type(getattr(via_summary, n)) for n in names]


def test_judged_types_are_accepted_types() -> None:
    contexts = [Context(), Context(profile=profile()), Context(baseline=Baseline())]
    for detector in all_detectors():
        for ctx in contexts:
            assert set(judged_types(detector, ctx)) <= set(detector.accepts), detector.name
        assert set(judged_types(detector, Context(profile=profile(), baseline=Baseline()))) == \
            set(detector.accepts), detector.name
