"""The detection sink: runs every detector over the pipeline's event stream.

``build_sink(profile, baseline, crane)`` gives the object the pipeline feeds
(``on_event``, ``on_series``, ``on_flow_end``, ``on_payload``, ``finish``). It turns what it
gets into facts (``adapt``), hands each fact to the detectors that accept its type, and at the
end collects their findings, dropping catch-all egress findings for pairs a more specific
rule already reported. Flows no decoder claimed are also checked here for remote-access
protocols by their first bytes (``remote_access.identify_remote``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cranewatch.detect import adapt
from cranewatch.detect.aggregate import aggregate
from cranewatch.detect.base import Context, Detector
from cranewatch.detect.c2 import CommandAndControl
from cranewatch.detect.data_leak import DataLeak
from cranewatch.detect.egress import Egress
from cranewatch.detect.facts import Conversation, Payload, RemoteSession
from cranewatch.detect.hidden_uplink import HiddenUplink
from cranewatch.detect.lateral import LateralMovement
from cranewatch.detect.new_asset import NewAsset
from cranewatch.detect.plc_control import PlcControl
from cranewatch.detect.recon import Recon
from cranewatch.detect.remote_access import RemoteAccess, identify_remote
from cranewatch.detect.rogue_master import RogueMaster
from cranewatch.detect.safety_override import SafetyOverride
from cranewatch.flows import Flow
from cranewatch.model import Finding
from cranewatch.protocols import registry
from cranewatch.protocols.modbus import RegisterSeries

if TYPE_CHECKING:
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile

FIRST_BYTES = 256  # bytes of each side kept per unclaimed flow to recognise its protocol


def all_detectors() -> list[Detector]:
    """One instance of every detector, in report order."""
    return [HiddenUplink(), RemoteAccess(), DataLeak(), CommandAndControl(), SafetyOverride(),
            PlcControl(), Recon(), RogueMaster(), LateralMovement(), NewAsset(),
            Egress(), *registry.detectors()]  # and those the protocol modules declare


Observe = Callable[[Any, Context], None]


def _ignore(event: Any) -> None:
    return None


# Detectors that read of a register series only its keys, its first answer and its count.
SERIES_SUMMARY_READERS = frozenset({"recon", "rogue-master"})


class DetectionSink:
    """Feeds facts to the detectors; ``finish`` returns their findings.

    Routing is decided once per fact type and once per event class, not per event: an event
    class maps to a handler that converts it (``adapt.adapter_for``) and calls the ``observe``
    of the detectors that judge the facts it gives in this run (``judged_types``).
    """

    def __init__(self, ctx: Context, detectors: Sequence[Detector] | None = None) -> None:
        self.ctx = ctx
        self.detectors = list(detectors) if detectors is not None else all_detectors()
        self.judged = [(d, judged_types(d, ctx)) for d in self.detectors]
        self.routes: dict[type, list[Observe]] = {}  # fact type -> observe of detectors judging it
        self.handlers: dict[type, Callable[[Any], None]] = {}  # event class -> what to do with one
        self.first: dict[tuple[str, int, str, int], list[bytes]] = {}
        self.identified: set[tuple[str, int, str, int]] = set()
        # A detector that fails on one fact: the fact is skipped for it, the run goes on; the
        # pipeline reports these (``pipeline.InputWarning``, kind "internal") with the rest.
        self._problems: list[Any] = []
        self._failures: dict[tuple[str, str], int] = {}

    @property
    def series_use(self) -> str:
        """A summary of each register series is enough (``pipeline``) when only detectors that
        read its keys, first answer and answer count judge series in this run."""
        readers = {d.name for d, judged in self.judged if RegisterSeries in judged}
        return "summary" if readers <= SERIES_SUMMARY_READERS else "whole"

    def route(self, fact_type: type) -> list[Observe]:
        """The ``observe`` of every detector judging facts of this type in this run."""
        route = self.routes.get(fact_type)
        if route is None:
            route = self.routes[fact_type] = [d.observe for d, judged in self.judged
                                              if issubclass(fact_type, judged)]
        return route

    def feed(self, fact: Any) -> None:
        ctx = self.ctx
        for observe in self.route(type(fact)):
            try:
                observe(fact, ctx)
            except Exception as exc:  # one fact, not the run
                self.failed(observe, fact, exc)

    def failed(self, observe: Any, fact: Any, error: Exception) -> None:
        """Note a detector's failure on one fact: once per detector and error class, with
        the fact's file and frame; later ones are only counted."""
        from cranewatch.pipeline import InputWarning

        detector = getattr(getattr(observe, "__self__", None), "name", None) or repr(observe)
        key = (str(detector), type(error).__name__)
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        if count:
            return
        frame = getattr(fact, "frame", None)
        self._problems.append(InputWarning(
            f"detector {detector} failed on a {type(fact).__name__} ({type(error).__name__}: "
            f"{error}); it was skipped for that one", getattr(fact, "source", None) or None,
            frame if isinstance(frame, int) else None, "internal"))

    def on_event(self, event: Any) -> None:
        # An event class has one kind (a class variable), so its handler is decided once.
        handler = self.handlers.get(type(event))
        if handler is None:
            handler = self.handlers[type(event)] = self._handler(type(event), getattr(event, "kind", ""))
        handler(event)

    def _handler(self, event_type: type, kind: str) -> Callable[[Any], None]:
        adapter = adapt.adapter_for(kind)
        if adapter is None:
            return _ignore
        if adapter is adapt.AS_IS:
            route = self.route(event_type)
            return functools.partial(_observe_all, self, route, self.ctx) if route else _ignore
        if not any(self.route(t) for t in adapter.gives):
            return _ignore  # no detector of this run judges what the kind would give
        convert, routes, ctx = adapter.convert, self.routes, self.ctx

        def handle(event: Any) -> None:
            for fact in convert(event):  # ``feed``, inlined: this runs for most events
                route = routes.get(type(fact))
                if route is None:
                    route = self.route(type(fact))
                for observe in route:
                    try:
                        observe(fact, ctx)
                    except Exception as exc:  # one fact, not the run
                        self.failed(observe, fact, exc)

        return handle

    def on_series(self, series: RegisterSeries) -> None:
        self.feed(series)

    def on_flow(self, flow: Flow) -> None:
        """A finished flow straight from the pipeline (no ``FlowSummary`` made for it)."""
        self._conversation(adapt.flow_conversation(flow))

    def on_flows(self, flows: list[Flow]) -> None:
        """Finished flows in a run (``on_flow`` of each, with the routing looked up once)."""
        ports, ctx = self.ctx.ports, self.ctx
        route = self.route(Conversation)
        first, identified = self.first, self.identified
        for conversation in adapt.flow_conversations(flows):
            # as ``_conversation``: what identification kept of the flow goes with it
            key = (conversation.src, conversation.sport, conversation.dst, conversation.dport)
            if first.pop(key, None) is None:
                identified.discard(key)
            if conversation.protocol:
                ports[(conversation.src, conversation.dst, conversation.protocol)] = conversation.dport
            for observe in route:
                try:
                    observe(conversation, ctx)
                except Exception as exc:  # one fact, not the run
                    self.failed(observe, conversation, exc)

    def on_flow_end(self, flow: Any) -> None:
        self._conversation(adapt.conversation(flow))

    def _conversation(self, conversation: Conversation) -> None:
        # The flow is over: what identification kept of it goes (one entry per flow otherwise
        # stays for the run: millions on a day of short connections)
        key = (conversation.src, conversation.sport, conversation.dst, conversation.dport)
        if self.first.pop(key, None) is None:
            self.identified.discard(key)
        if conversation.protocol:
            self.ctx.ports[(conversation.src, conversation.dst, conversation.protocol)] = conversation.dport
        self.feed(conversation)

    def on_segments(self, segments: Sequence[Any]) -> None:
        self.ctx.segment_starts = tuple(s.start for s in segments[1:])

    def on_payload(self, flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> None:
        fact = adapt.payload(flow, from_client, data, ts, frame)
        self.feed(fact)
        self._identify(fact)

    def _identify(self, fact: Payload) -> None:
        key = (fact.src, fact.sport, fact.dst, fact.dport)
        if key in self.identified:
            return
        sides = self.first.setdefault(key, [b"", b""])
        index = 0 if fact.from_client else 1
        if len(sides[index]) < FIRST_BYTES:
            sides[index] += fact.data[: FIRST_BYTES - len(sides[index])]
        protocol = identify_remote(sides[0], sides[1])
        if protocol is not None:
            self.identified.add(key)
            del self.first[key]
            detail = (sides[1] or sides[0])[:60].decode("latin-1").strip()
            self.feed(RemoteSession(ts=fact.ts, frame=fact.frame, src=fact.src, dst=fact.dst,
                                    sport=fact.sport, dport=fact.dport, source=fact.source,
                                    protocol=protocol, detail=detail))
        elif len(sides[0]) >= FIRST_BYTES and len(sides[1]) >= FIRST_BYTES:
            del self.first[key]
            self.identified.add(key)

    def finish(self) -> list[Finding]:
        findings: list[Finding] = []
        for detector in self.detectors:
            try:
                findings.extend(detector.finish(self.ctx))
            except Exception as exc:  # the other detectors' findings count
                self.failed(detector.finish, None, exc)
        return aggregate(dedupe(findings), self.ctx)

    @property
    def problems(self) -> list[Any]:
        """The first failure of each detector and error class, then how often each recurred."""
        from cranewatch.pipeline import InputWarning

        return self._problems + [
            InputWarning(f"detector {name} failed {count} times with {error}", None, None,
                         "internal")
            for (name, error), count in sorted(self._failures.items()) if count > 1]


def _observe_all(sink: DetectionSink, route: list[Observe], ctx: Context, fact: Any) -> None:
    for observe in route:
        try:
            observe(fact, ctx)
        except Exception as exc:  # one fact, not the run
            sink.failed(observe, fact, exc)


def judged_types(detector: Detector, ctx: Context) -> tuple[type, ...]:
    """The fact types ``detector`` can find anything in with what ``ctx`` knows: its
    ``judges(ctx)`` when it has one (e.g. nothing is new without a baseline or profile), else
    every type it accepts."""
    judges = getattr(detector, "judges", None)
    return tuple(judges(ctx)) if judges is not None else detector.accepts


def dedupe(findings: list[Finding]) -> list[Finding]:
    """Drop egress findings whose hosts another rule already reported."""
    covered = set()
    for f in findings:
        if f.category != "egress":
            covered.add(frozenset(_host(x) for x in (f.src, f.dst) if x))
    kept = []
    for f in findings:
        if f.category == "egress" and frozenset(_host(x) for x in (f.src, f.dst) if x) in covered:
            continue
        kept.append(f)
    return sorted(kept, key=lambda f: (-f.severity, f.first_seen or 0, f.id))


def _host(endpoint: str) -> str:
    if endpoint.startswith("["):
        return endpoint[1:].split("]")[0]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def build_sink(profile: CraneProfile | None = None, baseline: Baseline | None = None,
               crane: str | None = None) -> DetectionSink:
    """The detector sink for a run, judged against a loaded profile and baseline (each may be
    None). Both come loaded from the edge (``judging``: a saved baseline read, or one learned
    from clean captures there); building the sink reads no file and runs no pipeline. The
    crane id comes from ``crane``, else from the profile.
    """
    from cranewatch.baseline import Baseline
    from cranewatch.profile import CraneProfile

    if profile is not None and not isinstance(profile, CraneProfile):
        raise TypeError(f"profile: a loaded CraneProfile (cranewatch.judging), not {type(profile).__name__}")
    if baseline is not None and not isinstance(baseline, Baseline):
        raise TypeError(f"baseline: a loaded Baseline (cranewatch.judging), not {type(baseline).__name__}")
    crane_id = crane or (profile.crane_id if profile is not None else None)
    return DetectionSink(Context(profile=profile, baseline=baseline, crane=crane_id))
