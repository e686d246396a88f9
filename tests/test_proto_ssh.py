"""SSH decoder: banners and HASSH from KEXINIT (HASSH checked against tshark's ssh.kex.hassh)."""

from __future__ import annotations

import hashlib

import pytest

from cranewatch.errors import DecodeError
from cranewatch.protocols.ssh import (
    SshBannerRequest,
    SshBannerResponse,
    SshDecoder,
    SshKexinitRequest,
    SshKexinitResponse,
)
from proto_helpers import context, feed_all


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
    with pytest.raises(DecodeError):
        SshDecoder(context(22)).feed(True, b"SSH-2.0-a\r\n" + broken, 1.0, 1)


def test_no_banner_in_8_kib_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        SshDecoder(context(22)).feed(True, b"x" * 9000, 1.0, 1)
