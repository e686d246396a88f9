"""SMB: identification by the NetBIOS session header and an SMB header (any port), the SMB2/3
dialect, shares and the files opened, read and written, checked against tshark's ``smb2.*``
fields on a real Samba capture, and what lateral-movement makes of it.

``data/proto/samba-loopback.pcap`` (see data/proto/README.md): smbclient 4.17 (127.0.0.1) as
guest against smbd 4.17 (127.0.0.77:445) over SMB 3.1.1: put program.bin (30,000 bytes), get
it back, a put into a missing folder (refused), mkdir cfg, put cfg/params.txt (20 bytes), ls.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.baseline import learn_baseline
from cranewatch.detect.engine import build_sink
from cranewatch.pipeline import Analysis, analyze
from cranewatch.protocols import smb
from cranewatch.protocols.identify import identify
from cranewatch.protocols.registry import load_all
from cranewatch.protocols.smb import SmbDecoder, SmbFileAccess, SmbNegotiate, SmbTreeConnect, is_smb
from modbus_capture import Conversation, read_request, read_response, write_pcap
from proto_helpers import context, problems_of

CAPTURE = Path(__file__).parent / "data" / "proto" / "samba-loopback.pcap"
CLIENT, SERVER = "127.0.0.1", "127.0.0.77"


class _Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        if event.kind.startswith("smb_"):
            self.events.append(event)

    def on_series(self, series: Any) -> None:
        pass

    def on_flow_end(self, flow: Any) -> None:
        pass

    def finish(self) -> list[Any]:
        return []


def _ours() -> list[Any]:
    collect = _Collect()
    result = Analysis([collect], fast_path=False).run([CAPTURE])
    assert not result.warnings
    assert [(p.protocol, p.flows) for p in result.protocols] == [("smb", 1)]
    return collect.events


def _tshark(tshark: str, display_filter: str, *fields: str) -> list[list[str]]:
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-Y", display_filter, "-T", "fields",
                          "-E", "separator=/t", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_dialect_shares_and_files_match_tshark(tshark: str) -> None:
    events = _ours()
    (negotiate,) = [e for e in events if isinstance(e, SmbNegotiate)]
    [[frame, dialect]] = _tshark(tshark, "smb2.cmd==0 && smb2.flags.response==1", "frame.number",
                                 "smb2.dialect")
    assert (negotiate.frame, negotiate.dialect, dialect) == (int(frame), "3.1.1", "0x0311")
    trees = [(e.frame, e.share, e.status) for e in events if isinstance(e, SmbTreeConnect)]
    asked = _tshark(tshark, "smb2.cmd==3 && smb2.flags.response==0", "smb2.tree")
    answered = _tshark(tshark, "smb2.cmd==3 && smb2.flags.response==1", "frame.number", "smb2.nt_status")
    assert trees == [(int(f), share, int(status, 16)) for [share], [f, status] in zip(asked, answered, strict=True)]
    files = [e for e in events if isinstance(e, SmbFileAccess)]
    # names: tshark's CREATE requests whose response succeeded (the share root's "" aside)
    creates = _tshark(tshark, "smb2.cmd==5", "smb2.flags.response", "smb2.filename", "smb2.nt_status")
    named = [row[1] for row, reply in zip(creates[::2], creates[1::2], strict=True)
             if reply[2] == "0x00000000" and row[1]]
    assert [f.name for f in files] == named == ["program.bin", "program.bin", "cfg", "cfg\\params.txt"]
    written = sum(int(r[0]) for r in _tshark(tshark, "smb2.cmd==9 && smb2.flags.response==0",
                                             "smb2.write_length"))
    read = sum(int(r[0]) for r in _tshark(tshark, "smb2.cmd==8 && smb2.flags.response==0",
                                          "smb2.read_length"))
    assert sum(f.bytes_written for f in files) == written == 30_020
    assert sum(f.bytes_read for f in files) == read == 30_000
    assert [(f.bytes_written, f.bytes_read, f.created) for f in files] == [
        (30_000, 0, True), (0, 30_000, False), (0, 0, True), (20, 0, True)]
    closes = [int(r[0]) for r in _tshark(tshark, "smb2.cmd==6 && smb2.flags.response==1", "frame.number")]
    assert {f.frame for f in files} <= set(closes)


def test_a_samba_copy_is_one_lateral_finding_with_its_files(tmp_path: Path, tshark: str) -> None:
    c = Conversation(CLIENT, SERVER, client_port=41000, server_port=502,
                     client_mac="02:00:00:00:00:01", server_mac="02:00:00:00:00:77")
    normal = write_pcap(tmp_path / "normal.pcap", [*c.handshake(), c.send(True, read_request(1, 3, 0, 2)),
                                                  c.send(False, read_response(1, 3, [1, 2])), *c.close()])
    result = analyze([CAPTURE], sinks=[build_sink(None, learn_baseline([normal]))])
    (finding,) = [f for f in result.findings if f.category == "lateral-movement"]
    assert (finding.src, finding.dst, finding.severity.name) == (CLIENT, f"{SERVER}:445", "HIGH")
    values = finding.evidence[0].values
    assert values["protocol"] == "smb" and values["transfer"] == "smb"
    share = "\\\\127.0.0.77\\share\\"
    assert values["files"] == [{"operation": "upload", "name": share + "program.bin", "reply": 0},
                               {"operation": "download", "name": share + "program.bin", "reply": 0},
                               {"operation": "upload", "name": share + "cfg\\params.txt", "reply": 0}]
    wire = sum(int(r[0]) for r in _tshark(tshark, f"ip.src=={CLIENT}", "frame.len"))
    assert values["bytes_to_server"] == wire


def test_probe_and_port_independence() -> None:
    load_all()
    negotiate = bytes.fromhex("000000a4") + b"\xfeSMB" + bytes(60)
    assert is_smb(negotiate, b"") and is_smb(b"", b"\x00\x00\x00\x55\xffSMBr")
    assert is_smb(b"\x00\x00\x00\x40\xfdSMB" + bytes(8), b"")
    assert not is_smb(b"\x00\x00\x00\x10GET / HTTP/1.1", b"")
    assert not is_smb(b"\x81\x00\x00\x44\xfeSMB", b"")  # a session request, not a message
    assert identify(negotiate, b"") == "smb"


def test_hostile_framing_is_a_problem_not_an_exception() -> None:
    decoder = SmbDecoder(context(445))
    (problem,) = problems_of(decoder, True, b"\x42\x00\x00\x10" + bytes(16))
    assert "type 0x42" in problem.message
    assert problems_of(decoder, True, b"\x00\x00\x00\x08\xfeSMB\x00\x00\x00\x00") == []  # lost: quiet
    decoder = SmbDecoder(context(445))
    assert problems_of(decoder, False, b"\x00\x00\x00\x48\xfeSMB" + bytes(4)) == []  # waits for more
    assert decoder.feed(False, b"\x00" * 64, 2.0, 2) == []  # a body too short for its command
    # a huge WRITE is skipped, never buffered
    decoder = SmbDecoder(context(445))
    header = bytearray(64)
    header[:4] = b"\xfeSMB"
    header[4] = 64
    header[12] = smb.WRITE
    decoder.feed(True, b"\x00\xff\xff\xff" + bytes(header) + bytes(48), 1.0, 1)
    for frame in range(2, 200):
        decoder.feed(True, bytes(65_000), float(frame), frame)
        assert len(decoder._buffers[1]) <= smb.HEAD_BYTES + 4


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=400)), max_size=20))
def test_any_bytes_never_raise(pieces: list[tuple[bool, bytes]]) -> None:
    decoder = SmbDecoder(context(445))
    for frame, (from_client, data) in enumerate(pieces, start=1):
        decoder.feed(from_client, b"\x00\x00\x01\x00\xfeSMB" + data if frame == 1 else data,
                     float(frame), frame)
        assert len(decoder._pending) <= smb.MAX_PENDING and len(decoder._files) <= smb.MAX_OPEN


def _netbios(name: str, suffix: int = 0x20) -> bytes:
    """RFC 1002 first-level encoding of a 15-character name and its suffix byte."""
    raw = name.upper().ljust(15).encode() + bytes([suffix])
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 0xF))) + b"\x00"


SESSION_REQUEST = b"\x81\x00\x00\x44" + _netbios("CRANE-HMI") + _netbios("ENGINEERING", 0x00)


def test_a_netbios_session_request_is_smb_evidence() -> None:
    load_all()
    assert len(SESSION_REQUEST) == 72 and SESSION_REQUEST[5:7] == b"ED"  # 'C' = 0x43 -> E, D
    assert is_smb(SESSION_REQUEST, b"") and is_smb(b"", b"\x82\x00\x00\x00")
    assert identify(SESSION_REQUEST, b"") == "smb"
    assert not is_smb(SESSION_REQUEST[:40], b"")  # cut short
    assert not is_smb(SESSION_REQUEST[:5] + b"a" + SESSION_REQUEST[6:], b"")  # 'a' is no half-byte
    assert not is_smb(b"\x81\x00\x00\x45" + SESSION_REQUEST[4:] + b"\x00", b"")  # length not 68
    assert not is_smb(b"", b"\x82\x00\x00\x00GET / HTTP/1.1")


def _nbss_flow(tmp_path: Path, *payloads: tuple[bool, bytes]) -> tuple[Any, list[Any]]:
    c = Conversation(CLIENT, SERVER, client_port=41000, server_port=139)
    frames = [*c.handshake(), *(c.send(side, data) for side, data in payloads), *c.close()]
    collect = _Collect()
    result = Analysis([collect], fast_path=False).run([write_pcap(tmp_path / "nbss.pcap", frames)])
    return result, collect.events


def test_smb_on_139_is_named_from_its_session_request(tmp_path: Path) -> None:
    # an unanswered session request (the server refused by closing): named smb, not tcp/139
    refused, _ = _nbss_flow(tmp_path, (True, SESSION_REQUEST))
    assert [(p.protocol, p.flows) for p in refused.protocols] == [("smb", 1)]
    # request, positive response, then SMB2 NEGOTIATE: the decoder reads the negotiate
    response = bytearray(b"\xfeSMB" + bytes(60) + bytes(65))
    struct.pack_into("<HHI", response, 4, 64, 0, 0)
    struct.pack_into("<HH", response, 12, smb.NEGOTIATE, 1)
    struct.pack_into("<I", response, 16, 1)  # server to client
    struct.pack_into("<HHH", response, 64, 65, 1, 0x0311)
    message = b"\x00" + len(response).to_bytes(3, "big") + bytes(response)
    session, events = _nbss_flow(tmp_path, (True, SESSION_REQUEST), (False, b"\x82\x00\x00\x00"),
                                 (False, message))
    assert [(p.protocol, p.flows) for p in session.protocols] == [("smb", 1)]
    assert not session.warnings
    assert [e.dialect for e in events] == ["3.1.1"]
