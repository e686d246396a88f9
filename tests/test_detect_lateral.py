"""lateral-movement: new conversations between crane-LAN hosts, judged against a baseline
learned from a capture (or a profile's allow list), on real pcap files.

The crane: an HMI (10.20.7.30) polls two PLCs (10.20.7.10, 10.20.7.11) over Modbus/TCP.
Expected values are computed from the frames written (wire bytes of each side, frame numbers,
the timestamps ``write_pcap`` gives: start + index * step).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cranewatch.baseline import Baseline, learn_baseline
from cranewatch.detect.engine import build_sink
from cranewatch.model import Finding, Severity
from cranewatch.pipeline import analyze
from cranewatch.profile import Allowance, CraneProfile, Host
from modbus_capture import ACK, Conversation, read_request, read_response, udp_frame, write_pcap

HMI, PLC1, PLC2, CMS = "10.20.7.30", "10.20.7.10", "10.20.7.11", "10.20.7.40"
START, STEP = 1_700_000_000.0, 0.01
MACS = {HMI: "02:00:00:00:00:30", PLC1: "02:00:00:00:00:10", PLC2: "02:00:00:00:00:11",
        CMS: "02:00:00:00:00:40"}


def tcp(client: str, server: str, port: int, client_port: int) -> Conversation:
    return Conversation(client, server, client_port=client_port, server_port=port,
                        client_mac=MACS[client], server_mac=MACS[server])


def polling(rounds: int = 3) -> list[bytes]:
    """The HMI reads holding registers of both PLCs (and the CMS polls the HMI's web page)."""
    frames: list[bytes] = []
    for n, plc in enumerate((PLC1, PLC2)):
        c = tcp(HMI, plc, 502, 41000 + n)
        frames += c.handshake()
        for tid in range(rounds):
            frames.append(c.send(True, read_request(tid, 3, 0, 4)))
            frames.append(c.send(False, read_response(tid, 3, [1, 2, 3, 4])))
        frames += c.close()
    web = tcp(CMS, HMI, 80, 42000)
    frames += web.handshake()
    frames.append(web.send(True, b"GET / HTTP/1.1\r\nHost: hmi\r\n\r\n"))
    frames.append(web.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    frames += web.close()
    return frames


def baseline(tmp_path: Path) -> Baseline:
    return learn_baseline([write_pcap(tmp_path / "normal.pcap", polling())])


def analyse(path: Path, base: Baseline | None, profile: CraneProfile | None = None) -> list[Finding]:
    sink = build_sink(profile, base)
    return [f for f in analyze([path], sinks=[sink]).findings if f.category == "lateral-movement"]


def push(client: str, server: str, port: int, size: int, client_port: int = 50123,
         to_server: bool = True) -> tuple[list[bytes], int, int]:
    """A raw TCP connection moving ``size`` bytes in 1400-byte segments (from the client, or
    from the server when not ``to_server``), each ACKed.

    Returns the frames and the wire bytes each way (client's frames, server's frames)."""
    c = tcp(client, server, port, client_port)
    frames = c.handshake()
    sides = [(True, frames[0]), (False, frames[1]), (True, frames[2])]
    data = bytes(range(256)) * (size // 256 + 1)
    for offset in range(0, size, 1400):
        sides.append((to_server, c.send(to_server, data[offset:offset + 1400])))
        sides.append((not to_server, c.send(not to_server, b"", ACK)))
    closing = c.close()
    sides += [(True, closing[0]), (False, closing[1]), (True, closing[2])]
    up = sum(len(f) for from_client, f in sides if from_client)
    down = sum(len(f) for from_client, f in sides if not from_client)
    return [f for _, f in sides], up, down


def test_a_plc_pushing_80_kB_to_another_plc_is_one_high_finding(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    normal = polling()
    attack, up, down = push(PLC1, PLC2, 40001, 80_000)
    path = write_pcap(tmp_path / "attack.pcap", normal + attack, START, STEP)
    (f,) = analyse(path, base)
    assert f.severity == Severity.HIGH
    assert (f.src, f.dst) == (PLC1, f"{PLC2}:40001")
    assert f.title.startswith("Bulk transfer between crane hosts")
    values = f.evidence[0].values
    assert values["bytes_to_server"] == up and values["bytes_to_client"] == down
    assert up > 80_000 > down
    assert values["transfer"] == "bulk"
    assert values["client_field_device"] and values["server_field_device"]
    first_frame = len(normal) + 1  # the SYN
    assert f.first_seen == START + len(normal) * STEP
    assert abs(f.last_seen - (START + (len(normal) + len(attack) - 1) * STEP)) < 1e-6
    assert f.evidence[0].frames[0] == first_frame
    assert f.count == 1


def test_a_small_new_conversation_is_medium(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    c = tcp(CMS, PLC1, 502, 43000)  # the CMS never polled the PLC
    frames = [*c.handshake(), c.send(True, read_request(1, 3, 0, 2)),
              c.send(False, read_response(1, 3, [7, 8])), *c.close()]
    path = write_pcap(tmp_path / "new.pcap", polling() + frames)
    (f,) = analyse(path, base)
    assert f.severity == Severity.MEDIUM
    assert (f.src, f.dst) == (CMS, f"{PLC1}:502")
    assert f.evidence[0].values["bytes_to_server"] < 1000


def test_a_field_device_opening_a_small_connection_is_high(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    c = tcp(PLC1, HMI, 80, 43001)  # the PLC has only ever answered
    frames = [*c.handshake(), c.send(True, b"GET / HTTP/1.1\r\n\r\n"),
              c.send(False, b"HTTP/1.1 200 OK\r\n\r\n"), *c.close()]
    (f,) = analyse(write_pcap(tmp_path / "plc.pcap", polling() + frames), base)
    assert f.severity == Severity.HIGH and f.title.startswith("Field device opens a connection")


def test_a_small_smb_transfer_between_known_hosts_is_high_with_its_volume(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    frames, up, down = push(HMI, CMS, 445, 3000)  # well under 64 kB, but a file service
    (f,) = analyse(write_pcap(tmp_path / "smb.pcap", polling() + frames), base)
    assert f.severity == Severity.HIGH and f.evidence[0].values["transfer"] == "smb"
    assert (f.evidence[0].values["bytes_to_server"], f.evidence[0].values["bytes_to_client"]) == (up, down)
    assert f"{up} bytes up" in f.title


def test_pairs_in_the_baseline_are_quiet_even_with_more_data(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    assert analyse(write_pcap(tmp_path / "again.pcap", polling(rounds=40)), base) == []


def test_half_open_probes_and_one_way_udp_are_not_conversations(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    c = tcp(HMI, PLC2, 22, 44000)
    probe = [c.send(True, b"", 0x02), c.send(False, b"", 0x14)]  # SYN, RST|ACK
    oneway = [udp_frame(PLC1, PLC2, 5000, 5001, b"x" * 100, MACS[PLC1], MACS[PLC2])] * 3
    assert analyse(write_pcap(tmp_path / "probe.pcap", polling() + probe + oneway), base) == []


def test_udp_both_ways_counts(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    frames = [udp_frame(PLC1, PLC2, 40000, 5001, b"x" * 100, MACS[PLC1], MACS[PLC2]),
              udp_frame(PLC2, PLC1, 5001, 40000, b"y" * 10, MACS[PLC2], MACS[PLC1])]
    (f,) = analyse(write_pcap(tmp_path / "udp.pcap", polling() + frames), base)
    assert f.severity == Severity.HIGH and f.dst == f"{PLC2}:5001"


def test_without_a_baseline_the_profile_allow_list_judges(tmp_path: Path) -> None:
    hosts = (Host("hmi", "hmi", HMI, MACS[HMI], "crane"), Host("plc1", "plc", PLC1, MACS[PLC1], "crane"),
             Host("plc2", "plc", PLC2, MACS[PLC2], "crane"), Host("cms", "cms", CMS, MACS[CMS], "crane"))
    allowed = (Allowance("hmi", "plc1", "modbus", 502), Allowance("hmi", "plc2", "modbus", 502),
               Allowance("cms", "hmi", "any", 80))
    zones = {"crane": (ipaddress.ip_network("10.20.7.0/24"),)}
    profile = CraneProfile("T", zones=zones, hosts=hosts, allowed=allowed)
    attack, _, _ = push(PLC1, PLC2, 40001, 80_000)
    (f,) = analyse(write_pcap(tmp_path / "p.pcap", polling() + attack), None, profile)
    assert f.severity == Severity.HIGH and (f.src, f.dst) == (PLC1, f"{PLC2}:40001")
    assert analyse(write_pcap(tmp_path / "q.pcap", polling()), None, profile) == []
    # a profile without allow entries says nothing about who may talk
    bare = CraneProfile("T", zones=zones, hosts=hosts)
    assert analyse(write_pcap(tmp_path / "r.pcap", polling() + attack), None, bare) == []


def _ftp_session(client: str, server: str, *, size: int, data_port: int, mode: str = "PASV",
                 named: str | None = None) -> tuple[list[bytes], int, int]:
    """An FTP upload as a client and vsftpd exchange it: greeting, login, the data channel
    negotiated (``PASV``: a 227 naming ``named`` or the server and ``data_port``; ``EPSV``: a
    229; ``PORT``: active mode, the client names its own ``data_port`` and the server connects
    back from port 20), ``STOR dump.bin``, the file on the data connection, 226. Returns the
    frames and the wire bytes from the FTP client to the server and back."""
    ctl = tcp(client, server, 21, 51000)
    frames = ctl.handshake()
    up = len(frames[0]) + len(frames[2])
    down = len(frames[1])
    p1, p2 = divmod(data_port, 256)
    if mode == "PASV":
        host = (named or server).replace(".", ",")
        channel = [(True, b"PASV\r\n"),
                   (False, f"227 Entering Passive Mode ({host},{p1},{p2}).\r\n".encode())]
    elif mode == "EPSV":
        channel = [(True, b"EPSV\r\n"),
                   (False, f"229 Entering Extended Passive Mode (|||{data_port}|)\r\n".encode())]
    else:
        host = (named or client).replace(".", ",")
        channel = [(True, f"PORT {host},{p1},{p2}\r\n".encode()),
                   (False, b"200 PORT command successful. Consider using PASV.\r\n")]
    for from_client, text in [(False, b"220 (vsFTPd 3.0.3)\r\n"), (True, b"USER anonymous\r\n"),
                              (False, b"331 Please specify the password.\r\n"),
                              (True, b"PASS guest@\r\n"), (False, b"230 Login successful.\r\n"),
                              *channel, (True, b"STOR dump.bin\r\n"),
                              (False, b"150 Ok to send data.\r\n")]:
        frame = ctl.send(from_client, text)
        frames.append(frame)
        if from_client:
            up += len(frame)
        else:
            down += len(frame)
    if mode == "PORT":  # the server connects back from port 20; the file goes to it
        data, d_down, d_up = push(server, client, data_port, size, client_port=20, to_server=False)
    else:
        data, d_up, d_down = push(client, server, data_port, size)
    frames += data
    up += d_up
    down += d_down
    done = ctl.send(False, b"226 Transfer complete.\r\n")
    frames.append(done)
    down += len(done)
    closing = ctl.close()
    frames += closing
    up += len(closing[0]) + len(closing[2])
    down += len(closing[1])
    return frames, up, down


def test_an_ftp_upload_in_passive_mode_is_one_finding_with_its_data_volume(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    frames, up, down = _ftp_session(PLC2, CMS, size=30_000, data_port=40134)
    found = analyse(write_pcap(tmp_path / "a.pcap", polling() + frames), base)
    assert [(f.src, f.dst) for f in found] == [(PLC2, f"{CMS}:21")]
    values = found[0].evidence[0].values
    assert (values["bytes_to_server"], values["bytes_to_client"]) == (up, down)  # by hand above
    assert values["data_connections"] == 1 and values["transfer"] == "ftp"


def test_a_data_connection_of_a_known_ftp_session_is_not_a_new_conversation(tmp_path: Path) -> None:
    known, _, _ = _ftp_session(PLC2, CMS, size=2_000, data_port=40100)
    base = learn_baseline([write_pcap(tmp_path / "normal.pcap", polling() + known)])
    # the same FTP use later: the server picks another passive port, as servers do
    again, _, _ = _ftp_session(PLC2, CMS, size=90_000, data_port=40177)
    assert analyse(write_pcap(tmp_path / "b.pcap", polling() + again), base) == []


def test_the_files_and_login_of_an_ftp_session_are_in_its_evidence_without_the_password(
        tmp_path: Path) -> None:
    base = baseline(tmp_path)
    frames, _, _ = _ftp_session(PLC2, CMS, size=3_000, data_port=40134)
    (f,) = analyse(write_pcap(tmp_path / "a.pcap", polling() + frames), base)
    values = f.evidence[0].values
    assert values["files"] == [{"operation": "upload", "name": "dump.bin", "reply": 226}]
    assert values["user"] == "anonymous" and values["password_in_clear"] is True
    assert "guest@" not in repr(f.to_json())  # the password itself is never kept


def test_epsv_and_active_mode_data_connections_fold_into_their_session(tmp_path: Path) -> None:
    base = baseline(tmp_path)
    for mode in ("EPSV", "PORT"):
        frames, up, down = _ftp_session(PLC2, CMS, size=70_000, data_port=40150, mode=mode)
        found = analyse(write_pcap(tmp_path / f"{mode}.pcap", polling() + frames), base)
        assert [(f.src, f.dst) for f in found] == [(PLC2, f"{CMS}:21")], mode
        values = found[0].evidence[0].values
        # active mode: the data connection runs from the server (port 20) to the client, and
        # its bytes are still counted as the session's client's upload
        assert (values["bytes_to_server"], values["bytes_to_client"]) == (up, down), mode
        assert up > 70_000 > down and values["data_connections"] == 1, mode


def test_a_connection_the_ftp_session_did_not_announce_is_a_conversation_of_its_own(
        tmp_path: Path) -> None:
    """No guessing: only the port the 227 named is the session's; another high port opened
    during the session (the old time-window fold took it) is a new conversation."""
    base = baseline(tmp_path)
    frames, _, _ = _ftp_session(PLC2, CMS, size=3_000, data_port=40134)
    other, _, _ = push(PLC2, CMS, 40135, 5_000, client_port=50200)
    cut = len(frames) - 4  # before the 226 and the control connection's close
    found = analyse(write_pcap(tmp_path / "a.pcap", polling() + frames[:cut] + other + frames[cut:]),
                    base)
    assert sorted(f.dst for f in found) == [f"{CMS}:21", f"{CMS}:40135"]


def test_a_port_command_naming_a_third_host_is_an_ftp_bounce_without_any_baseline(
        tmp_path: Path) -> None:
    frames, _, _ = _ftp_session(HMI, CMS, size=1_000, data_port=502, mode="PORT", named=PLC1)
    path = write_pcap(tmp_path / "bounce.pcap", frames)
    (f,) = analyse(path, None)
    assert f.rule == "ftp-bounce" and f.severity == Severity.MEDIUM
    assert (f.src, f.dst) == (HMI, f"{PLC1}:502")
    assert "asked the server" in f.title and "(PORT)" in f.title


def test_a_pasv_reply_naming_a_third_host_is_a_bounce_but_nat_is_not(tmp_path: Path) -> None:
    frames, _, _ = _ftp_session(HMI, CMS, size=1_000, data_port=40100, named=PLC1)
    (f,) = analyse(write_pcap(tmp_path / "pasv.pcap", frames), None)
    assert f.rule == "ftp-bounce" and (f.src, f.dst) == (CMS, f"{PLC1}:40100")
    # a server behind NAT names its public address: not a bounce
    nat, _, _ = _ftp_session(HMI, CMS, size=1_000, data_port=40100, named="203.0.113.7")
    assert analyse(write_pcap(tmp_path / "nat.pcap", nat), None) == []
