"""SSH decoder: banners and HASSH from KEXINIT (HASSH checked against tshark's ssh.kex.hassh)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import Event
from cranewatch.protocols.ssh import (
    SshBannerRequest,
    SshBannerResponse,
    SshDecoder,
    SshKexinitRequest,
    SshKexinitResponse,
)
from proto_helpers import context, feed_all, problems_of

OPENSSH_CAPTURE = Path(__file__).parent / "data" / "proto" / "openssh-loopback.pcap"


def _namelist(text: str) -> bytes:
    return len(text).to_bytes(4, "big") + text.encode()


def kexinit(kex: str, enc: str, mac: str, comp: str, enc_sc: str = "aes256-ctr") -> bytes:
    payload = bytes([20]) + bytes(16) + b"".join(_namelist(x) for x in (
        kex, "ssh-ed25519", enc, enc_sc, mac, "hmac-sha1", comp, "none", "", "")) + bytes(5)
    padding = 8 - (len(payload) + 5) % 8 + 8
    return (len(payload) + padding + 1).to_bytes(4, "big") + bytes([padding]) + payload + bytes(padding)


def test_banners_and_hassh_of_both_sides() -> None:
    client = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + kexinit("curve25519-sha256", "aes128-ctr",
                                                            "hmac-sha2-256", "none")
    server = b"SSH-2.0-dropbear_2020.81\r\n" + kexinit("curve25519-sha256", "aes128-ctr",
                                                      "hmac-sha2-256", "none", enc_sc="chacha20")
    events = feed_all(SshDecoder(context(22)), (False, server[:10]), (False, server[10:]),
                      (True, client))
    banner_s, kex_s, banner_c, kex_c = events
    assert isinstance(banner_s, SshBannerResponse) and banner_s.software == "dropbear_2020.81"
    assert isinstance(banner_c, SshBannerRequest) and banner_c.software == "OpenSSH_9.2p1"
    assert isinstance(kex_c, SshKexinitRequest) and not isinstance(kex_c, SshKexinitResponse)
    assert kex_c.hassh_string == "curve25519-sha256;aes128-ctr;hmac-sha2-256;none"
    assert kex_c.hassh == hashlib.md5(kex_c.hassh_string.encode()).hexdigest()
    assert isinstance(kex_s, SshKexinitResponse)
    assert kex_s.hassh_string == "curve25519-sha256;chacha20;hmac-sha1;none"  # server-to-client


def test_lines_before_the_server_banner_are_skipped() -> None:
    (banner,) = SshDecoder(context(22)).feed(False, b"Welcome\r\nSSH-2.0-X\r\n", 1.0, 1)
    assert isinstance(banner, SshBannerResponse) and banner.banner == "SSH-2.0-X"


def test_after_kexinit_nothing_more_is_read() -> None:
    decoder = SshDecoder(context(22))
    decoder.feed(True, b"SSH-2.0-a\r\n" + kexinit("k", "e", "m", "c"), 1.0, 1)
    assert decoder.feed(True, b"\xff" * 64, 2.0, 2) == []


def test_truncated_kexinit_is_a_decode_error() -> None:
    packet = kexinit("curve25519-sha256", "aes128-ctr", "hmac-sha2-256", "none")
    broken = (26).to_bytes(4, "big") + bytes([4]) + packet[5:30]  # whole packet, lists cut
    assert problems_of(SshDecoder(context(22)), True, b"SSH-2.0-a\r\n" + broken, 1.0, 1)


def test_no_banner_in_8_kib_is_a_decode_error() -> None:
    assert problems_of(SshDecoder(context(22)), True, b"x" * 9000, 1.0, 1)


def test_bytes_that_are_no_binary_packet_end_that_direction_with_one_error() -> None:
    decoder = SshDecoder(context(22))
    decoder.feed(False, b"SSH-2.0-b\r\n" + kexinit("k", "e", "m", "c"), 1.0, 1)
    decoder.feed(True, b"SSH-2.0-a\r\n", 2.0, 2)
    problems = problems_of(decoder, True, b"\xff" * 52, 3.0, 3)  # no KEXINIT: a length of 4 GiB
    assert len(problems) == 1 and "SSH packet length" in problems[0].message
    assert decoder.feed(True, b"\xff" * 52, 4.0, 4) == []  # no error per segment that follows
    assert decoder.finished  # both directions: the pipeline stops feeding the flow


class _Events:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_series(self, series: Any) -> None: ...

    def on_flow_end(self, flow: Any) -> None: ...

    def finish(self) -> list[Any]:
        return []


def test_real_openssh_session_gives_banners_and_hassh_without_warnings() -> None:
    """OpenSSH 9.2 client and server on loopback (tests/data/proto/README.md): the decoder
    reads both banners and KEXINITs, matches tshark's HASSH, and nothing after them (the
    key exchange, NEWKEYS and the encrypted session) makes a warning or an event."""
    sink = _Events()
    result = Analysis([sink]).run([OPENSSH_CAPTURE])
    assert result.warnings == ()
    kinds = [(e.kind, e.frame) for e in sink.events]
    assert kinds == [("ssh_banner_request", 4), ("ssh_banner_response", 6),
                     ("ssh_kexinit_response", 8), ("ssh_kexinit_request", 10)]
    kex = {e.kind: e for e in sink.events if isinstance(e, SshKexinitRequest)}
    # tshark -d tcp.port==2222,ssh -T fields -e ssh.kex.hassh -e ssh.kex.hasshserver
    assert kex["ssh_kexinit_request"].hassh == "472b5de333ad665af5cbf10ff892c4df"
    assert kex["ssh_kexinit_response"].hassh == "425d29fe50d8e4f5e37efb6e24bcf660"
    banner = next(e for e in sink.events if isinstance(e, SshBannerRequest))
    assert banner.software == "OpenSSH_9.2p1"


def test_a_reported_problem_keeps_no_frames_alive() -> None:
    """A problem is a record: its traceback (frames up to the pipeline's, which hold the whole
    packet batch) is dropped. Kept, it made a reference cycle with the frame that read it, and
    every such cycle held a 64 k-packet batch until the (rarely run) collector found it:
    +100 MB peak on a capture with a few hundred broken SSH flows."""
    import gc

    decoder = SshDecoder(context(22))
    decoder.feed(True, b"SSH-2.0-a\r\n", 1.0, 1)
    gc.disable()
    try:
        problems = problems_of(decoder, True, b"\xff" * 52, 2.0, 2)
        assert problems and all(p.__traceback__ is None for p in problems)
        decoder.problems.clear()
        del problems
        assert not [o for o in gc.get_objects() if type(o).__name__ == "frame"
                    and o.f_code.co_name == "ssh_packet_length"]
    finally:
        gc.enable()
