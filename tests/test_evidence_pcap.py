"""A finding's evidence frames cut into a small capture: checked frame by frame against tshark
on the original (bytes, timestamps, lengths, link type), from pcap, pcapng and gz/xz/zst
captures; refused when the recorded capture is gone or changed."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from cranewatch.cli import main
from cranewatch.errors import InputError
from cranewatch.evidence_pcap import (
    CutPacket,
    EvidenceFileChanged,
    EvidenceFileMissing,
    cut_frames,
    evidence_pcap,
    finding_frames,
    write_capture,
)
from cranewatch.model import Evidence, Finding, Severity, finding_id
from cranewatch.sources.pcapwrite import LINKTYPE_ETHERNET, LINKTYPE_RAW
from cranewatch.store import Crane, open_store

REPO = Path(__file__).resolve().parents[1]
SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (apt-get install tshark)")


def tshark_frame(path: Path, number: int) -> tuple[str, str]:
    """(hex dump, "epoch caplen len encap") of one frame, as tshark reads it."""
    dump = subprocess.run([TSHARK or "tshark", "-r", str(path), "-Y", f"frame.number=={number}", "-x"],
                          capture_output=True, text=True, check=True).stdout
    fields = subprocess.run([TSHARK or "tshark", "-r", str(path), "-Y", f"frame.number=={number}", "-T", "fields",
                             "-e", "frame.time_epoch", "-e", "frame.cap_len", "-e", "frame.len",
                             "-e", "frame.encap_type"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert dump.strip() and fields, f"tshark found no frame {number} in {path}"
    return dump, fields


def hex_bytes(dump: str) -> bytes:
    """The frame bytes of a tshark -x dump (offset, hex columns, ASCII column)."""
    out = bytearray()
    for line in dump.splitlines():
        parts = line.split("  ")
        if len(parts) >= 2 and len(parts[0]) == 4:
            out += bytes.fromhex(parts[1].replace(" ", ""))
    return bytes(out)


def make_finding(source: str, frames: tuple[int, ...], *, n: int = 1) -> Finding:
    return Finding(id=finding_id("remote-access", "STS-07", n), rule="remote-access", category="remote-access",
                   severity=Severity.HIGH, title="SSH into the crane zone", first_seen=1.0, last_seen=2.0,
                   crane="STS-07", src="203.0.113.10", dst="10.20.7.30:22",
                   evidence=(Evidence(source=source, frames=frames),), remedy="end it")


# -- the cut itself ----------------------------------------------------------------------------


def test_finding_frames_gathers_each_captures_frames_sorted_and_unique() -> None:
    f = Finding(id="cw-x", rule="r", category="c2", severity=Severity.LOW, title="t", first_seen=None,
                last_seen=None, evidence=(Evidence(source="a.pcap", frames=(9, 3)), Evidence(source="b.pcap", frames=(1,)),
                                          Evidence(source="a.pcap", frames=(3, 4)), Evidence(path="/etc/x", line=3)))
    assert finding_frames(f) == {"a.pcap": (3, 4, 9), "b.pcap": (1,)}


@needs_tshark
def test_the_cut_holds_exactly_those_frames_as_tshark_reads_them(tmp_path: Path) -> None:
    wanted = (409, 411, 413, 415)
    out = tmp_path / "cut.pcap"
    with out.open("wb") as handle:
        assert write_capture(cut_frames(SSH, wanted), handle) == "pcap"
    count = subprocess.run([TSHARK or "tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert count == ["1", "2", "3", "4"]
    for k, n in enumerate(wanted, start=1):
        cut_dump, cut_fields = tshark_frame(out, k)
        orig_dump, orig_fields = tshark_frame(SSH, n)
        assert hex_bytes(cut_dump) == hex_bytes(orig_dump) and len(hex_bytes(cut_dump)) > 60
        assert cut_fields == orig_fields  # epoch time to the digit, lengths, link type


@needs_tshark
@pytest.mark.parametrize("packing", ["pcapng", "gz", "xz", "zst", "pcapng.zst"])
def test_pcapng_and_compressed_captures_give_the_same_frames(tmp_path: Path, packing: str) -> None:
    plain = SSH.read_bytes()
    if packing.startswith("pcapng"):
        ng = tmp_path / "ssh.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", str(SSH), str(ng)], check=True, capture_output=True)
        plain = ng.read_bytes()
    compress = {"gz": gzip.compress, "xz": lzma.compress, "zst": zstandard.ZstdCompressor().compress}
    kind = packing.split(".")[-1]
    data = compress[kind](plain) if kind in compress else plain
    packed = tmp_path / f"ssh.{packing}"
    packed.write_bytes(data)
    got = cut_frames(packed, [1, 406, 415])
    expected = cut_frames(SSH, [1, 406, 415])
    assert [(p.frame, p.ts_ns, p.linktype, p.data, p.origlen) for p in got] == \
        [(p.frame, p.ts_ns, p.linktype, p.data, p.origlen) for p in expected]
    _, fields = tshark_frame(SSH, 406)
    assert f"{expected[1].ts_ns // 10**9}.{expected[1].ts_ns % 10**9:09d}" == fields.split()[0]


def test_a_frame_past_the_end_is_named() -> None:
    with pytest.raises(InputError, match="no frame 99999") as info:
        cut_frames(SSH, [3, 99999])
    assert info.value.location is not None and info.value.location.frame == 99999


@needs_tshark
def test_frames_of_different_link_types_become_a_pcapng(tmp_path: Path) -> None:
    raw_ip = bytes.fromhex("450000140001000040fd0000c0000201c0000202")  # IPv4, protocol 253, no payload
    packets = [CutPacket("a", 1, 1_700_000_000_123_456_789, LINKTYPE_ETHERNET, b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + raw_ip, 34),
               CutPacket("b", 7, 1_700_000_001_000_000_001, LINKTYPE_RAW, raw_ip, 20)]
    out = tmp_path / "mixed.pcapng"
    with out.open("wb") as handle:
        assert write_capture(packets, handle) == "pcapng"
    lines = subprocess.run([TSHARK or "tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch",
                            "-e", "frame.encap_type", "-e", "ip.dst"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert [line.split("\t") for line in lines] == [["1700000000.123456789", "1", "192.0.2.2"],
                                                    ["1700000001.000000001", "7", "192.0.2.2"]]


# -- from the store: recorded location and sha256 -----------------------------------------------


def record(db: str, capture: Path, frames: tuple[int, ...]) -> Finding:
    finding = make_finding(str(capture), frames)
    with open_store(db) as store:
        if store.crane("STS-07") is None:
            store.add_crane(Crane("STS-07"), who="t", why="t")
        store.record_run("STS-07", "analyze", [capture], [finding])
    return finding


def test_the_store_keeps_each_input_where_it_was_and_its_sha256(store_at: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "day").mkdir()
    shutil.copy(SSH, tmp_path / "day" / "q.pcap")
    monkeypatch.chdir(tmp_path / "day")
    finding = record(store_at, Path("q.pcap"), (409,))  # a relative path, as on a command line
    with open_store(store_at, readonly=True) as store:
        found = store.evidence_inputs("STS-07", finding.id)
    assert list(found) == ["q.pcap"]
    assert found["q.pcap"].location == str(tmp_path / "day" / "q.pcap")
    assert found["q.pcap"].size == len(SSH.read_bytes())
    assert found["q.pcap"].sha256 == hashlib.sha256(SSH.read_bytes()).hexdigest()
    monkeypatch.chdir(REPO)  # elsewhere: the cut still finds it
    buffer = io.BytesIO()
    with open_store(store_at, readonly=True) as store:
        cut = evidence_pcap(store, finding.id[:12], buffer)
    assert (cut.format, cut.packets, cut.frames) == ("pcap", 1, {"q.pcap": (409,)})
    assert buffer.getvalue()[24 + 16:] == cut_frames(SSH, [409])[0].data


def test_a_changed_or_missing_capture_is_refused(store_at: str, tmp_path: Path) -> None:
    capture = tmp_path / "q.pcap"
    shutil.copy(SSH, capture)
    finding = record(store_at, capture, (409,))
    with capture.open("ab") as handle:
        handle.write(b"\0")
    with open_store(store_at, readonly=True) as store, pytest.raises(EvidenceFileChanged, match="sha256"):
        evidence_pcap(store, finding.id, io.BytesIO())
    capture.unlink()
    with open_store(store_at, readonly=True) as store, pytest.raises(EvidenceFileMissing, match="no longer there"):
        evidence_pcap(store, finding.id, io.BytesIO())


@needs_tshark
def test_the_command_cuts_an_analysed_findings_frames_and_refuses_with_exit_3(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cw.db")
    capture = tmp_path / "ssh.pcap"
    shutil.copy(SSH, capture)
    assert main(["fleet", "add", "STS-07", "--db", db]) == 0
    assert main(["analyze", str(capture), "--profile", str(PROFILE), "--db", db, "--crane", "STS-07",
                 "--format", "jsonl", "--out", str(tmp_path / "r.jsonl")]) == 0
    with open_store(db, readonly=True) as store:
        ssh = next(f for f in store.findings("STS-07") if f.rule == "remote-access")
    frames = finding_frames(ssh)[str(capture)]
    out = tmp_path / "cut.pcap"
    assert main(["evidence", "pcap", ssh.id, "--out", str(out), "--db", db]) == 0
    listed = subprocess.run([TSHARK or "tshark", "-r", str(out), "-T", "fields", "-e", "frame.time_epoch"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert len(listed) == len(frames) >= 2
    for k, n in enumerate(frames, start=1):
        assert tshark_frame(out, k)[1] == tshark_frame(SSH, n)[1]
        assert hex_bytes(tshark_frame(out, k)[0]) == hex_bytes(tshark_frame(SSH, n)[0])
    capsys.readouterr()
    capture.write_bytes(SSH.read_bytes()[:-10])  # truncated after the analysis
    assert main(["evidence", "pcap", ssh.id, "--out", str(tmp_path / "again.pcap"), "--db", db]) == 3
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "again.pcap").exists()  # nothing half-written
    assert main(["evidence", "pcap", "cw-nosuchfinding", "--out", str(out), "--db", db]) == 2
