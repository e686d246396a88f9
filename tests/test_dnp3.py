"""DNP3: link CRCs, transport reassembly and application requests from known bytes; events
against tshark's ``dnp3.*`` fields on every public DNP3 capture; the module added as one
module plus one registration line, its events reaching the detectors."""

from __future__ import annotations

import csv
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cranewatch.detect import adapt
from cranewatch.detect.facts import PlcCommand
from cranewatch.flows import FlowSummary
from cranewatch.pipeline import Analysis
from cranewatch.protocols import dnp3, registry
from cranewatch.protocols.base import Event, FlowContext
from cranewatch.protocols.dnp3 import Dnp3Decoder, Dnp3LinkFrame, Dnp3Request, Dnp3Response, crc16
from cranewatch.sources.zeek_fields import ZeekRecord, ZeekResult
from detect_helpers import conv, learn, run

SRC = Path(__file__).resolve().parents[1] / "src" / "cranewatch"

# directoperate_and_response.pcap frames 4 and 6 (tcp.payload, read with tshark): a DIRECT
# OPERATE of CROB g12v1 index 0, control code 3 (latch on), on/off 100 ms, and its echo.
DIRECT_OPERATE = bytes.fromhex("05641ac40a0001008a1cc0c0050c012801000000030164000000dded"
                               "6400000000005b")
RESPONSE = bytes.fromhex("05641c4401000a007636c9c08100000c012801000000030164008ccd"
                         "00006400000000005b")


def decoder() -> Dnp3Decoder:
    return Dnp3Decoder(FlowContext("192.0.2.1", 40000, "192.0.2.10", 20000, "tcp", "t.pcap"))


def link_frame(control: int, dst: int, src: int, user: bytes) -> bytes:
    """A link frame with its CRCs (crc16 is checked against the standard's example below)."""
    header = bytes([0x05, 0x64, 5 + len(user), control]) + dst.to_bytes(2, "little") + src.to_bytes(2, "little")
    out = header + crc16(header).to_bytes(2, "little")
    for i in range(0, len(user), 16):
        block = user[i:i + 16]
        out += block + crc16(block).to_bytes(2, "little")
    return out


def test_crc_of_the_reset_link_example() -> None:
    # The link header every DNP3 text shows: reset link states to 1 from 1024 -> CRC E9 21.
    assert crc16(bytes.fromhex("056405C001000004")).to_bytes(2, "little") == b"\xe9\x21"


def test_direct_operate_names_the_point_and_control_code() -> None:
    d = decoder()
    (request,) = d.feed(True, DIRECT_OPERATE, 1.0, 4)
    assert isinstance(request, Dnp3Request)
    assert (request.link_src, request.link_dst, request.function) == (1, 10, 5)
    (obj,) = request.objects
    assert (obj.group, obj.variation, obj.qualifier, obj.points, obj.values) == (12, 1, 0x28, (0,), (3.0,))
    (response,) = d.feed(False, RESPONSE, 1.1, 6)
    assert isinstance(response, Dnp3Response)
    assert (response.function, response.iin, response.request_frame) == (129, 0, 4)
    assert not getattr(d, "problems", [])
    (fact,) = adapt.facts_from_event(request)
    assert isinstance(fact, PlcCommand) and fact.operation == "dnp3-operate"
    assert fact.target == "g12v1[0]" and fact.values["controls"] == {"g12v1.0": 3.0}


def test_bad_crc_is_a_problem_and_the_next_frame_still_decodes() -> None:
    broken = bytearray(DIRECT_OPERATE)
    broken[14] ^= 0xFF  # a byte of the first data block
    d = decoder()
    assert d.feed(True, bytes(broken) + DIRECT_OPERATE, 1.0, 4)[0].frame == 4
    assert len(d.problems) == 1 and "CRC" in d.problems[0].message
    d2 = decoder()
    header_broken = bytearray(DIRECT_OPERATE)
    header_broken[8] ^= 1
    assert d2.feed(True, bytes(header_broken), 1.0, 4) == []
    assert "header CRC" in d2.problems[0].message


def test_transport_reassembles_fir_to_fin_and_drops_out_of_sequence() -> None:
    fragment = bytes([0xC0, 13])  # COLD RESTART
    d = decoder()
    # the application fragment split over two transport segments (FIR seq 5, FIN seq 6)
    assert d.feed(True, link_frame(0xC4, 10, 1, bytes([0x40 | 5]) + fragment[:1]), 1.0, 1) == []
    (event,) = d.feed(True, link_frame(0xC4, 10, 1, bytes([0x80 | 6]) + fragment[1:]), 1.0, 2)
    assert isinstance(event, Dnp3Request) and event.function == 13 and event.first_frame == 1
    d.feed(True, link_frame(0xC4, 10, 1, bytes([0x40 | 1]) + fragment[:1]), 1.0, 3)
    assert d.feed(True, link_frame(0xC4, 10, 1, bytes([0x80 | 3]) + fragment[1:]), 1.0, 4) == []
    assert "out of sequence" in d.problems[-1].message


def test_link_only_frames_and_truncated_input_never_raise() -> None:
    d = decoder()
    (event,) = d.feed(True, bytes.fromhex("056405C001000004E921"), 1.0, 1)
    assert isinstance(event, Dnp3LinkFrame) and (event.link_src, event.link_dst) == (1024, 1)
    for cut in range(len(DIRECT_OPERATE)):
        assert decoder().feed(True, DIRECT_OPERATE[:cut], 1.0, 1) == []
    garbage = decoder()
    assert garbage.feed(True, b"\x05\x64\x01" + bytes(20), 1.0, 1) == []
    assert garbage.problems


def test_analog_output_value() -> None:
    # DIRECT OPERATE g41v2 (16-bit analog output) index 7, value -2, 1-byte index prefix
    fragment = bytes([0xC0, 5, 41, 2, 0x17, 1, 7]) + (-2).to_bytes(2, "little", signed=True) + b"\x00"
    (event,) = decoder().feed(True, link_frame(0xC4, 10, 1, b"\xc0" + fragment), 1.0, 1)
    assert isinstance(event, Dnp3Request)
    (obj,) = event.objects
    assert (obj.group, obj.points, obj.values) == (41, (7,), (-2.0,))


# --------------------------------------------------------------------- against tshark

_NOT_USER_DATA = (
    "the link frame's function is not confirmed/unconfirmed user data (3/4): IEEE 1815 9.2.4 "
    "gives transport segments only to those, an outstation ignores the rest (the conformance "
    "test checks that); tshark dissects the bytes after any primary frame's header")
_AUTH_IIN = (
    "AUTHENTICATE RESPONSE (0x83) carries IIN like every response (IEEE 1815-2012 4.2.2.4); "
    "tshark prints dnp3.al.iin only for 0x81/0x82")
_OTHER_PORT = ("DNP3 on port 20001: tshark dissects only port 20000, cranewatch recognises the "
               "link header (0x0564 and a valid CRC) on any port")
TSHARK_DIFFERS: dict[str, dict[int, str]] = {
    "ICS-Security-Tools/pcaps/dnp3/opendnp3-3/conformance/6.6.2.2/dump.pcap":
        {14: _NOT_USER_DATA, 16: _NOT_USER_DATA},
    "ICS-Security-Tools/pcaps/dnp3/opendnp3-3/conformance/6.6.2.5/dump.pcap": {8: _NOT_USER_DATA},
    "ICS-Security-Tools/pcaps/dnp3/auth_change_session_keys.pcap": {5: _AUTH_IIN, 7: _AUTH_IIN},
    "ICS-Security-Tools/pcaps/dnp3/auth_control_challenge_response.pcap": {2: _AUTH_IIN},
    "ICS-Security-Tools/pcaps/bro/dnp3/dnp3_read_p20001.pcap": {4: _OTHER_PORT, 6: _OTHER_PORT},
    "zeek/testing/btest/Traces/dnp3/dnp3_read_p20001.pcap": {4: _OTHER_PORT, 6: _OTHER_PORT},
}


def dnp3_captures() -> list[str]:
    manifest = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcaps" / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return sorted({r["path"] for r in rows if "dnp3" in r["protocols"].split(",")
                   or "/dnp3/" in r["path"]})


class _Collect:
    def __init__(self) -> None:
        self.events: list[Dnp3Request | Dnp3Response] = []

    def on_event(self, event: Event) -> None:
        if isinstance(event, Dnp3Request | Dnp3Response):
            self.events.append(event)

    def on_series(self, series: Any) -> None:
        pass

    def on_flow_end(self, flow: FlowSummary) -> None:
        pass

    def finish(self) -> list[Any]:
        return []


def _views(tshark: str, path: Path) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str, str]]]:
    out = subprocess.run([tshark, "-r", str(path), "-Y", "dnp3", "-T", "fields", "-E", "separator=/t",
                          "-e", "frame.number", "-e", "dnp3.al.func", "-e", "dnp3.al.iin"],
                         capture_output=True, text=True, check=True).stdout
    theirs = {}
    for line in out.splitlines():
        frame, function, iin = line.split("\t")
        if function or iin:
            theirs[int(frame)] = (function, iin)
    collect = _Collect()
    Analysis([collect], fast_path=False, fold_reads=False).run([path])
    per_frame: dict[int, list[Dnp3Request | Dnp3Response]] = defaultdict(list)
    for event in collect.events:
        per_frame[event.frame].append(event)
    mine = {frame: (",".join(str(e.function) for e in events),
                    ",".join(f"0x{e.iin:04x}" for e in events if isinstance(e, Dnp3Response)))
            for frame, events in per_frame.items()}
    return theirs, mine


@pytest.mark.slow
def test_application_layer_matches_tshark_in_every_public_capture(shared_data: Path, tshark: str) -> None:
    """Every DNP3 capture of the manifest (232 files, ~1 900 frames with an application
    fragment): function code(s) and IIN per frame as tshark prints them."""
    captures = dnp3_captures()
    assert len(captures) > 200
    problems, compared = [], 0
    for capture in captures:
        theirs, mine = _views(tshark, shared_data / "pcaps" / capture)
        known = TSHARK_DIFFERS.get(capture, {})
        for frame in sorted(set(theirs) | set(mine)):
            compared += 1
            if frame in known:
                assert theirs.get(frame) != mine.get(frame), (capture, frame, "now agrees")
            elif theirs.get(frame) != mine.get(frame):
                problems.append((capture, frame, theirs.get(frame), mine.get(frame)))
    assert compared > 1800
    assert not problems, problems[:10]


def test_bad_link_crcs_are_reported_with_the_frame(shared_data: Path) -> None:
    # opendnp3 conformance 6.6.2.4 sends frames whose header CRC is wrong (D1 7B for CF 7B:
    # checked with crc16 of the 8 header bytes and the standard's example above).
    path = shared_data / "pcaps/ICS-Security-Tools/pcaps/dnp3/opendnp3-3/conformance/6.6.2.4/dump.pcap"
    result = Analysis([_Collect()], fast_path=False).run([path])
    crc = [w for w in result.warnings if "CRC" in str(w)]
    assert crc and all("frame 8" in str(w) for w in crc), [str(w) for w in crc]


# --------------------------------------------------------------- one module, one line

def test_adding_dnp3_touched_only_its_module_and_the_registration_line() -> None:
    for generic in ("pipeline.py", "detect/adapt.py", "profile.py", "policy/inservice.py",
                    "sources/zeek.py", "detect/plc_control.py", "detect/rogue_master.py"):
        assert not re.search("dnp3", (SRC / generic).read_text(), re.IGNORECASE), generic
    registration = (SRC / "protocols" / "registry.py").read_text()
    assert registration.count('"dnp3"') == 1
    assert "dnp3" in registry.profile_protocols()
    assert registry.policy_transports()["dnp3"] == ("tcp", "udp")
    assert "dnp3" in registry.zeek_mappers()
    assert "dnp3" in registry.master_protocols()


def test_dnp3_events_reach_plc_control_and_rogue_master() -> None:
    (request,) = decoder().feed(True, DIRECT_OPERATE, 1.0, 4)
    findings = run([*adapt.facts_from_event(request)], crane=None)
    assert [f.rule for f in findings] == ["plc-control"] and "g12v1" in str(findings[0].evidence)
    baseline = learn([conv("192.0.2.1", "192.0.2.10", 20000, protocol="dnp3")])
    assert run([conv("192.0.2.1", "192.0.2.10", 20000, protocol="dnp3")], baseline=baseline,
               crane=None) == []
    (rogue,) = run([conv("192.0.2.66", "192.0.2.10", 20000, protocol="dnp3")], baseline=baseline,
                   crane=None)
    assert rogue.rule == "rogue-master" and rogue.src == "192.0.2.66"


def test_zeek_dnp3_log_record() -> None:
    record = ZeekRecord("dnp3.log", {"ts": 1.5, "uid": "C1", "id.orig_h": "192.0.2.1", "id.orig_p": 40000,
                         "id.resp_h": "192.0.2.10", "id.resp_p": 20000, "fc_request": "COLD_RESTART",
                         "fc_reply": "RESPONSE", "iin": 32768}, "dnp3.log", 3)
    request, response = dnp3.zeek_dnp3(record, ZeekResult())
    assert isinstance(request, Dnp3Request) and request.function == 13 and request.src == "192.0.2.1"
    assert isinstance(response, Dnp3Response) and response.iin == 0x8000 and response.src == "192.0.2.10"
    (fact,) = adapt.facts_from_event(request)
    assert isinstance(fact, PlcCommand) and fact.operation == "dnp3-cold-restart"


def test_fuzzed_frames_give_events_or_problems_never_an_exception() -> None:
    """Bounded fuzzing (Hypothesis, fixed examples): damaged copies of real frames and random
    bytes, over TCP (split anywhere) and UDP; every problem carries the frame."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    seeds = [DIRECT_OPERATE, RESPONSE, link_frame(0xC4, 10, 1, b"\xc0\xc0\x0d"),
             link_frame(0xC4, 10, 1, bytes([0xC0, 0xC0, 2, 80, 1, 0, 7, 7, 0]))]

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                            max_size=4),
           st.binary(max_size=40), st.integers(1, 60), st.sampled_from(["tcp", "udp"]))
    def check(seed: bytes, flips: list[tuple[int, int]], noise: bytes, cut: int, transport: str) -> None:
        data = bytearray(seed + noise + seed)
        for pos, value in flips:
            data[pos % len(data)] = value
        d = Dnp3Decoder(FlowContext("192.0.2.1", 40000, "192.0.2.10", 20000, transport, "f.pcap"))
        for i, start in enumerate(range(0, len(data), cut)):
            for event in d.feed(True, bytes(data[start:start + cut]), 1.0, i + 1):
                assert isinstance(event, Event)
        for problem in getattr(d, "problems", []):
            assert problem.location is not None and problem.location.frame is not None

    check()
