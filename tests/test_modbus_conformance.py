"""Conformance: cranewatch's Modbus events against tshark's own fields, frame for frame.

For every public capture whose tshark protocol list (MANIFEST.tsv) names ``mbtcp`` or
``modbus``, tshark prints per frame the transaction id, unit id, function code, exception
code, reference (address), word count and bit count of every Modbus PDU in the frame. The
same columns are built from cranewatch's events (all of them: reads are not folded here) and
must agree exactly, except for the frames listed in ``TSHARK_DIFFERS`` with the reason.

Which PDUs carry a reference/word/bit count in tshark follows Wireshark's dissector
(epan/dissectors/packet-mbtcp.c): requests of FC 1–6, 15, 16, 22, 24 carry the reference;
FC 3/4/16 requests a word count, FC 1/2/15 a bit count; of the responses only the writes that
echo their range (FC 5, 6, 15, 16, 22) carry the reference, FC 16 a word count, FC 15 a bit
count. A PDU cranewatch reports as malformed (``detail["malformed"]``, with a warning) is
compared on its header and function/exception code only: cranewatch does not guess fields
from a body that breaks the standard, where tshark shows whatever bytes are there.
"""

from __future__ import annotations

import csv
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cranewatch.flows import FlowSummary
from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import Event
from cranewatch.protocols.modbus import ModbusRequest, ModbusResponse, RegisterSeries

FIELDS = ("frame.number", "mbtcp.trans_id", "mbtcp.unit_id", "modbus.func_code",
          "modbus.exception_code", "modbus.reference_num", "modbus.word_cnt", "modbus.bit_cnt")
REFERENCE_IN_REQUEST = {1, 2, 3, 4, 5, 6, 15, 16, 22, 24}
REFERENCE_IN_RESPONSE = {5, 6, 15, 16, 22}

_RETRANSMITTED_NEW_DATA = (
    "a retransmission that overlaps delivered bytes also carries new PDUs; tshark marks the "
    "segment a retransmission and does not dissect it, cranewatch trims the overlap and decodes "
    "the new bytes"
)
_HOLE_FILLED_LATER = (
    "the server's segment arrives before the hole in front of it is filled; tshark dissects it at "
    "once, cranewatch waits and decodes the bytes in order when the retransmission fills the hole"
)
_FUZZED_SEQUENCE = (
    "Zeek's fuzzed trace: the server's TCP sequence numbers jump, so tshark's TCP analysis takes "
    "these segments for retransmissions/out-of-order and does not dissect them; the bytes are "
    "whole MBAP ADUs that cranewatch decodes"
)

_TRAILING_BYTES = (
    "the segment before carried bytes beyond its ADU (its MBAP length is shorter than the "
    "segment); tshark takes them for the start of the next header and gives up on this segment; "
    "cranewatch warns, skips them and decodes the whole ADU this segment holds"
)

# capture path (relative to pcaps/) -> {frame: reason}
TSHARK_DIFFERS: dict[str, dict[int, str]] = {
    "ICS-Security-Tools/pcaps/ModbusTCP/mb2.pcap": {
        1131: _RETRANSMITTED_NEW_DATA,
        3008: _HOLE_FILLED_LATER,
        3674: _HOLE_FILLED_LATER,
        13176: _RETRANSMITTED_NEW_DATA,
    },
    "ICS-Security-Tools/pcaps/bro/modbus/modbusBig.pcap": {
        3150: "tshark calls the only copy of this response a 'spurious retransmission' because the"
              " client's ACK of it was captured first, and does not dissect it",
    },
    "ICS-Security-Tools/pcaps/bro/modbus/fuzz-72.pcap": {
        **dict.fromkeys((19, 21, 23, 25, 26, 27, 32), _FUZZED_SEQUENCE),
        7: _TRAILING_BYTES,
    },
    "ICS-Security-Tools/pcaps/ModbusTCP/modbus_test_data_part1.pcap": {113: _TRAILING_BYTES},
    "ICS-Security-Tools/pcaps/bro/modbus/fuzz-1011.pcap": {
        4: "434 s after the connection's last packet, past the 300 s TCP idle timeout (Zeek's "
           "tcp_inactivity_timeout is 5 min too): cranewatch ends the flow and takes this server "
           "segment as the start of a new one (capture begun mid-stream) and decodes its ADU; "
           "tshark keeps one stream, in which the segment's sequence number lies behind the last "
           "one, and does not dissect it",
    },
}
for _copy in ("openics/MODBUS-TestDataPart1.pcap", "quickdraw/modbus_test_data_part1.pcap"):
    TSHARK_DIFFERS[f"ICS-Security-Tools/pcaps/{_copy}"] = TSHARK_DIFFERS[
        "ICS-Security-Tools/pcaps/ModbusTCP/modbus_test_data_part1.pcap"]
TSHARK_DIFFERS["zeek/testing/btest/Traces/modbus/modbusBig.pcap"] = TSHARK_DIFFERS[
    "ICS-Security-Tools/pcaps/bro/modbus/modbusBig.pcap"]
TSHARK_DIFFERS["zeek/testing/btest/Traces/modbus/fuzz-72.pcap"] = TSHARK_DIFFERS[
    "ICS-Security-Tools/pcaps/bro/modbus/fuzz-72.pcap"]
TSHARK_DIFFERS["zeek/testing/btest/Traces/modbus/fuzz-1011.pcap"] = TSHARK_DIFFERS[
    "ICS-Security-Tools/pcaps/bro/modbus/fuzz-1011.pcap"]


def modbus_captures() -> list[str]:
    manifest = Path(__file__).resolve().parents[2] / "shared" / "data" / "pcaps" / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return sorted({r["path"] for r in rows
                   if {"mbtcp", "modbus"} & set(r["protocols"].split(","))})


class _Collect:
    def __init__(self) -> None:
        self.events: list[ModbusRequest | ModbusResponse] = []

    def on_event(self, event: Event) -> None:
        if isinstance(event, ModbusRequest | ModbusResponse):
            self.events.append(event)

    def on_series(self, series: RegisterSeries) -> None:
        pass

    def on_flow_end(self, flow: FlowSummary) -> None:
        pass

    def finish(self) -> list[Any]:
        return []


def _columns(event: ModbusRequest | ModbusResponse) -> tuple[Any, ...]:
    f = event.function
    exception = getattr(event, "exception_code", None)
    ref = words = bits = None
    if "malformed" not in event.detail:
        if isinstance(event, ModbusRequest):
            ref = event.address if f in REFERENCE_IN_REQUEST else None
            words = event.quantity if f in (3, 4, 16) else None
            bits = event.quantity if f in (1, 2, 15) else None
        elif exception is None:
            ref = event.address if f in REFERENCE_IN_RESPONSE else None
            words = event.quantity if f == 16 else None
            bits = event.quantity if f == 15 else None
    return (event.transaction_id, event.unit_id, f, exception, ref, words, bits)


def cranewatch_view(path: Path) -> tuple[dict[int, tuple[str, ...]], set[int]]:
    """Per frame, tshark's columns built from cranewatch's events; and the malformed frames."""
    collect = _Collect()
    Analysis([collect], fast_path=False, fold_reads=False).run([path])
    per_frame: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    malformed: set[int] = set()
    for event in collect.events:
        per_frame[event.frame].append(_columns(event))
        if "malformed" in event.detail:
            malformed.add(event.frame)
    view: dict[int, tuple[str, ...]] = {}
    for frame, pdus in per_frame.items():
        # tshark joins repeated fields with commas and leaves out absent ones.
        view[frame] = tuple(",".join(str(p[i]) for p in pdus if p[i] is not None)
                            for i in range(7))
    return view, malformed


def tshark_view(tshark: str, path: Path) -> dict[int, tuple[str, ...]]:
    command = [tshark, "-r", str(path), "-Y", "mbtcp", "-T", "fields", "-E", "separator=/t"]
    for name in FIELDS:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    view: dict[int, tuple[str, ...]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        view[int(cols[0])] = tuple(cols[1:8])
    return view


@pytest.mark.parametrize("capture", modbus_captures() or ["(no ../shared)"])
def test_modbus_events_match_tshark_frame_for_frame(capture: str, shared_data: Path,
                                                     tshark: str) -> None:
    path = shared_data / "pcaps" / capture
    theirs = tshark_view(tshark, path)
    mine, malformed = cranewatch_view(path)
    expected_differences = TSHARK_DIFFERS.get(capture, {})
    assert theirs, "tshark sees Modbus in every capture of the manifest list"
    problems = []
    for frame in sorted(set(theirs) | set(mine)):
        if frame in expected_differences:
            assert theirs.get(frame) != mine.get(frame), f"frame {frame} now agrees: update the list"
            continue
        a, b = theirs.get(frame), mine.get(frame)
        if a is not None and b is not None and frame in malformed:
            a, b = a[:4], b[:4]  # header and function/exception only for malformed PDUs
        if a != b:
            problems.append((frame, a, b))
    assert not problems, f"{len(problems)} frames differ (frame, tshark, cranewatch): {problems[:10]}"
