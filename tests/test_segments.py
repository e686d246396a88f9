"""Segments: captures read together are cut where they do not join, and compared only within.

Expected values come from the captures themselves, read with capinfos/tshark by hand: the lab's
``normal`` run ends at 01:57:31.999 with heartbeat (IR 0) 57256, ``normal-2`` starts 5.208 s
later with heartbeat 21579; the CMS (10.20.7.30) polls IR 0-11 every 0.200 s and the heartbeat
counts 10 per second. ``editcap -c N`` splits a capture into files of N packets, numbered from
0, so frame f of part k is frame k*N + f of the whole.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cranewatch.cli import main
from cranewatch.detect.c2 import periodicity
from cranewatch.judging import learn_judging
from cranewatch.pipeline import analyze
from cranewatch.process.engine import ProcessSink
from cranewatch.profile import load_profile
from cranewatch.segments import FileSpan, plan_segments
from cranewatch.sinks import build_sinks, judged_sinks
from cranewatch.sources.pcap import CaptureHeader

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
PROFILE = REPO / "profiles" / "sts-07.toml"
PLC = "10.20.7.10"
MASTERS = {"10.20.7.20", "10.20.7.30", "10.20.0.50", "10.20.7.66"}  # OCR, CMS, EWS, rogue


def capture(scenario: str) -> Path:
    return LAB / scenario / "crane-lan.pcap"


@pytest.fixture(scope="session")
def editcap() -> str:
    path = shutil.which("editcap")
    if path is None:
        pytest.fail("editcap (tshark's) is not installed: run scripts/install-deps.sh")
    return path


def split(editcap: str, whole: Path, out: Path, packets: int, *extra: str) -> list[Path]:
    subprocess.run([editcap, *extra, "-c", str(packets), str(whole), str(out / "part.pcap")],
                   check=True, capture_output=True)
    return sorted(out.glob("part_*.pcap"))


def finding_lines(paths: list[Path], tmp_path: Path, name: str) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    assert main(["analyze", *map(str, paths), "--profile", str(PROFILE), "--format", "jsonl",
                 "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def in_whole_numbering(finding: dict, whole: Path, packets: int) -> dict:
    """A finding of the rotated parts with its evidence located as in the whole capture."""
    for evidence in finding["evidence"]:
        if "source" not in evidence:
            continue
        located = [(evidence["source"], evidence.get("frames", []))]
        located += [(more["source"], more["frames"])
                    for more in evidence.get("values", {}).pop("frames_in", [])]
        frames = []
        for source, numbers in located:
            part = int(Path(source).stem.split("_")[1])
            frames += [part * packets + n for n in numbers]
        evidence["source"] = str(whole)
        if frames:
            evidence["frames"] = frames
        read = evidence.get("values", {}).get("frames")  # a master's reads (masters-disagree)
        if read and isinstance(read[0], dict):
            evidence["values"]["frames"] = [int(Path(r["source"]).stem.split("_")[1]) * packets + n
                                            for r in read for n in r["frames"]]
    return finding


# ------------------------------------------------------------------------ rotated captures


@pytest.mark.parametrize(("scenario", "packets"), [("replay", 1000), ("safety-bypass", 700),
                                                   ("false-load", 500), ("normal", 1000)])
def test_rotated_files_are_one_segment_with_the_findings_of_the_whole(
        editcap: str, tmp_path: Path, scenario: str, packets: int) -> None:
    whole = capture(scenario)
    parts = split(editcap, whole, tmp_path, packets)
    assert len(parts) >= 2
    records = finding_lines(parts, tmp_path, "parts")
    (segment,) = [r for r in records if r["type"] == "segment"]
    assert [f["path"] for f in segment["files"]] == [str(p) for p in parts]
    assert segment["cut"] == [] and segment["reasons"] == []
    rotated = [json.dumps(in_whole_numbering(r, whole, packets), sort_keys=True)
               for r in records if r["type"] == "finding"]
    alone = [json.dumps(r, sort_keys=True) for r in finding_lines([whole], tmp_path, "whole")
             if r["type"] == "finding"]
    assert rotated == alone


def test_evidence_frames_across_rotated_files_name_each_file(editcap: str, tmp_path: Path) -> None:
    # The replay starts at frame 445 of the whole capture and runs past frame 1000: split at
    # 500, its first 20 frames lie in part 0 (445-500) and part 1 (1-80).
    parts = split(editcap, capture("replay"), tmp_path, 500)
    records = finding_lines(parts, tmp_path, "parts")
    (replay,) = [r for r in records if r.get("rule") == "process-replay"]
    evidence = replay["evidence"][0]
    assert evidence["source"] == str(parts[0])
    assert evidence["frames"][0] == 445 and max(evidence["frames"]) <= 500
    (more,) = evidence["values"]["frames_in"]
    assert more["source"] == str(parts[1]) and all(f <= 80 for f in more["frames"])
    assert len(evidence["frames"]) + len(more["frames"]) == 20


def test_events_of_a_flow_that_goes_on_into_the_next_file_name_that_file(
        editcap: str, tmp_path: Path) -> None:
    # tshark: frame 445 of safety-bypass is the EWS's FC 5 write to coil 0 (safety_bypass) on
    # the connection opened at frame 436; split at 440 it is frame 5 of the second part
    parts = split(editcap, capture("safety-bypass"), tmp_path, 440)
    result = analyze(parts, sinks=build_sinks(load_profile(PROFILE), None, "STS-07"))
    override = next(f for f in result.findings if f.rule == "safety-override"
                    and "safety_bypass" in f.title)
    assert override.evidence[0].source == str(parts[1])
    assert override.evidence[0].frames[0] == 5


def test_network_evidence_across_rotated_files_names_each_file() -> None:
    from cranewatch.detect.base import Incidents

    class Write:
        def __init__(self, ts: float, frame: int, source: str) -> None:
            self.ts, self.frame, self.source = ts, frame, source

    incidents = Incidents()
    for ts, frame, source in ((1.0, 999, "a"), (2.0, 1000, "a"), (3.0, 1, "b"), (4.0, 7, "b")):
        incident = incidents.add(("k",), Write(ts, frame, source))  # type: ignore[arg-type]
    from cranewatch.detect.base import Context, Verdict, make_finding
    from cranewatch.model import Severity

    verdict = Verdict("r", "plc-control", Severity.LOW, (), "")
    evidence = make_finding(Context(), verdict, ("k",), incident, "t", "s", "d").evidence[0]
    assert (evidence.source, evidence.frames) == ("a", (999, 1000))
    assert evidence.values["frames_in"] == [{"source": "b", "frames": [1, 7]}]


# ------------------------------------------------------------------------ separate runs


def test_two_separate_runs_are_two_segments_and_raise_nothing(tmp_path: Path) -> None:
    records = finding_lines([capture("normal-2"), capture("normal")], tmp_path, "runs")
    segments = [r for r in records if r["type"] == "segment"]
    assert [s["files"][0]["path"] for s in segments] == [str(capture("normal")), str(capture("normal-2"))]
    assert segments[0]["cut"] == []
    assert segments[1]["cut"] == ["gap", "counter"]
    gap, counter = segments[1]["reasons"]
    assert gap.startswith("5.208 s without a packet") and "every 0.200 s" in gap and "allows 1.000 s" in gap
    assert "IR 0 of 10.20.7.10" in counter and "from 57256 to 21579" in counter
    assert segments[1]["files"][0]["frames"] == [1, 4655]
    # before segments: 5 findings, 4 high (frozen hoist_height, positions vs integrated speeds)
    severities = [r["severity"] for r in records if r["type"] == "finding"]
    assert not set(severities) & {"medium", "high", "critical"}


def test_a_counter_that_does_not_continue_cuts_without_a_gap(editcap: str, tmp_path: Path) -> None:
    # normal-2 moved 5 s earlier starts 0.208 s after normal ends: within the polling rhythm,
    # but the heartbeat jumps from 57256 to 21579 where ~2 counts were due.
    shifted = tmp_path / "normal-2-early.pcap"
    subprocess.run([editcap, "-t", "-5", str(capture("normal-2")), str(shifted)], check=True,
                   capture_output=True)
    result = analyze([capture("normal"), shifted], sinks=build_sinks(load_profile(PROFILE)))
    _, second = result.segments
    assert second.kinds == ("counter",)
    assert "from 57256 to 21579" in second.reasons[0]
    assert not [f for f in result.findings if f.severity >= 2]  # medium and above


def test_another_capture_session_cuts_without_a_gap(editcap: str, tmp_path: Path) -> None:
    # the middle part's pcap file header says snap length 65535 (bytes 16-19, little-endian)
    # where the capture has 262144 (capinfos -l): the same packets, another session
    parts = split(editcap, capture("normal"), tmp_path, 3000, "-F", "pcap")
    other = tmp_path / "other-session.pcap"
    data = bytearray(parts[1].read_bytes())
    assert data[16:20] == (262144).to_bytes(4, "little")
    data[16:20] = (65535).to_bytes(4, "little")
    other.write_bytes(bytes(data))
    result = analyze([parts[0], other, parts[2]])
    assert [s.kinds for s in result.segments] == [(), ("session",), ("session",)]
    assert "snap length 262144 vs 65535" in result.segments[1].reasons[0]
    assert "snap length 65535 vs 262144" in result.segments[2].reasons[0]
    assert analyze(parts).segments[0].kinds == ()  # the same parts as written: one segment


def test_rotated_pcap_and_pcapng_files_alike_are_one_segment(editcap: str, tmp_path: Path) -> None:
    for kind in ("pcap", "pcapng"):
        (tmp_path / kind).mkdir()
        parts = split(editcap, capture("normal"), tmp_path / kind, 3000, "-F", kind)
        assert len(parts) == 3
        (segment,) = analyze(parts).segments
        assert len(segment.files) == 3 and segment.packets == 6906


def test_demo_quarantine_captures_together_raise_what_each_raises_alone() -> None:
    from cranewatch.demo import BASELINE_SCENARIO, QUARANTINE_SCENARIOS

    judging = learn_judging([capture(BASELINE_SCENARIO)], load_profile(PROFILE))
    alone: set[str] = set()
    for scenario in QUARANTINE_SCENARIOS:
        result = analyze([capture(scenario)], sinks=judged_sinks(judging, "STS-07"))
        alone |= {f.id for f in result.findings}
    together = analyze([capture(s) for s in QUARANTINE_SCENARIOS],
                       sinks=judged_sinks(judging, "STS-07"))
    # before segments: 20 findings together (replays "120.8 s earlier", frozen signals over
    # the minutes between captures, a heartbeat "jumping back") where 11 came alone
    assert {f.id for f in together.findings} == alone
    assert len(together.segments) == len(QUARANTINE_SCENARIOS)


# ------------------------------------------------------------------------ the planner


def span(path: str, first: float, last: float, silence: float = 1.0, snaplen: int = 262144) -> FileSpan:
    return FileSpan(path, first, last, 100, (CaptureHeader(1, snaplen),), silence)


def test_taps_recording_at_the_same_time_are_one_segment() -> None:
    segments = plan_segments([span("tap-b", 5.0, 60.0), span("tap-a", 0.0, 50.0)])
    assert len(segments) == 1
    assert [f.path for f in segments[0].files] == ["tap-a", "tap-b"]
    assert (segments[0].start, segments[0].end, segments[0].packets) == (0.0, 60.0, 200)


def test_without_polling_a_gap_is_judged_by_the_silences_inside_the_files() -> None:
    joined = plan_segments([span("a", 0.0, 50.0, silence=3.0), span("b", 52.5, 90.0, silence=1.0)])
    assert len(joined) == 1
    cut = plan_segments([span("a", 0.0, 50.0, silence=3.0), span("b", 53.5, 90.0, silence=1.0)])
    assert [s.kinds for s in cut] == [(), ("gap",)]
    assert "3.500 s without a packet" in cut[1].reasons[0]


def test_file_of_resolves_rotated_files_by_time_and_frame() -> None:
    a = FileSpan("a", 0.0, 10.0, 1000, (CaptureHeader(1, 262144),), 1.0)
    (segment,) = plan_segments([a, span("b", 10.0, 20.0)])  # b: 100 packets
    files = segment.file_of(np.array([1.0, 10.0, 10.0, 15.0, 20.0]), np.array([5, 1000, 1, 50, 100]))
    # at 10.0 s frame 1000 can only be a's; frame 1 fits both: the later file is taken
    assert files.tolist() == [0, 0, 1, 1, 1]


def test_beacon_intervals_never_span_a_segment_boundary() -> None:
    # one connection in each of three daily captures is no beacon "every 86400 s"
    day = 86400.0
    assert periodicity([0.0, day, 2 * day]) == (day, 0.0)
    assert periodicity([0.0, day, 2 * day], cuts=(day - 10, 2 * day - 10)) is None
    assert periodicity([0.0, 60.0, 120.0, day, day + 60.0], cuts=(day - 10,)) == (60.0, 0.0)


# ------------------------------------------------------------------------ hosts of findings

ATTACKS = sorted(p.name for p in LAB.iterdir()
                 if (p / "labels.json").is_file() and not p.name.startswith("normal"))


@pytest.mark.parametrize("scenario", ATTACKS)
def test_every_process_finding_of_an_attack_names_plc_and_master(scenario: str) -> None:
    sink = ProcessSink(profile=load_profile(PROFILE), crane="STS-07")
    result = analyze([capture(scenario)], sinks=[sink])
    for finding in result.findings:
        assert finding.src == PLC, (finding.rule, finding.src)
        assert finding.dst in MASTERS, (finding.rule, finding.dst)
        masters = [m.split(" by ")[1] for e in finding.evidence for m in e.values["masters"]]
        assert finding.dst in masters


def test_an_override_names_the_master_that_wrote_it() -> None:
    sink = ProcessSink(profile=load_profile(PROFILE), crane="STS-07")
    result = analyze([capture("safety-bypass")], sinks=[sink])
    bypass = next(f for f in result.findings if f.rule == "process-safety-bypass")
    # tshark: frame 1217 is FC 5 from 10.20.0.50 (the EWS) to 10.20.7.10 setting coil 0
    assert (bypass.src, bypass.dst) == (PLC, "10.20.0.50")
    assert "written by 10.20.0.50" in bypass.evidence[0].values["masters"]


def pcapng_with_interface(path: Path, name: str, ts_us: int) -> Path:
    """A two-packet pcapng (100 µs apart) whose interface block names its interface."""
    import struct

    def block(kind: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    label = name.encode()
    option = struct.pack("<HH", 2, len(label)) + label + bytes(-len(label) % 4) + bytes(4)
    idb = block(1, struct.pack("<HHI", 1, 0, 262144) + option)
    frame = bytes(60)
    epbs = b"".join(block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, 60, 60) + frame)
                    for t in (ts_us, ts_us + 100))
    path.write_bytes(shb + idb + epbs)
    return path


def test_pcapng_interface_names_tell_sessions_apart(tmp_path: Path) -> None:
    a = pcapng_with_interface(tmp_path / "a.pcapng", "eth0", 1_000_000)
    b = pcapng_with_interface(tmp_path / "b.pcapng", "eth1", 1_000_200)
    c = pcapng_with_interface(tmp_path / "c.pcapng", "eth1", 1_000_400)
    result = analyze([a, b, c])
    assert [[f.path for f in s.files] for s in result.segments] == [[str(a)], [str(b), str(c)]]
    assert result.segments[1].kinds == ("session",)
    assert "interface eth0 vs eth1" in result.segments[1].reasons[0]


def test_every_sample_falls_in_a_segment() -> None:
    from cranewatch.lab.registers import STS07_REGISTER_MAP
    from cranewatch.process.engine import split_signals
    from cranewatch.process.signals import Signal

    segments = plan_segments([span("a", 10.0, 20.0, silence=0.1), span("b", 30.0, 40.0, silence=0.1)])
    assert len(segments) == 2
    # samples before, inside, between and after the captures (e.g. from Zeek logs read too)
    ts = np.array([5.0, 15.0, 25.0, 30.0, 45.0])
    spec = STS07_REGISTER_MAP.by_name()["hoist_load"]
    signal = Signal(spec, ts, ts * 0, np.arange(1, 6), np.zeros(5, dtype=np.int16), ("read by m",))
    parts = split_signals({"hoist_load": signal}, segments)
    assert [p[1]["hoist_load"].ts.tolist() for p in parts] == [[5.0, 15.0, 25.0], [30.0, 45.0]]


@pytest.mark.parametrize("scenario", ATTACKS)
def test_every_finding_of_an_attack_names_its_hosts(scenario: str) -> None:
    # the Finding contract: src/dst wherever a host is involved; a new host (or a host's new
    # MAC) is one host, so it alone has no dst
    result = analyze([capture(scenario)], sinks=build_sinks(load_profile(PROFILE), None, "STS-07"))
    assert result.findings
    for finding in result.findings:
        assert finding.src, (finding.rule, finding.title)
        assert finding.dst or (finding.category == "new-asset" and "New host" in finding.title), \
            (finding.rule, finding.title)


def test_a_boundary_silence_no_longer_than_one_inside_the_files_joins() -> None:
    from cranewatch.protocols.modbus import RegisterSeries

    # a poll every 0.2 s on both sides (allows 1.0 s); the first file fell silent for 2.5 s
    # once (a PLC restart), so a 2.0 s silence at the boundary may be the same recording
    ts = np.concatenate((np.arange(0.0, 50.0, 0.2), np.arange(52.0, 90.0, 0.2)))
    poll = RegisterSeries("10.20.7.30", "10.20.7.10", 1, 2, 0, 7, ts, np.arange(len(ts)),
                          np.zeros((len(ts), 7), dtype=np.uint16))
    last = float(ts[ts < 50][-1])
    files = [span("a", 0.0, last, silence=2.5), span("b", 52.0, 90.0, silence=0.2)]
    assert len(plan_segments(files, [poll])) == 1
    files = [span("a", 0.0, last, silence=0.2), span("b", 52.0, 90.0, silence=0.2)]
    cut = plan_segments(files, [poll])
    assert cut[1].kinds == ("gap",) and "allows 1.000 s" in cut[1].reasons[0]


def test_a_ramp_that_starts_over_is_no_counter_but_a_heartbeat_is() -> None:
    from cranewatch.protocols.modbus import RegisterSeries

    # reads every 0.1 s; column 0 ramps 1500 -> 3975 by 25 and starts over at 1500 (the
    # benchmark generator's positions), column 1 counts +2 a read (a heartbeat); the second
    # file begins right where the ramp starts over
    ts = np.round(np.arange(0.0, 40.0, 0.1), 3)
    ramp = 1500 + 25 * (np.arange(len(ts)) % 100)
    beat = (40000 + 2 * np.arange(len(ts))) % 65536
    boundary = 200  # ramp[200] == 1500
    files = [span("a", 0.0, float(ts[boundary - 1]), silence=0.1),
             span("b", float(ts[boundary]), 40.0, silence=0.1)]

    def series(beats: np.ndarray) -> RegisterSeries:
        values = np.stack((ramp, beats), axis=1).astype(np.uint16)
        return RegisterSeries("10.20.7.30", "10.20.7.10", 1, 4, 0, 2, ts, np.arange(len(ts)), values)

    assert len(plan_segments(files, [series(beat)])) == 1
    other_run = beat.copy()
    other_run[boundary:] = (other_run[boundary:] + 20000) % 65536
    cut = plan_segments(files, [series(other_run)])
    assert cut[1].kinds == ("counter",)
    assert cut[1].reasons[0].startswith("counter IR 1 of 10.20.7.10") and "from 40398 to 60400" in cut[1].reasons[0]
