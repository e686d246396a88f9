"""Real captures' Modbus through the batch path, and decode problems that keep no batch alive.

- A connection the capture joined mid-way (no SYN: each direction's sequence numbers are
  unknown until its first segment) goes the decoders' way up to the first segment of each
  such direction only (``modbus._joined``); the batch path takes it on from there. Before, the
  whole connection went per segment for the rest of each batch (modbusBig.pcap: 0 of 5,549
  ADUs on the batch path). What comes out equals the decoders' way (``fast_path=False``) and
  the ADU counts equal tshark's.
- A decode problem kept as a record (Modbus ``_decode_adu``, ``ReportsProblems.report`` and
  the errors it was raised from) holds no traceback: a traceback's frames reach the
  pipeline's, which hold the whole batch and its read block, in a reference cycle that only a
  full collection frees (shape g at 1 M packets: peak RSS 178-193 MB, 121-126 MB without).
"""

from __future__ import annotations

import gc
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cranewatch.detect import adapt
from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import FlowContext
from cranewatch.protocols.dns import DnsDecoder
from cranewatch.protocols.modbus import ModbusDecoder
from cranewatch.sources.pcap import PacketBatch

TSHARK = shutil.which("tshark")
MODBUS = "pcaps/ICS-Security-Tools/pcaps"


class _Facts:
    """Every fact the events give (what any detector could read)."""

    def __init__(self) -> None:
        self.facts: list[str] = []

    def on_event(self, event: Any) -> None:
        self.facts.extend(repr(fact) for fact in adapt.facts_from_event(event))

    def on_series(self, series: Any) -> None:
        return None

    def on_flow_end(self, flow: Any) -> None:
        return None

    def finish(self) -> list[Any]:
        return []


def _run(path: Path, fast: bool) -> tuple[Any, _Facts]:
    sink = _Facts()
    return Analysis([sink], fast_path=fast).run([path]), sink


def _modbus_adus(path: Path) -> int:
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-r", str(path), "-Y", "mbtcp", "-T", "fields", "-e", "mbtcp.trans_id"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return sum(len(line.split(",")) for line in out.splitlines() if line)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize(("name", "per_packet"), [
    # a master writing coils and reading (joined mid-way): its first response and request
    ("bro/modbus/modbusBig.pcap", 2),
    # 26 PLCs polled by one master, every connection joined mid-way, several ADUs a segment
    ("ModbusTCP/ModbusTCP.pcap", None),
])
def test_connections_joined_mid_way_go_back_to_the_batch_path(shared_data: Path, name: str,
                                                              per_packet: int | None) -> None:
    path = shared_data / MODBUS / name
    fast, fast_facts = _run(path, True)
    slow, slow_facts = _run(path, False)
    taken = fast.events.get("modbus_fast_pdus", 0)
    decoded = slow.events["modbus_request"] + slow.events["modbus_response"]
    # tshark's count; modbusBig's frame 3150 (which tshark calls a spurious retransmission and
    # does not dissect; it carries new bytes for the stream) is decoded by both of our paths.
    assert decoded - _modbus_adus(path) in (0, 1)
    if per_packet is not None:
        assert taken == decoded - per_packet
    else:
        assert taken >= 0.95 * decoded
    # Reads the batch path takes are folded into register series, counted as its PDUs only.
    assert "modbus_fast_pdus" not in slow.events
    assert ({k: v for k, v in fast.events.items() if not k.startswith("modbus_") and not k.endswith("_pdus")}
            == {k: v for k, v in slow.events.items() if not k.startswith("modbus_") and not k.endswith("_pdus")})
    assert fast_facts.facts == slow_facts.facts
    assert fast.modbus_masters == slow.modbus_masters
    assert fast.modbus_slaves == slow.modbus_slaves
    assert [(w.message, w.frame) for w in fast.warnings] == [(w.message, w.frame) for w in slow.warnings]


def _garbage_after(call: Any) -> list[Any]:
    """What ``call`` left in reference cycles (found by a collection, kept for a look)."""
    gc.collect()
    gc.disable()
    try:
        call()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


CONTEXT = FlowContext("10.0.0.1", 40000, "10.0.0.2", 502, "tcp")


def test_a_malformed_modbus_pdu_leaves_no_cycle() -> None:
    decoder = ModbusDecoder(CONTEXT)
    # FC 3 request whose quantity field is cut short: malformed, reported, decoded on
    adu = bytes.fromhex("0001" "0000" "0004" "01" "03" "0000")
    events: list[Any] = []
    garbage = _garbage_after(lambda: events.extend(decoder.feed(True, adu, 1.0, 7)))
    assert len(events) == 1 and "malformed" in events[0].detail
    assert len(decoder.problems) == 1
    assert [o for o in garbage if type(o).__name__ in ("traceback", "frame")] == []


def test_a_reported_problem_keeps_no_traceback_of_the_error_it_came_from() -> None:
    decoder = DnsDecoder(FlowContext("10.0.0.1", 40000, "10.0.0.2", 53, "udp"))
    # a header and a question whose name runs past the end: raised again "from None"
    message = bytes.fromhex("1234" "0100" "0001" "0000" "0000" "0000" "3f" "6162")
    garbage = _garbage_after(lambda: decoder.feed(True, message, 1.0, 3))
    assert len(decoder.problems) == 1
    problem = decoder.problems[0]
    assert problem.__traceback__ is None
    assert problem.__context__ is None or problem.__context__.__traceback__ is None
    assert [o for o in garbage if type(o).__name__ in ("traceback", "frame")] == []


def test_no_batch_is_left_in_a_cycle_by_malformed_modbus_and_dnp3(shared_data: Path) -> None:
    """fuzz-72 (malformed Modbus) and a DNP3 capture with broken frames: after the run, a
    collection finds no batch in a reference cycle (before: the batches of every call that
    met a problem)."""
    captures = [shared_data / "pcaps/zeek/testing/btest/Traces/modbus/fuzz-72.pcap",
                shared_data / "pcaps/ICS-Security-Tools/pcaps/openics/DNP3-RequestLink.pcap"]
    results: list[Any] = []
    garbage = _garbage_after(lambda: results.extend(
        Analysis([]).run([c], batch_packets=16) for c in captures))
    assert results[0].events.get("modbus_request", 0) > 0
    assert any(w.kind == "decode" for w in results[0].warnings)  # it did meet problems
    assert [o for o in garbage if isinstance(o, PacketBatch)] == []
