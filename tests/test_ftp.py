"""FTP: the control channel decoder, its data channels, the Zeek ftp.log mapping, and what the
detectors make of a real vsftpd capture.

``data/proto/vsftpd-loopback.pcap`` (see data/proto/README.md): curl as client 127.0.0.66,
vsftpd 3.0.3 as server 127.0.0.77 on port 21 and on port 2121; an EPSV upload of program.bin
(20,000 bytes), a PASV download of it, a PORT upload of params.txt, an EPRT listing, an EPSV
listing on port 2121 (found by content, not port), and a login as ``plc2`` the anonymous-only
server refuses (530). Checked against tshark: commands, arguments and reply codes frame by
frame, and which control frame set up each data connection (``ftp-data.setup-frame``).
"""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.baseline import learn_baseline
from cranewatch.cli import main as cli_main
from cranewatch.detect.engine import build_sink
from cranewatch.detect.facts import ExpectedConnection, FileTransfer
from cranewatch.pipeline import Analysis, analyze
from cranewatch.protocols import ftp
from cranewatch.protocols.ftp import (
    MAX_LINE,
    FtpCommand,
    FtpDataChannel,
    FtpDecoder,
    FtpReply,
    is_ftp,
    parse_eprt,
    parse_epsv,
    parse_pasv,
    parse_port,
)
from cranewatch.protocols.identify import identify
from cranewatch.protocols.registry import load_all, profile_protocols
from modbus_capture import Conversation, read_request, read_response, write_pcap
from proto_helpers import CLIENT, SERVER, context, feed_all, problems_of

CAPTURE = Path(__file__).parent / "data" / "proto" / "vsftpd-loopback.pcap"
FTP_CLIENT, FTP_SERVER = "127.0.0.66", "127.0.0.77"


# ------------------------------------------------------------------------------ parsers


def test_pasv_reply_address_and_port() -> None:
    assert parse_pasv("Entering Passive Mode (127,0,0,77,156,208).") == ("127.0.0.77", 40144)
    assert parse_pasv("=10,20,7,40,156,208") == ("10.20.7.40", 40144)  # no brackets (RFC 1123)
    assert parse_pasv("Entering Passive Mode (300,0,0,1,1,1)") is None  # an octet above 255
    assert parse_pasv("Entering Passive Mode (1,2,3,4,256,1)") is None
    assert parse_pasv("Entering Passive Mode (1,2,3,4,5)") is None
    assert parse_pasv("Entering Passive Mode (a,b,c,d,e,f)") is None
    assert parse_pasv("") is None


def test_port_argument() -> None:
    assert parse_port("127,0,0,66,231,219") == ("127.0.0.66", 59355)
    assert parse_port(" 10,20,7,30,0,21 ") == ("10.20.7.30", 21)
    for bad in ("1,2,3,4,5,6,7", "1,2,3,4,5", "1,2,3,4,256,0", "1,2,3,4,-1,0", "1,2,3,4,0x1,0",
                "1,2,3,4,١,0", "0001,2,3,4,5,6", "", "1,,3,4,5,6"):
        assert parse_port(bad) is None, bad


def test_epsv_reply_port() -> None:
    assert parse_epsv("Entering Extended Passive Mode (|||40132|)") == 40132
    assert parse_epsv("Entering Extended Passive Mode (!!!1234!)") == 1234  # any delimiter
    for bad in ("(|||70000|)", "(|||0|)", "(||1234|)", "(|||1234!)", "(|||123456|)", "no port"):
        assert parse_epsv(bad) is None, bad


def test_eprt_argument() -> None:
    assert parse_eprt("|1|127.0.0.66|46747|") == ("127.0.0.66", 46747)
    assert parse_eprt("|2|::1|2121|") == ("::1", 2121)
    for bad in ("|1|::1|21|", "|2|1.2.3.4|21|", "|3|1.2.3.4|21|", "|1|1.2.3.4|99999|",
                "|1|1.2.3.4|21", "|1|host.example|21|", "|1|1.2.3.4|0|", "||||", ""):
        assert parse_eprt(bad) is None, bad


# ------------------------------------------------------------------------------ decoder


def test_a_session_gives_commands_replies_and_its_data_channel() -> None:
    decoder = FtpDecoder(context(21))
    events = feed_all(decoder, (False, b"220 (vsFTPd 3.0.3)\r\n"), (True, b"USER anonymous\r\n"),
                      (False, b"331 Please specify the password.\r\n"), (True, b"PASS s3cret\r\n"),
                      (False, b"230 Login successful.\r\n"), (True, b"PASV\r\n"),
                      (False, b"227 Entering Passive Mode (10,7,0,20,156,208).\r\n"),
                      (True, b"RETR plc.bin\r\n"), (False, b"150 Opening BINARY mode.\r\n"),
                      (False, b"226 Transfer complete.\r\n"))
    assert [type(e).__name__ for e in events] == [
        "FtpReply", "FtpCommand", "FtpReply", "FtpCommand", "FtpReply", "FtpCommand", "FtpReply",
        "FtpDataChannel", "FtpCommand", "FtpReply", "FtpReply"]
    password = events[3]
    assert isinstance(password, FtpCommand) and password.command == "PASS"
    assert password.arg == "" and password.password_in_clear
    assert "s3cret" not in repr(events)
    channel = events[7]
    assert isinstance(channel, FtpDataChannel)
    assert (channel.orig_h, channel.resp_h, channel.resp_p, channel.passive) == (CLIENT, SERVER, 40144, True)
    assert (channel.client, channel.server, channel.server_port) == (CLIENT, SERVER, 21)
    assert channel.frame == 7 and channel.expires == 7.0 + ftp.DATA_CHANNEL_SECONDS
    done = events[-1]
    assert isinstance(done, FtpReply) and (done.code, done.command, done.arg) == (226, "RETR", "plc.bin")
    assert done.user == "anonymous" and done.password_in_clear
    facts = ftp.file_transfer(done)
    assert [(f.operation, f.name, f.reply, f.src, f.dst) for f in facts] == [
        ("download", "plc.bin", 226, CLIENT, SERVER)]
    assert ftp.file_transfer(events[-2]) == []  # 150: not the outcome yet


def test_multi_line_replies_and_pipelined_commands_pair_up() -> None:
    decoder = FtpDecoder(context(21))
    events = feed_all(decoder, (True, b"FEAT\r\nSTOR a.bin\r\n"),
                      (False, b"211-Features:\r\n EPSV\r\n2021 is no reply\r\n211 End\r\n150 Ok\r\n"),
                      (False, b"226 Tr"), (False, b"ansfer complete.\r\n"))
    replies = [(e.code, e.command) for e in events if isinstance(e, FtpReply)]
    assert replies == [(211, "FEAT"), (150, "STOR"), (226, "STOR")]


def test_port_and_eprt_expect_the_server_to_connect_back() -> None:
    decoder = FtpDecoder(context(21))
    events = feed_all(decoder, (True, b"PORT 10,7,0,10,4,1\r\n"), (True, b"EPRT |2|fe80::1|2000|\r\n"))
    channels = [e for e in events if isinstance(e, FtpDataChannel)]
    assert [(c.orig_h, c.resp_h, c.resp_p, c.passive) for c in channels] == [
        (SERVER, CLIENT, 1025, False), (SERVER, "fe80::1", 2000, False)]
    (third,) = [f for c in channels for f in ftp.expected_connection(c) if f.third_party]
    assert third.third_party == "fe80::1" and third.mode == "active"


def test_hostile_lines_are_problems_and_decoding_goes_on() -> None:
    decoder = FtpDecoder(context(21))
    long_line = b"STOR " + b"A" * (MAX_LINE + 10) + b"\r\n"
    assert "exceeds" in problems_of(decoder, True, long_line)[0].message
    # a line that never ends: one problem, memory bounded, the next line after its end decodes
    assert "without an end" in problems_of(decoder, True, b"X" * (MAX_LINE + 1))[0].message
    assert problems_of(decoder, True, b"Y" * 50_000) == []
    assert len(decoder._buffers[True]) <= MAX_LINE
    events = feed_all(decoder, (True, b"tail\r\nRETR ok.bin\r\n"))
    assert [(e.command, e.arg) for e in events if isinstance(e, FtpCommand)] == [("RETR", "ok.bin")]
    # bad numbers: a problem, no data channel
    for reply in (b"227 Entering Passive Mode (999,0,0,1,1,1)\r\n", b"229 (|||99999|)\r\n",
                  b"227 Entering Passive Mode (10,7,0,20,0,0)\r\n"):
        decoder = FtpDecoder(context(21))
        problems = problems_of(decoder, False, reply, frame=9)
        assert len(problems) == 1 and problems[0].location.frame == 9, reply
    decoder = FtpDecoder(context(21))
    events = decoder.feed(True, b"PORT 1,2,3\r\n", 1.0, 3)
    assert [type(e).__name__ for e in events] == ["FtpCommand"] and decoder.problems
    assert problems_of(FtpDecoder(context(21)), True, b"\x00\x01\x02 binary\r\n")


def test_auth_tls_ends_decoding_and_a_refused_one_leaves_the_password_in_clear() -> None:
    decoder = FtpDecoder(context(21))
    events = feed_all(decoder, (True, b"AUTH TLS\r\n"), (False, b"234 Proceed with negotiation.\r\n"))
    assert decoder.finished and [e.code for e in events if isinstance(e, FtpReply)] == [234]
    refused = FtpDecoder(context(21))
    events = feed_all(refused, (True, b"AUTH TLS\r\n"), (False, b"530 Please login with USER and PASS.\r\n"),
                      (True, b"PASS x\r\n"))
    assert not refused.finished
    assert [e.command for e in events if isinstance(e, FtpCommand) and e.password_in_clear] == ["PASS"]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=30))
def test_any_bytes_never_raise_and_stay_bounded(pieces: list[tuple[bool, bytes]]) -> None:
    decoder = FtpDecoder(context(21))
    for frame, (from_client, data) in enumerate(pieces, start=1):
        decoder.feed(from_client, data, float(frame), frame)
        assert all(len(b) <= MAX_LINE for b in decoder._buffers)
        assert len(decoder._pending) <= ftp.MAX_PENDING


def test_probe_names_ftp_on_any_port_but_not_smtp_or_pop3() -> None:
    load_all()
    assert is_ftp(b"", b"220 (vsFTPd 3.0.3)\r\n")
    assert is_ftp(b"EPSV\r\n", b"") and is_ftp(b"AUTH TLS\r\n", b"")
    assert not is_ftp(b"", b"220 mail.example ESMTP Postfix\r\n")
    assert not is_ftp(b"USER bob\r\n", b"")  # POP3 and IRC say USER too
    assert not is_ftp(b"", b"+OK POP3 ready\r\n")
    assert not is_ftp(b"", b"250-mail.example Hello\r\n")  # SMTP's EHLO answer
    assert not is_ftp(b"", b"200 news.example NNTP ready\r\n")
    assert is_ftp(b"", b"331 Please specify the password.\r\n")  # a capture begun mid-session
    assert identify(b"", b"220 ProFTPD Server ready.\r\n") == "ftp"
    assert "ftp" in profile_protocols()


# --------------------------------------------------------------- the real capture


class _Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        if event.kind.startswith("ftp_"):
            self.events.append(event)

    def on_series(self, series: Any) -> None:
        pass

    def on_flow_end(self, flow: Any) -> None:
        pass

    def finish(self) -> list[Any]:
        return []


def _ours() -> list[Any]:
    collect = _Collect()
    Analysis([collect], fast_path=False).run([CAPTURE])
    return collect.events


def test_commands_and_replies_match_tshark_frame_by_frame(tshark: str) -> None:
    """tshark decodes port 2121 only when told (-d); we find it by its greeting. The one
    difference: PASS arguments, which we never keep."""
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-d", "tcp.port==2121,ftp", "-Y", "ftp",
                          "-T", "fields", "-E", "separator=/t", "-e", "frame.number",
                          "-e", "ftp.request.command", "-e", "ftp.request.arg",
                          "-e", "ftp.response.code"], capture_output=True, text=True, check=True).stdout
    theirs = []
    for line in out.splitlines():
        frame, command, arg, code = line.split("\t")
        theirs.append((int(frame), command, "" if command == "PASS" else arg, code))
    mine = [(e.frame, e.command, e.arg, "") if isinstance(e, FtpCommand) else (e.frame, "", "", str(e.code))
            for e in _ours() if isinstance(e, FtpCommand | FtpReply)]
    assert len(theirs) == 95
    assert mine == theirs


def test_each_data_connection_is_linked_to_the_frame_that_announced_it(tshark: str) -> None:
    """tshark's ``ftp-data.setup-frame`` names the control frame that set a data connection up;
    for the EPRT one it names the connection's own SYN (it found it by the server's port 20,
    not by the EPRT command: frame 122), so that one is written down here."""
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-d", "tcp.port==2121,ftp", "-Y", "ftp-data",
                          "-T", "fields", "-E", "separator=/t", "-e", "tcp.srcport", "-e", "tcp.dstport",
                          "-e", "ftp-data.setup-frame"], capture_output=True, text=True, check=True).stdout
    theirs = {}
    for line in out.splitlines():
        sport, dport, setup = line.split("\t")
        theirs[frozenset((int(sport), int(dport)))] = int(setup)
    channels = [e for e in _ours() if isinstance(e, FtpDataChannel)]
    assert [(c.command, c.resp_p) for c in channels] == [
        ("EPSV", 40132), ("PASV", 40144), ("PORT", 59355), ("EPRT", 46747), ("EPSV", 40141)]
    for channel in channels:
        linked = next(s for ports, s in theirs.items() if channel.resp_p in ports)
        expected = 127 if channel.command == "EPRT" else linked
        assert linked == expected and channel.frame == (122 if channel.command == "EPRT" else linked)


def _known_hosts(tmp_path: Path) -> Path:
    """A baseline capture where the two hosts only ever spoke Modbus (loopback frames carry no
    MAC, so these are made up: the baseline knows a host by its MAC)."""
    c = Conversation(FTP_CLIENT, FTP_SERVER, client_port=41000, server_port=502,
                     client_mac="02:00:00:00:00:66", server_mac="02:00:00:00:00:77")
    frames = [*c.handshake(), c.send(True, read_request(1, 3, 0, 2)),
              c.send(False, read_response(1, 3, [1, 2])), *c.close()]
    return write_pcap(tmp_path / "normal.pcap", frames)


def _wire_bytes(tshark: str, display_filter: str) -> int:
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-Y", display_filter, "-T", "fields",
                          "-e", "frame.len"], capture_output=True, text=True, check=True).stdout
    return sum(int(x) for x in out.split())


def test_real_ftp_sessions_are_one_lateral_finding_per_server_with_every_data_byte(
        tmp_path: Path, tshark: str) -> None:
    """The shape of tests/test_lateral_real.py's FTP transfer, without root: data connections
    fold into their session's finding by what the control channel announced (EPSV, PASV, PORT,
    EPRT), the bytes equal tshark's frame lengths from client to server, and no data port is a
    new service."""
    base = learn_baseline([_known_hosts(tmp_path)])
    result = analyze([CAPTURE], sinks=[build_sink(None, base)])
    lateral = {f.dst: f for f in result.findings if f.category == "lateral-movement"}
    assert set(lateral) == {f"{FTP_SERVER}:21", f"{FTP_SERVER}:2121"}
    main, other = lateral[f"{FTP_SERVER}:21"], lateral[f"{FTP_SERVER}:2121"]
    values = main.evidence[0].values
    assert main.severity.name == "HIGH" and values["transfer"] == "ftp" and values["protocol"] == "ftp"
    assert values["data_connections"] == 4
    on_2121 = "tcp.port==2121 || tcp.port==40141"
    assert values["bytes_to_server"] == _wire_bytes(tshark, f"ip.src=={FTP_CLIENT} && !({on_2121})")
    assert values["bytes_to_client"] == _wire_bytes(tshark, f"ip.src=={FTP_SERVER} && !({on_2121})")
    assert values["files"] == [{"operation": "upload", "name": "program.bin", "reply": 226},
                               {"operation": "download", "name": "program.bin", "reply": 226},
                               {"operation": "upload", "name": "params.txt", "reply": 226}]
    assert values["password_in_clear"] is True and values["user"] == "anonymous"
    first_syn = subprocess.run([tshark, "-r", str(CAPTURE), "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0 "
                                "&& tcp.dstport==21", "-T", "fields", "-e", "frame.time_epoch"],
                               capture_output=True, text=True, check=True).stdout.split()[0]
    assert abs(main.first_seen - float(first_syn)) < 1e-6
    assert other.evidence[0].values["protocol"] == "ftp"  # found by content on 2121
    assert other.evidence[0].values["data_connections"] == 1
    services = [f.dst for f in result.findings if f.rule == "new-asset"]
    assert sorted(services) == [f"{FTP_SERVER}:21", f"{FTP_SERVER}:2121"]
    text = json.dumps([f.to_json() for f in result.findings])
    assert "ftp@example.com" not in text  # curl's anonymous password, sent in clear


def test_the_protocol_is_named_ftp_in_the_document(tmp_path: Path) -> None:
    out = tmp_path / "doc.jsonl"
    assert cli_main(["analyze", str(CAPTURE), "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    protocols = {r["protocol"]: r for r in records if r.get("type") == "flow-summary"}
    assert protocols["ftp"]["flows"] == 6  # five sessions on 21 and one on 2121
    assert "ftp@example.com" not in out.read_text()


# --------------------------------------------------------------- Zeek's ftp.log


def test_zeek_ftp_log_maps_to_the_same_facts(tmp_path: Path) -> None:
    """An ftp.log written by the field list of Zeek's FTP::Info (docs.zeek.org): the PASV
    record's data_channel.* is the expected connection, the STOR record a file transfer, and
    a conn.log record of the data connection folds into the session."""
    logs = tmp_path / "zeek"
    logs.mkdir()
    common = {"uid": "C1", "id.orig_h": "10.20.7.11", "id.orig_p": 51000, "id.resp_h": "10.20.7.40",
              "id.resp_p": 21, "user": "anonymous", "password": "<hidden>"}
    (logs / "ftp.log").write_text("\n".join(json.dumps(r) for r in (
        {"ts": 1700000001.0, **common, "command": "EPSV", "reply_code": 229,
         "reply_msg": "Entering Extended Passive Mode (|||40134|)", "data_channel.passive": True,
         "data_channel.orig_h": "10.20.7.11", "data_channel.resp_h": "10.20.7.40",
         "data_channel.resp_p": 40134},
        {"ts": 1700000001.5, **common, "command": "STOR", "arg": "ftp://10.20.7.40/dump.bin",
         "reply_code": 226, "reply_msg": "Transfer complete."})) + "\n")
    from cranewatch.sources.zeek import read_zeek

    result = read_zeek([logs])
    facts = [f for e in result.events for f in (ftp.expected_connection(e) if isinstance(e, FtpDataChannel)
                                                  else ftp.file_transfer(e) if isinstance(e, FtpReply) else [])]
    (expected,) = [f for f in facts if isinstance(f, ExpectedConnection)]
    assert (expected.orig, expected.resp, expected.resp_port, expected.mode) == (
        "10.20.7.11", "10.20.7.40", 40134, "passive")
    assert (expected.src, expected.dst, expected.dport) == ("10.20.7.11", "10.20.7.40", 21)
    (stored,) = [f for f in facts if isinstance(f, FileTransfer)]
    assert (stored.operation, stored.name, stored.user, stored.password_in_clear) == (
        "upload", "ftp://10.20.7.40/dump.bin", "anonymous", False)
    assert Counter(type(e).__name__ for e in result.events) == {"FtpCommand": 2, "FtpReply": 2,
                                                                "FtpDataChannel": 1}


def test_random_commands_stream_keeps_pairing_bounded() -> None:
    rng = random.Random(7)
    decoder = FtpDecoder(context(21))
    for frame in range(1, 200):
        decoder.feed(True, rng.choice([b"NOOP\r\n", b"LIST\r\n", b"STOR x\r\n"]), float(frame), frame)
    assert len(decoder._pending) == ftp.MAX_PENDING


@pytest.mark.parametrize("text", [b"227 Entering Passive Mode (10,7,0,99,156,208)\r\n"])
def test_a_pasv_naming_a_third_host_is_marked(text: bytes) -> None:
    decoder = FtpDecoder(context(21))
    (_, channel) = decoder.feed(False, text, 1.0, 1)
    assert isinstance(channel, FtpDataChannel)
    (fact,) = ftp.expected_connection(channel)
    assert fact.third_party == "10.7.0.99" and fact.resp == "10.7.0.99"


def test_zeek_logs_of_an_ftp_copy_give_one_lateral_finding_with_its_data(tmp_path: Path) -> None:
    """conn.log (the control and the data connection, Zeek's services ftp and ftp-data) and
    ftp.log (EPSV with its data_channel, STOR): the data connection folds into the session as
    it does from a capture, and its port is no new service."""
    from test_detect_lateral import CMS, PLC2, baseline

    logs = tmp_path / "zeek"
    logs.mkdir()
    control = {"id.orig_h": PLC2, "id.orig_p": 51000, "id.resp_h": CMS, "id.resp_p": 21}
    (logs / "conn.log").write_text("\n".join(json.dumps(r) for r in (
        {"ts": 1700000000.5, "uid": "C1", **control, "proto": "tcp", "service": "ftp",
         "duration": 3.0, "orig_bytes": 120, "resp_bytes": 400, "conn_state": "SF",
         "history": "ShAdDaFf", "orig_pkts": 12, "resp_pkts": 10},
        {"ts": 1700000001.2, "uid": "C2", "id.orig_h": PLC2, "id.orig_p": 51001, "id.resp_h": CMS,
         "id.resp_p": 40134, "proto": "tcp", "service": "ftp-data", "duration": 1.0,
         "orig_bytes": 90000, "resp_bytes": 0, "conn_state": "SF", "history": "ShADadFf",
         "orig_pkts": 70, "resp_pkts": 35})) + "\n")
    common = {"uid": "C1", **control, "user": "anonymous", "password": "<hidden>"}
    (logs / "ftp.log").write_text("\n".join(json.dumps(r) for r in (
        {"ts": 1700000001.0, **common, "command": "EPSV", "reply_code": 229,
         "reply_msg": "Entering Extended Passive Mode (|||40134|)", "data_channel.passive": True,
         "data_channel.orig_h": PLC2, "data_channel.resp_h": CMS, "data_channel.resp_p": 40134},
        {"ts": 1700000001.1, **common, "command": "STOR", "arg": "ftp://10.20.7.40/dump.bin",
         "reply_code": 226, "reply_msg": "Transfer complete."})) + "\n")
    result = analyze([logs], sinks=[build_sink(None, baseline(tmp_path))])
    (finding,) = [f for f in result.findings if f.category == "lateral-movement"]
    assert (finding.src, finding.dst) == (PLC2, f"{CMS}:21")
    values = finding.evidence[0].values
    assert (values["bytes_to_server"], values["bytes_to_client"]) == (90_120, 400)
    assert values["data_connections"] == 1 and values["transfer"] == "ftp"
    assert values["files"] == [{"operation": "upload", "name": "ftp://10.20.7.40/dump.bin", "reply": 226}]
    assert [f.dst for f in result.findings if f.rule == "new-asset"] == [f"{CMS}:21"]


# --------------------------------------------------------- data connections named ftp-data


class _DataFlows:
    """Each finished flow named ftp-data, with the control session its stand-in names."""

    def __init__(self) -> None:
        self.sessions: list[tuple[str, int, str, int]] = []

    def on_event(self, event: Any) -> None:
        pass

    def on_series(self, series: Any) -> None:
        pass

    def on_flow(self, flow: Any) -> None:
        if flow.protocol == "ftp-data":
            self.sessions.append(flow.decoder.session)

    def finish(self) -> list[Any]:
        return []


def test_data_connections_are_named_ftp_data_as_tshark_names_them(tmp_path: Path, tshark: str) -> None:
    """tshark (told that 2121 is FTP) names five streams ftp-data; so does the document, in
    either path and however the capture is cut into batches, each with its control session."""
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-d", "tcp.port==2121,ftp", "-Y", "ftp-data",
                          "-T", "fields", "-e", "tcp.stream"], capture_output=True, text=True,
                         check=True).stdout
    assert len(set(out.split())) == 5
    doc = tmp_path / "doc.jsonl"
    assert cli_main(["analyze", str(CAPTURE), "--format", "jsonl", "--out", str(doc)]) == 0
    records = [json.loads(line) for line in doc.read_text().splitlines()]
    tallies = {r["protocol"]: r["flows"] for r in records if r.get("type") == "flow-summary"}
    assert tallies == {"ftp": 6, "ftp-data": 5}
    for fast in (True, False):
        for batch in (1, 7, 65536):
            flows = _DataFlows()
            result = Analysis([flows], fast_path=fast).run([CAPTURE], batch_packets=batch)
            assert {(p.protocol, p.flows) for p in result.protocols} == {("ftp", 6), ("ftp-data", 5)}
            sessions = sorted(flows.sessions, key=lambda s: s[3])
            # four transfers on the session(s) to 21 (one each), one on the session to 2121
            assert [s[3] for s in sessions] == [21, 21, 21, 21, 2121]
            assert all(s[0] == FTP_CLIENT and s[2] == FTP_SERVER for s in sessions)
            assert len({s[1] for s in sessions}) == 5  # curl opens a control session per transfer


def _timed_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    from cranewatch.sources.pcapwrite import PcapWriter
    with path.open("wb") as out:
        writer = PcapWriter(out, nanosecond=True)
        for ts, data in frames:
            writer.write(round(ts * 1e9), data)
    return path


def test_only_the_announced_client_within_its_time_makes_ftp_data(tmp_path: Path) -> None:
    """A PASV reply names 127.0.0.77:40000 for 127.0.0.66: its connection a second later is
    ftp-data (its bytes, which look like an HTTP request, are not decoded); another host's
    connection to that port, and the client's own after the announcement expired, are not."""
    control = Conversation(FTP_CLIENT, FTP_SERVER, client_port=41000, server_port=21)
    t0 = 1_700_000_000.0
    frames = [(t0, f) for f in control.handshake()]
    frames += [(t0 + 0.1, control.send(False, b"220 crane FTP\r\n")),
               (t0 + 0.2, control.send(True, b"PASV\r\n")),
               (t0 + 0.3, control.send(False, b"227 Entering Passive Mode (127,0,0,77,156,64).\r\n"))]
    port = 156 * 256 + 64
    data_file = b"GET /plc HTTP/1.1\r\nHost: a\r\n\r\n"  # a file's bytes, no request
    for client, start, sport in ((FTP_CLIENT, t0 + 1, 42000), ("127.0.0.99", t0 + 2, 42001),
                                 (FTP_CLIENT, t0 + 0.3 + ftp.DATA_CHANNEL_SECONDS + 1, 42002)):
        data = Conversation(client, FTP_SERVER, client_port=sport, server_port=port)
        frames += [(start, f) for f in data.handshake()]
        frames += [(start + 0.01, data.send(True, data_file)), *((start + 0.02, f) for f in data.close())]
    capture = _timed_pcap(tmp_path / "pasv.pcap", frames)
    for fast in (True, False):
        flows = _DataFlows()
        result = Analysis([flows], fast_path=fast).run([capture])
        tallies = {p.protocol: p.flows for p in result.protocols}
        assert tallies == {"ftp": 1, "ftp-data": 1, "http": 2}, tallies
        assert flows.sessions == [(FTP_CLIENT, 41000, FTP_SERVER, 21)]
        assert result.events["http_exchange_request"] == 2  # the two flows not named ftp-data


def _document(argv: list[str], doc: Path) -> list[dict[str, Any]]:
    """``analyze ... --format jsonl``'s records; the ``ftp-data`` ones checked against their schema."""
    import jsonschema

    from cranewatch.report.jsonl import schemas

    assert cli_main(["analyze", *argv, "--format", "jsonl", "--out", str(doc)]) == 0
    records = [json.loads(line) for line in doc.read_text().splitlines()]
    for record in records:
        if record["type"] == "ftp-data":
            jsonschema.validate(record, schemas()["ftp-data"])
    return records


def _tshark_rows(tshark: str, display_filter: str, *fields: str) -> list[list[str]]:
    out = subprocess.run([tshark, "-r", str(CAPTURE), "-d", "tcp.port==2121,ftp", "-Y", display_filter,
                          "-T", "fields", "-E", "separator=/t", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_each_data_connection_and_its_control_session_are_in_the_document(tmp_path: Path, tshark: str) -> None:
    """One ``ftp-data`` record per data connection tshark names, with that connection's first
    frame, ends (the SYN's sender is the client), packets and wire bytes each way, and the
    control session: the TCP ends of tshark's ``ftp-data.setup-frame``, except for the EPRT one,
    where tshark names the data connection's own SYN (127); its EPRT command is frame 122
    (``test_each_data_connection_is_linked_to_the_frame_that_announced_it``)."""
    ends = ("tcp.stream", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport")
    setups = {int(stream): int(setup) for stream, setup in
              _tshark_rows(tshark, "ftp-data", "tcp.stream", "ftp-data.setup-frame")}
    assert setups == {1: 16, 3: 51, 5: 87, 7: 127, 9: 158}
    setups[7] = 122
    expected = []
    for stream, setup in sorted(setups.items()):
        rows = _tshark_rows(tshark, f"tcp.stream == {stream}", "frame.number", *ends[1:], "frame.len")
        client = (rows[0][1], int(rows[0][2]))
        to_server = sum(int(r[5]) for r in rows if (r[1], int(r[2])) == client)
        (control,) = _tshark_rows(tshark, f"frame.number == {setup}", *ends)
        server_first = int(control[2]) in (21, 2121)  # the command or reply's direction
        session = (control[3], int(control[4]), control[1], int(control[2])) if server_first else (
            control[1], int(control[2]), control[3], int(control[4]))
        expected.append({"frame": int(rows[0][0]), "client": client[0], "client_port": client[1],
                         "server": rows[0][3], "server_port": int(rows[0][4]), "packets": len(rows),
                         "bytes_to_server": to_server,
                         "bytes_to_client": sum(int(r[5]) for r in rows) - to_server,
                         "control": dict(zip(("client", "client_port", "server", "server_port"),
                                             session, strict=True))})
    records = _document([str(CAPTURE)], tmp_path / "doc.jsonl")
    listed = [{k: r[k] for k in expected[0]} for r in records if r["type"] == "ftp-data"]
    assert listed == expected
    assert [e["control"]["server_port"] for e in expected] == [21, 21, 21, 21, 2121]


ZEEK_DOC_CONN = (  # conn.log and ftp.log records of docs.zeek.org's ftp.log chapter (Zeek's JSON)
    {"_path": "conn", "ts": "2020-08-16T06:26:01.485394Z", "uid": "CLkXf2CMo11hD8FQ5",
     "id.orig_h": "192.168.4.76", "id.orig_p": 53380, "id.resp_h": "196.216.2.24", "id.resp_p": 21,
     "proto": "tcp", "service": "ftp", "duration": 3.780829906463623, "orig_bytes": 184,
     "resp_bytes": 451, "conn_state": "SF", "local_orig": True, "local_resp": False,
     "missed_bytes": 0, "history": "ShAdDafF", "orig_pkts": 20, "orig_ip_bytes": 1232,
     "resp_pkts": 17, "resp_ip_bytes": 1343},
    {"_path": "conn", "ts": "2020-08-16T06:26:03.774520Z", "uid": "CzLMFA3Eh8KBlY4kS7",
     "id.orig_h": "192.168.4.76", "id.orig_p": 60474, "id.resp_h": "196.216.2.24",
     "id.resp_p": 31746, "proto": "tcp", "service": "ftp-data", "duration": 0.9965000152587891,
     "orig_bytes": 0, "resp_bytes": 74, "conn_state": "SF", "local_orig": True,
     "local_resp": False, "missed_bytes": 0, "history": "ShAdfFa", "orig_pkts": 4,
     "orig_ip_bytes": 216, "resp_pkts": 4, "resp_ip_bytes": 290},
)
ZEEK_DOC_FTP = (
    {"_path": "ftp", "ts": "2020-08-16T06:26:03.553287Z", "uid": "CLkXf2CMo11hD8FQ5",
     "id.orig_h": "192.168.4.76", "id.orig_p": 53380, "id.resp_h": "196.216.2.24", "id.resp_p": 21,
     "user": "anonymous", "password": "ftp@example.com", "command": "EPSV", "reply_code": 229,
     "reply_msg": "Entering Extended Passive Mode (|||31746|).", "data_channel.passive": True,
     "data_channel.orig_h": "192.168.4.76", "data_channel.resp_h": "196.216.2.24",
     "data_channel.resp_p": 31746},
    {"_path": "ftp", "ts": "2020-08-16T06:26:04.597290Z", "uid": "CLkXf2CMo11hD8FQ5",
     "id.orig_h": "192.168.4.76", "id.orig_p": 53380, "id.resp_h": "196.216.2.24", "id.resp_p": 21,
     "user": "anonymous", "password": "ftp@example.com", "command": "RETR",
     "arg": "ftp://196.216.2.24/pub/stats/afrinic/delegated-afrinic-extended-latest.md5",
     "file_size": 74, "reply_code": 226, "reply_msg": "Transfer complete.", "fuid": "FueF95uKPrUuDnMc4"},
)


@pytest.mark.parametrize("service", ["ftp-data", None])
def test_zeek_data_connection_is_named_and_has_its_control_session(tmp_path: Path, service: str | None) -> None:
    """The records of Zeek's own ftp.log chapter (docs.zeek.org, logs/ftp): the EPSV record's
    data_channel.* (192.168.4.76 will connect to 196.216.2.24:31746, passive) announces the
    conn.log connection CzLMFA3Eh8KBlY4kS7. It is listed with the control session
    192.168.4.76:53380 → 196.216.2.24:21, Zeek's counts (4 + 4 packets, 0 and 74 payload
    bytes, 0.9965 s), and named ftp-data whether Zeek's ``service`` says so or is absent
    (a log whose service column was left out: the announcement names it)."""
    logs = tmp_path / "zeek"
    logs.mkdir()
    conn = [dict(r) for r in ZEEK_DOC_CONN]
    if service is None:
        del conn[1]["service"]
    (logs / "conn.log").write_text("".join(json.dumps(r) + "\n" for r in conn))
    (logs / "ftp.log").write_text("".join(json.dumps(r) + "\n" for r in ZEEK_DOC_FTP))
    records = _document([str(logs)], tmp_path / "doc.jsonl")
    (data,) = [r for r in records if r["type"] == "ftp-data"]
    assert data == {
        "type": "ftp-data", "file": str(logs / "conn.log"), "frame": 2,
        "client": "192.168.4.76", "client_port": 60474, "server": "196.216.2.24",
        "server_port": 31746, "first_seen": "2020-08-16T06:26:03.774520Z",
        "last_seen": "2020-08-16T06:26:04.771020Z", "packets": 8, "bytes_to_server": 0,
        "bytes_to_client": 74, "control": {"client": "192.168.4.76", "client_port": 53380,
                                           "server": "196.216.2.24", "server_port": 21}}
    egress = {f["dst"]: f for f in records if f["type"] == "finding" and f["rule"] == "egress"}
    assert egress["196.216.2.24:31746"]["evidence"][0]["values"]["protocols"] == ["ftp-data"]


# Zeek's TSV layout of conn.log and ftp.log (the #fields/#types lines of Zeek's own btest
# baselines scripts.base.protocols.ftp.ftp-ipv4, conn.log and ftp.log); the records are ours.
ZEEK_TSV_HEAD = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\t{path}\n"
ZEEK_CONN_FIELDS = (
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
    "orig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\t"
    "orig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\t"
    "bool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n")
ZEEK_FTP_FIELDS = (
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tuser\tpassword\tcommand\targ\t"
    "mime_type\tfile_size\treply_code\treply_msg\tdata_channel.passive\tdata_channel.orig_h\t"
    "data_channel.resp_h\tdata_channel.resp_p\tfuid\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tstring\tstring\tstring\tstring\tstring\tcount\t"
    "count\tstring\tbool\taddr\taddr\tport\tstring\n")


def test_zeek_tsv_logs_name_active_and_passive_data_connections(tmp_path: Path) -> None:
    """A CMS (10.20.7.11) fetching a PLC program from an FTP server (10.20.7.40): a PASV data
    connection Zeek named ftp-data, and a PORT one (the server connects back to the CMS) whose
    service column is unset ("-"): named by ftp.log's data_channel. Both listed with the
    control session 10.20.7.11:50003 → 10.20.7.40:21; values written here by hand."""
    logs = tmp_path / "zeek"
    logs.mkdir()
    (logs / "conn.log").write_text(ZEEK_TSV_HEAD.format(path="conn") + ZEEK_CONN_FIELDS + "".join(
        "\t".join(row) + "\n" for row in (
            ("1700000000.100000", "C1", "10.20.7.11", "50003", "10.20.7.40", "21", "tcp", "ftp",
             "30.000000", "180", "3146", "SF", "-", "-", "0", "ShAdDfFa", "38", "2164", "25", "4458", "(empty)"),
            ("1700000001.500000", "C2", "10.20.7.11", "37604", "10.20.7.40", "56666", "tcp",
             "ftp-data", "0.250000", "0", "20000", "SF", "-", "-", "0", "ShAdfFa", "6", "320", "16",
             "20900", "(empty)"),
            ("1700000010.200000", "C3", "10.20.7.40", "20", "10.20.7.11", "33582", "tcp", "-",
             "0.125000", "342", "0", "SF", "-", "-", "0", "ShADaFf", "5", "614", "3", "164", "(empty)"),
        )) + "#close\t2023-11-14-22-13-50\n")
    (logs / "ftp.log").write_text(ZEEK_TSV_HEAD.format(path="ftp") + ZEEK_FTP_FIELDS + "".join(
        "\t".join(row) + "\n" for row in (
            ("1700000001.400000", "C1", "10.20.7.11", "50003", "10.20.7.40", "21", "anonymous", "-",
             "PASV", "-", "-", "-", "227", "Entering Passive Mode (10,20,7,40,221,90)", "T",
             "10.20.7.11", "10.20.7.40", "56666", "-"),
            ("1700000010.100000", "C1", "10.20.7.11", "50003", "10.20.7.40", "21", "anonymous", "-",
             "PORT", "10,20,7,11,131,46", "-", "-", "200", "PORT command successful.", "F",
             "10.20.7.40", "10.20.7.11", "33582", "-"),
        )) + "#close\t2023-11-14-22-13-50\n")
    records = _document([str(logs)], tmp_path / "doc.jsonl")
    control = {"client": "10.20.7.11", "client_port": 50003, "server": "10.20.7.40", "server_port": 21}
    assert [(r["frame"], r["client"], r["client_port"], r["server"], r["server_port"], r["packets"],
             r["bytes_to_server"], r["bytes_to_client"], r["last_seen"], r["control"])
            for r in records if r["type"] == "ftp-data"] == [
        # ``frame``: the conn.log line (7 header lines, then the control connection's record)
        (9, "10.20.7.11", 37604, "10.20.7.40", 56666, 22, 0, 20000, "2023-11-14T22:13:21.750000Z", control),
        (10, "10.20.7.40", 20, "10.20.7.11", 33582, 8, 342, 0, "2023-11-14T22:13:30.325000Z", control)]


def test_data_connections_of_several_groups_merge_in_time_order_up_to_the_listed_bound() -> None:
    """``parallel``'s groups each list their own data connections: together in time order;
    once as many as are listed, which ones the serial run lists depends on the order flows
    ended in, so the run is done again in one process (None)."""
    run = ftp.FtpRun()

    def data(ts: float, source: str) -> ftp.FtpData:
        return ftp.FtpData(source, 1, "10.0.0.1", 40000, "10.0.0.2", 50000, ts, ts + 1, 4, 0, 10,
                           ("10.0.0.1", 39999, "10.0.0.2", 21))

    merged = run.merge_summaries([{"ftp_data": (data(5.0, "a"), data(9.0, "a"))},
                                  {"ftp_data": (data(7.0, "b"),)}])
    assert merged is not None and [(d.first_seen, d.source) for d in merged["ftp_data"]] == [
        (5.0, "a"), (7.0, "b"), (9.0, "a")]
    many = tuple(data(float(n), "a") for n in range(ftp.MAX_DATA_LISTED))
    assert run.merge_summaries([{"ftp_data": many}, {"ftp_data": (data(0.5, "b"),)}]) is None
