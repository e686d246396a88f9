"""c2 and recon keep bounded summaries, not every conversation (issue 13: flat memory), and
build from them the finding the whole list gave: facts arrive when their flow ends, not in
start order."""

from __future__ import annotations

import random
from pathlib import Path

from cranewatch.detect.base import MAX_FRAMES, Context
from cranewatch.detect.bounded import EarliestTimes, FirstValues
from cranewatch.detect.c2 import CommandAndControl
from cranewatch.detect.facts import DnsQuery
from cranewatch.detect.recon import Recon
from detect_helpers import OCR, T0, conv, run, sts07

C2_HOST = "198.51.100.23"


def _beacon(n: int, seed: int = 5) -> list:
    """n callbacks every ~30 s with distinct start times; some carry no frame (Zeek)."""
    rng = random.Random(seed)
    out = []
    ts = T0
    for i in range(n):
        out.append(conv(OCR, C2_HOST, 8443, ts, protocol="tls" if i % 7 else "http",
                        frame=0 if i % 5 == 3 else 100 + i, sport=40000 + i % 20000))
        ts += 30.0 * (1 + rng.uniform(-0.1, 0.1))
    return out


def test_a_beacon_told_out_of_order_is_the_beacon_told_in_order() -> None:
    calls = _beacon(300)
    shuffled = calls[:]
    random.Random(1).shuffle(shuffled)
    (ordered,) = [f for f in run(calls, profile=sts07()) if f.category == "c2"]
    (mixed,) = [f for f in run(shuffled, profile=sts07()) if f.category == "c2"]
    assert mixed == ordered
    # what the finding says, from the list by hand: the first MAX_FRAMES framed callbacks
    framed = [c for c in calls if c.frame][:MAX_FRAMES]
    evidence = mixed.evidence[0]
    assert evidence.frames == tuple(c.frame for c in framed)
    assert evidence.times[:3] == tuple(c.ts for c in framed[:3])
    assert (mixed.count, mixed.first_seen, mixed.last_seen) == (300, calls[0].ts, calls[-1].ts)
    assert evidence.values["protocols"] == ["http", "tls"]  # call 0 is http, call 1 tls
    assert "300 callbacks" in mixed.title


def test_c2_holds_a_bounded_number_of_conversations_per_pair() -> None:
    ctx = Context(profile=sts07(), crane="STS-07")
    c2 = CommandAndControl()
    calls = _beacon(5000)
    random.Random(2).shuffle(calls)
    for call in calls:
        c2.observe(call, ctx)
    (pair,) = c2.callbacks.values()
    assert len(pair.facts.kept()) <= MAX_FRAMES + 1
    assert pair.facts.count == 5000 and len(pair.times) == 5000
    (finding,) = [f for f in c2.finish(ctx) if f.category == "c2"]
    assert finding.count == 5000


def test_the_earliest_times_are_kept_beyond_the_cap() -> None:
    times = EarliestTimes(cap=4)
    values = [9.0, 3.0, 7.0, 1.0, 8.0, 2.0, 6.0]
    for v in values:
        times.add(v)
    assert sorted(times.values()) == [1.0, 2.0, 3.0, 6.0] and len(times) == 4


def test_first_values_follow_time_then_arrival() -> None:
    first = FirstValues(cap=3)
    for value, ts, arrival in [("b", 5.0, 0), ("a", 5.0, 1), ("c", 1.0, 2), ("b", 0.5, 3), ("d", 0.1, 4)]:
        first.add(value, ts, arrival)
    assert first.ordered() == ["b", "c", "a"]  # d came beyond the cap


def test_a_dns_tunnel_summary_matches_its_queries() -> None:
    names = [f"{'x' * 40}{i:04d}.tunnel.example.com" for i in range(40)] * 3
    queries = [DnsQuery(ts=T0 + i, frame=i + 1, src=OCR, dst="10.20.0.53", sport=5000, dport=53,
                        source="t.pcap", name=name) for i, name in enumerate(names)]
    random.Random(4).shuffle(queries)
    (finding,) = [f for f in run(queries, profile=sts07()) if f.category == "c2"]
    values = finding.evidence[0].values
    assert values["distinct_names"] == 40 and values["longest_label"] == 44
    assert values["names"] == names[:10]
    assert finding.count == 120 and finding.evidence[0].frames == tuple(range(1, MAX_FRAMES + 1))


def test_recon_holds_targets_not_probes() -> None:
    ctx = Context(profile=sts07(), crane="STS-07")
    recon = Recon()
    probes = [conv("10.20.7.99", f"10.20.7.{host}", port, T0 + host * 100 + port / 1000, to_server=1,
                   bytes_to_server=60, frame=host * 1000 + port, sport=50000)
              for host in range(1, 11) for port in (22, 80, 443, 502, 102)] * 20
    random.Random(3).shuffle(probes)
    for probe in probes:
        recon.observe(probe, ctx)
    held = recon.probes["10.20.7.99"]
    assert len(held.targets) == 50 and held.facts.count == 1000
    assert len(held.facts.kept()) <= MAX_FRAMES + 1
    (scan,) = [f for f in recon.finish(ctx) if "scan" in f.title or "sweep" in f.title]
    assert "10 host(s), 5 port(s), 50 probes" in scan.title and scan.count == 1000
    assert scan.first_seen == T0 + 100 + 22 / 1000
    assert scan.evidence[0].frames[:5] == (1022, 1022, 1022, 1022, 1022)


def test_identification_state_goes_with_its_flow() -> None:
    """The first bytes of unclaimed flows, kept to identify remote-access protocols, are let
    go when the flow ends: before, every flow's entry stayed for the run."""
    from types import SimpleNamespace

    from cranewatch.detect.engine import DetectionSink

    sink = DetectionSink(Context(profile=sts07(), crane="STS-07"))
    for i in range(500):
        flow = SimpleNamespace(client=OCR, server="10.20.0.9", client_port=40000 + i, server_port=7000,
                               source="t.pcap", transport="tcp")
        sink.on_payload(flow, True, b"hello", T0 + i, i + 1)
        sink._conversation(conv(OCR, "10.20.0.9", 7000, T0 + i, sport=40000 + i, frame=i + 1))
    assert sink.first == {} and sink.identified == set()


def test_identification_state_goes_with_flows_ended_in_runs(tmp_path: Path) -> None:
    """The same through the pipeline, where finished flows reach the detectors in runs
    (``on_flows``): 300 short connections to an unclaimed port, each with payload both ways,
    leave nothing of their first bytes behind once the run is over."""
    from cranewatch.detect.engine import DetectionSink
    from cranewatch.pipeline import analyze
    from detect_capture import Capture, Host

    client, server = Host("10.31.0.5", "02:00:00:00:00:05"), Host("10.31.0.9", "02:00:00:00:00:09")
    cap = Capture(lan="10.31.0.0/24", gateway_mac="02:00:00:00:00:01")
    t = 1_700_000_000.0
    for i in range(300):
        t = cap.tcp(t, client, server, 41000 + i, 7311, [(True, b"hello", 0.001),
                                                          (False, b"world", 0.001)]) + 0.05
    path = cap.write(tmp_path / "short.pcap")
    sink = DetectionSink(Context())
    analyze([path], sinks=[sink])
    assert sink.first == {} and sink.identified == set()
