"""``analyze --jobs N`` split by groups of captures: each group analysed in a worker process,
the sinks in the main process; the document is the serial one byte for byte, and groups that
turn out to meet are analysed again serially (said on stderr)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cranewatch import parallel, pipeline
from cranewatch.cli import main

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"
LAB_CAPTURES = sorted(LAB.glob("*/crane-lan.pcap"))
PROFILE = REPO / "profiles" / "sts-07.toml"
SHARED = (
    "ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap",
    "ICS-Security-Tools/pcaps/s7/S7Comm/wrapup.pcapng",
    "ICS-Security-Tools/pcaps/EthernetIP/EthernetIP-CIP.pcap",
    "zeek/testing/btest/Traces/modbus/modbusBig.pcap",
)
NOTE = "cranewatch: note: --jobs"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_crane_capture",
                                                  REPO / "benchmarks" / "gen_crane_capture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_crane_capture", module)  # its dataclasses look themselves up
    spec.loader.exec_module(sys.modules["gen_crane_capture"])
    module = sys.modules["gen_crane_capture"]
    return module


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six crane zones' SPAN captures (zones 1-3, two hourly files each): the zones share the
    SCADA server, which polls each zone's PLC, and the terminal's servers, not a conversation."""
    gen = _generator()
    folder = tmp_path_factory.mktemp("zones")
    paths = []
    for zone in (1, 2, 3):
        for hour in (0, 1):
            path = folder / f"zone{zone}-h{hour}.pcap"
            gen.write_capture(path, 3000, 10 * zone + hour, 1, zone, hour)
            paths.append(path)
    return paths


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(["analyze", "--format", "jsonl", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


class Spy:
    """Counts the split runs (and their groups) the command starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plans: list[list[list[int]]] = []
        real = parallel.SplitRun.__init__

        def init(split: parallel.SplitRun, paths: Any, plan: list[list[int]], *rest: Any) -> None:
            self.plans.append(plan)
            real(split, paths, plan, *rest)

        monkeypatch.setattr(parallel.SplitRun, "__init__", init)


def test_zones_are_grouped_apart_and_rotated_files_together(zones: list[Path]) -> None:
    plan = parallel.plan_groups([str(p) for p in zones], 8)
    # one group per zone: its two hourly files share the zone's conversations
    assert sorted(map(sorted, plan)) == [[0, 1], [2, 3], [4, 5]]
    two = parallel.plan_groups([str(p) for p in zones], 2)
    assert len(two) == 2 and sorted(i for g in two for i in g) == list(range(6))
    assert all(set(g) in ({0, 1}, {2, 3}, {4, 5}, {0, 1, 2, 3}, {0, 1, 4, 5}, {2, 3, 4, 5})
               for g in two)


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_zones_split_same_bytes_as_serial(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, zones: list[Path],
                                          jobs: str) -> None:
    spy = Spy(monkeypatch)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    args = ["--profile", str(PROFILE), *map(str, zones)]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    assert not spy.plans
    split = run_cli(capsys, ["--jobs", jobs, *args])
    assert len(spy.plans) == 1 and len(spy.plans[0]) == int(jobs)  # it did split
    assert NOTE not in split[2]
    # the SCADA server is a Modbus master in every zone: its tallies were merged
    assert serial[1].count('"address":"10.20.0.40"') == 1
    assert serial[1].count('"type":"flow-summary"') > 3
    assert split == serial


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_lab_shared_and_zones_together_same_bytes(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  zones: list[Path], shared_data: Path,
                                                  jobs: str) -> None:
    """Lab scenarios (findings, process checks), real captures of other protocols and link
    types, and the zones: several groups, each a different shape."""
    spy = Spy(monkeypatch)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    captures = [*LAB_CAPTURES[:6], *(shared_data / "pcaps" / name for name in SHARED), *zones]
    args = ["--profile", str(PROFILE), *map(str, captures)]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", jobs, *args])
    assert spy.plans and len(spy.plans[0]) == int(jobs)
    assert '"type":"finding"' in serial[1] or '"type": "finding"' in serial[1]
    assert split == serial


def shifted_append(first: Path, second: Path, out: Path) -> Path:
    """``first``'s packets, then ``second``'s moved to start 10 s after ``first`` ends (classic
    pcap, same link type): a capture whose later part shares ``second``'s conversations."""
    head = first.read_bytes()
    other = second.read_bytes()
    assert head[:4] == other[:4] == bytes.fromhex("d4c3b2a1")
    last, pos = 0, 24
    while pos + 16 <= len(head):
        sec, usec, caplen = struct.unpack_from("<III", head, pos)
        last = sec * 1_000_000 + usec
        pos += 16 + caplen
    records, pos, shift = [], 24, None
    while pos + 16 <= len(other):
        sec, usec, caplen = struct.unpack_from("<III", other, pos)
        at = sec * 1_000_000 + usec
        shift = shift if shift is not None else last + 10_000_000 - at
        moved = at + shift
        records.append(struct.pack("<II", moved // 1_000_000, moved % 1_000_000)
                       + other[pos + 8: pos + 16 + caplen])
        pos += 16 + caplen
    out.write_bytes(head + b"".join(records))
    return out


def test_groups_that_meet_after_the_probe_are_analysed_again_serially(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, zones: list[Path],
        tmp_path: Path) -> None:
    """Zone 3's file goes on with zone 1's conversations after its first packets (the probe
    sees only zone 3): the workers report a flow in two groups, the run is done again in one
    process, says so, and the document is the serial one."""
    spy = Spy(monkeypatch)
    mixed = shifted_append(zones[4], zones[0], tmp_path / "zone3-then-1.pcap")
    captures = [zones[0], zones[2], mixed]
    assert len(parallel.plan_groups([str(p) for p in captures], 2)) == 2  # the probe misses it
    serial = run_cli(capsys, ["--jobs", "1", *map(str, captures)])
    split = run_cli(capsys, ["--jobs", "2", *map(str, captures)])
    assert len(spy.plans) == 1  # the split was tried
    note, _, rest = split[2].partition("\n")
    assert note.startswith(f"{NOTE} 2: ") and note.endswith("; analysed again in one process")
    assert ("flow" in note or "series" in note) and rest == serial[2]
    assert split[:2] == serial[:2]


def test_captures_that_share_conversations_are_not_split(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    args = [str(p) for p in LAB_CAPTURES[:3]]  # one lab network: one group
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", "2", *args])
    assert not spy.plans
    assert split[2] == f"{NOTE} 2: the captures all share conversations; analysed in one process\n"
    assert split[:2] == serial[:2]


def test_damaged_captures_in_groups_same_warnings_in_the_same_order(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, zones: list[Path],
        tmp_path: Path) -> None:
    """Capture warnings come when the merge reads on: a file cut short warns after the
    non-capture that the merge's first reads met (each worker follows the same reads)."""
    spy = Spy(monkeypatch)
    cut = tmp_path / "cut.pcap"
    data = zones[2].read_bytes()
    cut.write_bytes(data[: len(data) // 3 + 7])
    junk = tmp_path / "notes.pcap"
    junk.write_bytes(b"this is not a capture\n" * 10)
    args = [str(zones[0]), str(cut), str(junk), str(zones[4])]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", "2", *args])
    assert spy.plans and len(spy.plans[0]) == 2
    assert serial[0] == 3 and "cut.pcap" in serial[2] and "notes.pcap" in serial[2]
    warnings = [line for line in serial[1].splitlines()
                if '"type":"warning","kind":"capture"' in line]
    assert len(warnings) == 2 and "notes.pcap" in warnings[0] and "cut.pcap" in warnings[1]
    assert split == serial


def test_exception_in_a_group_worker_ends_the_run_as_in_serial(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        zones: list[Path]) -> None:
    """A bug on one group's capture (not bad input): the worker's exception is raised in the
    main process where the serial run meets it, with the same message and exit code 70."""
    from cranewatch.sources.pcap import CaptureReader

    real = CaptureReader.batches

    def failing(self: CaptureReader, max_packets: int = 65536):  # type: ignore[no-untyped-def]
        yield from real(self, max_packets)
        if self.path.endswith("zone2-h0.pcap"):
            raise ValueError(f"reader bug in {self.path}")

    spy = Spy(monkeypatch)
    monkeypatch.setattr(CaptureReader, "batches", failing)  # the fork carries it to the workers
    args = [str(p) for p in zones]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", "2", *args])
    assert spy.plans
    assert serial[0] == 70 and "ValueError: reader bug in" in serial[2]
    assert split == serial


def test_a_worker_that_dies_is_an_environment_error(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     zones: list[Path]) -> None:
    """Killed (the kernel, for memory): exit 4, the worker and its captures named."""
    monkeypatch.setattr(pipeline.Analysis, "process", lambda self, batch: os._exit(9))
    code, out, err = run_cli(capsys, ["--jobs", "2", *map(str, zones)])
    assert code == 4 and out == ""
    assert "worker process" in err and "exit code 9" in err and "zone" in err
    assert "--jobs 1" in err and "Traceback" not in err


_SLOW_ANALYSIS = """
import sys, time
import cranewatch.pipeline as p
real = p.Analysis.process
def slow(self, batch):
    print("processing", file=sys.stderr, flush=True)
    time.sleep(60)
    real(self, batch)
p.Analysis.process = slow
from cranewatch.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_a_split_run_exits_130_and_leaves_no_worker(tmp_path: Path,
                                                                  zones: list[Path]) -> None:
    marker = tmp_path / "ctrl-c-split-marker.pcap"
    shutil.copy(zones[0], marker)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with subprocess.Popen(
            [sys.executable, "-c", _SLOW_ANALYSIS, "analyze", "--jobs", "2", str(marker),
             str(zones[2]), str(zones[4])], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True) as child:
        assert child.stderr is not None
        # a worker is at work (two may write at once: "processingprocessing")
        assert child.stderr.readline().strip().startswith("processing")
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        err = child.stderr.read()
        assert child.wait(timeout=30) == 130
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _processes_naming(marker):
        time.sleep(0.1)
    assert not _processes_naming(marker)


def _processes_naming(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_event_filter_skips_only_what_no_sink_looks_at() -> None:
    """Events no sink of the run does anything with are not shipped: the conversation book
    ignores every event, the detection sink those no detector judges; a sink it does not know
    gets every event."""
    from cranewatch.conversations import ConversationBook
    from cranewatch.detect.engine import build_sink
    from cranewatch.protocols.dns import DnsQueryRequest
    from cranewatch.protocols.modbus import ModbusRequest

    assert not parallel.event_filter([ConversationBook()])(ModbusRequest)
    detection = build_sink()
    wanted = parallel.event_filter([detection, ConversationBook()])
    kinds = {cls: wanted(cls) for cls in (ModbusRequest, DnsQueryRequest)}
    assert any(kinds.values())
    for cls, shipped in kinds.items():
        handler = detection._handler(cls, getattr(cls, "kind", ""))
        from cranewatch.detect.engine import _ignore

        assert shipped == (handler is not _ignore)
    assert parallel.event_filter([object(), ConversationBook()])(ModbusRequest)


def test_packed_events_and_flows_come_back_equal() -> None:
    """The workers' pickling: slots dataclasses by their fields, flows without decoder and
    reassembly buffers."""
    import pickle

    from cranewatch.flows import Flow, Side, Stream
    from cranewatch.protocols.modbus import ModbusRequest

    packer = parallel._Packer()
    packer.learn(ModbusRequest)
    event = ModbusRequest(ts=1.5, frame=7, src="10.0.0.1", dst="10.0.0.2", source="a.pcap",
                          transaction_id=3, unit_id=1, function=3, address=100, quantity=2)
    assert pickle.loads(packer.dumps(event)) == event
    flow = Flow(key=b"k" * 40, proto=6, client=b"a" * 16, client_port=40000, server=b"b" * 16,
                server_port=502, client_is_a=True, first_seen=1.0, last_seen=2.0, first_frame=1,
                source="a.pcap", to_server=Side(packets=3, macs={5}, stream=Stream()),
                protocol="modbus", decoder=object())
    back = pickle.loads(packer.dumps(flow))
    assert back.decoder is None and back.to_server.stream is None
    assert (back.key, back.to_server.packets, back.to_server.macs, back.protocol) == (
        flow.key, 3, {5}, "modbus")


def test_recorded_conversations_are_the_serial_ones(monkeypatch: pytest.MonkeyPatch,
                                                    zones: list[Path]) -> None:
    """With --db the run keeps who talked to whom (a sink in the main process): the same
    conversations from the split run."""
    import argparse

    from cranewatch.commands import analyze as command
    from cranewatch.judging import Judging

    spy = Spy(monkeypatch)
    args = argparse.Namespace(captures=[str(p) for p in zones], profile=None, baseline=None,
                              progress=False, jobs=1)
    serial, _, serial_book = command._analyze(args, Judging(), None, True)
    args.jobs = 2
    split, _, split_book = command._analyze(args, Judging(), None, True)
    assert spy.plans
    assert serial_book is not None and split_book is not None
    conversations = serial_book.conversations()
    assert len(conversations) > 10
    assert split_book.conversations() == conversations
    assert split == serial


def test_what_does_not_pickle_is_analysed_serially(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   zones: list[Path]) -> None:
    """A sink's input a worker cannot pickle (a protocol's event holding a handle, say): the
    run is done again in one process, said on stderr, not an internal error."""
    import pickle

    real = parallel._Packer.dumps

    def failing(self: parallel._Packer, message: Any) -> bytes:
        if message[0] == "items":
            raise pickle.PicklingError("cannot pickle '_io.BufferedReader' object")
        return real(self, message)

    monkeypatch.setattr(parallel._Packer, "dumps", failing)  # the fork carries it
    args = [str(p) for p in zones[:4]]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", "2", *args])
    note, _, rest = split[2].partition("\n")
    assert note.startswith(f"{NOTE} 2: what a worker hands over could not be pickled")
    assert "PicklingError" in note and note.endswith("analysed again in one process")
    assert (split[0], split[1], rest) == serial


def test_each_capture_is_read_by_its_own_worker_only(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     zones: list[Path], tmp_path: Path) -> None:
    """The workers tell each other their captures' batch timestamps: a capture is opened by
    the worker of its group, once, not by every worker (nor by the main process), and the
    document is still the serial one."""
    log = tmp_path / "opens.log"
    real = pipeline.open_capture

    def logged(path: Any, digest: Any = None) -> Any:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {path}\n")
        return real(path, digest=digest)

    monkeypatch.setattr(pipeline, "open_capture", logged)  # the fork carries it to the workers
    spy = Spy(monkeypatch)
    args = [str(p) for p in zones]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    log.unlink()
    split = run_cli(capsys, ["--jobs", "2", *args])
    assert spy.plans and len(spy.plans[0]) == 2
    opens = [line.split(" ", 1) for line in log.read_text(encoding="utf-8").splitlines()]
    assert sorted(path for _, path in opens) == sorted(args)  # each capture once
    readers = {pid for pid, _ in opens}
    assert len(readers) == 2 and str(os.getpid()) not in readers
    for group in spy.plans[0]:  # one reader per group, its own captures
        assert len({pid for pid, path in opens if path in {args[i] for i in group}}) == 1
    assert split == serial


def test_three_workers_many_small_batches_pcapng_and_gzip_same_bytes(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, zones: list[Path],
        shared_data: Path) -> None:
    """Batches of 64 packets: each capture's timestamps go to the two other workers in ~50
    messages, batch by batch (a pcapng with two interfaces, gzip captures among them); every
    worker's merge is the serial one, so the document is too."""
    monkeypatch.setattr(pipeline, "BATCH_PACKETS", 64)  # what the split run reads
    monkeypatch.setitem(pipeline.analyze.__kwdefaults__, "batch_packets", 64)  # the serial run
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    spy = Spy(monkeypatch)
    traces = shared_data / "pcaps"
    captures = [*zones,
                traces / "icsnpp-profinet-io-cm/testing/traces/profinet_io_cm_control.pcapng",
                traces / "zeek/testing/btest/Traces/tls/tls-fragmented-handshake.pcap.gz",
                traces / "zeek/testing/btest/Traces/http/1000-requests-one-dropped-response.pcap.gz"]
    args = [str(p) for p in captures]
    serial = run_cli(capsys, ["--jobs", "1", *args])
    split = run_cli(capsys, ["--jobs", "3", *args])
    assert spy.plans and len(spy.plans[0]) == 3
    assert NOTE not in split[2]
    assert split == serial


def test_peers_pass_every_batch_in_order_through_full_pipes() -> None:
    """Three workers' ``_Peers`` (threads here), each telling its capture's batches of 20,000
    timestamps (160 kB, more than a pipe holds) while reading the others' in the merge's
    order: each gets every batch, in order, then the end; nobody waits forever."""
    import multiprocessing
    import threading

    import numpy as np

    workers, steps, size = 3, 6, 20_000
    pipes = {(a, b): multiprocessing.Pipe(duplex=False)
             for a in range(workers) for b in range(workers) if a != b}
    got: dict[int, dict[int, list[Any]]] = {}

    def work(me: int) -> None:
        peers = parallel._Peers({other: (pipes[other, me][0], pipes[me, other][1])
                                 for other in range(workers) if other != me})
        streams = {other: peers.told(other, other, f"capture-{other}")
                   for other in range(workers) if other != me}
        mine: dict[int, list[Any]] = {other: [] for other in streams}
        for step in range(steps):
            peers.tell(me, np.arange(size, dtype=np.float64) + 1000 * me + step)
            for other, stream in streams.items():
                mine[other].append(next(stream))
        peers.tell(me, None)
        for stream in streams.values():
            assert next(stream, None) is None
        peers.close()
        got[me] = mine

    threads = [threading.Thread(target=work, args=(me,), daemon=True) for me in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    for me in range(workers):
        for other, batches in got[me].items():
            assert [b.source for b in batches] == [f"capture-{other}"] * steps
            assert [float(b.ts[0]) for b in batches] == [1000.0 * other + s for s in range(steps)]
            assert all(len(b) == size and len(b.frame) == size for b in batches)


def test_own_capture_read_one_ahead_warnings_and_errors_where_the_read_is() -> None:
    """``_telling`` tells the peers a batch's timestamps (and the end) one read early, but
    what a read says, a warning or an exception, comes when its batch is taken."""
    import numpy as np

    from cranewatch.result import InputWarning
    from cranewatch.sources.pcap import PacketBatch

    log: list[Any] = []

    class Told:
        def tell(self, index: int, ts: Any) -> None:
            log.append(("told", index, None if ts is None else float(ts[0])))

    def batch(at: float) -> PacketBatch:
        ts = np.array([at, at + 0.5])
        zeros = np.zeros(2, dtype=np.int64)
        return PacketBatch("c.pcap", b"", zeros, ts, zeros, zeros, zeros, zeros, zeros, zeros)

    def read(warn: Any, fail: bool) -> Any:
        yield batch(1.0)
        warn(InputWarning("second read", "c.pcap", 3, "capture"))
        yield batch(2.0)
        warn(InputWarning("end of file", "c.pcap", None, "capture"))
        if fail:
            raise ValueError("reader bug")

    def warn(warning: InputWarning) -> None:
        log.append(("warn", warning.message))

    stream = parallel._telling(Told(), 7, warn, lambda said: read(said, False))  # type: ignore[arg-type]
    assert log == []  # nothing read before the merge asks
    first = next(stream)
    assert float(first.ts[0]) == 1.0
    assert log == [("told", 7, 1.0), ("told", 7, 2.0)]  # the second batch told ahead...
    second = next(stream)
    assert float(second.ts[0]) == 2.0
    # ...its read's warning given when it is taken; the end told ahead, its warning held
    assert log[2:] == [("warn", "second read"), ("told", 7, None)]
    assert next(stream, None) is None
    assert log[4:] == [("warn", "end of file")]

    log.clear()
    failing = parallel._telling(Told(), 7, warn, lambda said: read(said, True))  # type: ignore[arg-type]
    next(failing)
    next(failing)  # the read after it failed: not yet said, nor told
    assert log == [("told", 7, 1.0), ("told", 7, 2.0), ("warn", "second read")]
    with pytest.raises(ValueError, match="reader bug"):
        next(failing)
    assert log[3:] == [("warn", "end of file")]


def _cyclic_capture(path: Path, sender: str, receiver: str, frames: int) -> Path:
    """A PROFINET IO device's cyclic frames (RT_CLASS_1, frame id 0xC000, 1 ms cycle: counter
    step 32) to its controller, and nothing else: a capture of its own hosts."""
    from profinet_capture import write_pcap

    head = bytes.fromhex(receiver.replace(":", "") + sender.replace(":", "") + "8892")
    return write_pcap(path, [head + bytes.fromhex("c000") + bytes(40) + (32 * n & 0xFFFF).to_bytes(2, "big")
                             + b"\x35\x00" for n in range(frames)])


def test_profinet_streams_of_several_groups_are_merged_not_analysed_again(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, zones: list[Path],
        tmp_path: Path) -> None:
    """Two cranes' drive networks captured apart, each in a group of its own with its zone:
    both groups have PROFINET cyclic streams, whose records are each capture's own, so the
    split run merges them (it used to give up and analyse everything again in one process)."""
    spy = Spy(monkeypatch)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    drives = [_cyclic_capture(tmp_path / "drive-a.pcap", "02:00:00:00:0a:01", "02:00:00:00:0a:02", 50),
              _cyclic_capture(tmp_path / "drive-b.pcap", "02:00:00:00:0b:01", "02:00:00:00:0b:02", 70)]
    captures = [str(p) for p in (zones[0], drives[0], zones[2], drives[1])]
    serial = run_cli(capsys, ["--jobs", "1", *captures])
    split = run_cli(capsys, ["--jobs", "2", *captures])
    assert len(spy.plans) == 1 and len(spy.plans[0]) == 2
    assert not any(set(g) in ({1, 3}, {0, 2}) for g in spy.plans[0])  # the two drives apart
    assert NOTE not in split[2]
    streams = [json.loads(line) for line in serial[1].splitlines() if '"profinet-stream"' in line]
    assert [(s["src"], s["frames"], s["cycle_time"]) for s in streams] == [
        ("02:00:00:00:0a:01", 50, 0.001), ("02:00:00:00:0b:01", 70, 0.001)]
    assert split == serial
