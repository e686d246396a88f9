"""Remote-access recognition by behaviour: RDP, VNC, Telnet, TeamViewer, AnyDesk."""

from __future__ import annotations

from cranewatch.protocols.remote import (
    AnydeskDecoder,
    RdpDecoder,
    RemoteSessionRequest,
    RemoteSessionResponse,
    TeamViewerDecoder,
    TelnetDecoder,
    VncDecoder,
)
from proto_helpers import context, feed_all, h, problems_of

# An mstsc connection request: X.224 CR with cookie and RDP_NEG_REQ asking for TLS + CredSSP,
# and the server's RDP_NEG_RSP choosing CredSSP (MS-RDPBCGR 2.2.1.1 / 2.2.1.2).
RDP_CR = (h("0300002e 29 e0 0000 0000 00") + b"Cookie: mstshash=operator\r\n"
          + h("01 00 0800 03000000"))
RDP_CC = h("03000013 0e d0 0000 1234 00 02 00 0800 02000000")


def test_rdp_cookie_user_and_negotiated_security() -> None:
    request, response = feed_all(RdpDecoder(context(3389)), (True, RDP_CR), (False, RDP_CC))
    assert isinstance(request, RemoteSessionRequest) and request.protocol == "rdp"
    assert request.user == "operator" and request.security == ("tls", "credssp")
    assert isinstance(response, RemoteSessionResponse) and response.security == ("credssp",)


def test_vnc_version_and_security_types_offered() -> None:
    events = feed_all(VncDecoder(context(5900)), (False, b"RFB 003.008\n"), (True, b"RFB 003.008\n"),
                      (False, h("02 01 02")))
    assert [type(e).__name__ for e in events] == ["RemoteSessionRequest", "RemoteSessionResponse"]
    client, server = events
    assert isinstance(server, RemoteSessionResponse)
    assert server.version == "003.008" and server.security == ("none", "vnc-auth")
    assert client.frame == 2 and server.frame == 3


def test_telnet_options_and_prompt() -> None:
    (server,) = TelnetDecoder(context(23)).feed(False, h("fffd18 fffb01") + b"\r\nlogin: ", 1.0, 1)
    assert server.security == ("DO terminal-type", "WILL echo") and server.detail == "login:"


def test_teamviewer_magic() -> None:
    (event,) = TeamViewerDecoder(context(5938)).feed(True, h("1724 0a 00 0000"), 1.0, 1)
    assert event.protocol == "teamviewer" and "command 10" in event.detail
    assert problems_of(TeamViewerDecoder(context(5938)), True, b"GET / HTTP", 1.0, 1)


def test_anydesk_is_tls_with_anydesk_certificates() -> None:
    from test_proto_tls import _self_signed_der

    cert = _self_signed_der().replace(b"plc.sts07", b"AnyDesk C")
    chain = len(cert).to_bytes(3, "big") + cert
    body = len(chain).to_bytes(3, "big") + chain
    message = h("0b") + len(body).to_bytes(3, "big") + body
    record = h("160303") + len(message).to_bytes(2, "big") + message
    events = AnydeskDecoder(context(7070)).feed(False, record, 1.0, 1)
    assert [e.kind for e in events] == ["tls_certificate_response", "remote_session_response"]
    assert events[1].protocol == "anydesk"  # type: ignore[attr-defined]


def test_reverse_vnc_the_server_calls_the_listening_viewer() -> None:
    # the VNC server is the TCP client (viewer -listen on 5500): its version comes first and
    # its security types follow from the same side; the viewer's one-byte choice is not a list
    events = feed_all(VncDecoder(context(5500)), (True, b"RFB 003.008\n"), (False, b"RFB 003.008\n"),
                      (True, h("01 01")), (False, h("01")))
    assert [(type(e).__name__, e.security) for e in events] == [  # type: ignore[attr-defined]
        ("RemoteSessionResponse", ()), ("RemoteSessionRequest", ("none",))]
    viewer, server = events
    assert isinstance(server, RemoteSessionRequest) and "reverse VNC" in server.detail
    assert isinstance(viewer, RemoteSessionResponse) and "reverse" not in viewer.detail


def test_vnc_server_answering_an_rfb_3_3_viewer_names_one_security_type() -> None:
    # RFB 3.3 (RFC 6143 appendix A): the server picks the type and sends it as a u32
    events = feed_all(VncDecoder(context(5900)), (False, b"RFB 003.008\n"), (True, b"RFB 003.003\n"),
                      (False, h("00000001")))
    client, server = events
    assert isinstance(server, RemoteSessionResponse) and server.security == ("none",)
    assert client.version == "003.003"  # type: ignore[attr-defined]


def test_rdp_without_negotiation_is_standard_rdp_security() -> None:
    # FreeRDP /sec:rdp against xrdp (from tests/test_remote_real.py's capture): a cookie and
    # no RDP_NEG_REQ; a connection confirm without RDP_NEG_RSP
    request, response = feed_all(
        RdpDecoder(context(3389)),
        (True, h("0300002621e00000000000436f6f6b69653a206d737473686173683d656e67696e6565720d0a")),
        (False, h("0300000b06d00000123400")))
    assert isinstance(request, RemoteSessionRequest) and request.user == "engineer"
    assert request.security == ("rdp",) and response.security == ("rdp",)  # type: ignore[attr-defined]
