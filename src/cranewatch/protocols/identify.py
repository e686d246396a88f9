"""Protocol identification by content, for flows whose port lies (SSH on 443, MQTT on 8080).

Each probe looks only at the first bytes each side sent (a prefix check, never a regex over a
payload) and answers whether the flow speaks its protocol. The DecoderSpecs of the protocol
modules use these probes; ``identify`` runs them all in priority order for one flow.
"""

from __future__ import annotations

from cranewatch.protocols.base import REGISTRY

HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                b"CONNECT ", b"TRACE ", b"PROPFIND ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ",
                b"UNLOCK ", b"PROPPATCH ", b"SEARCH ", b"SUBSCRIBE ", b"NOTIFY ", b"M-SEARCH ")
RTSP_VERSIONS = (b"RTSP/1.0", b"RTSP/2.0")
OPCUA_TYPES = (b"HEL", b"ACK", b"OPN", b"CLO", b"MSG", b"ERR", b"RHE")
ENIP_COMMANDS = frozenset({0x0001, 0x0004, 0x0063, 0x0064, 0x0065, 0x0066, 0x006F, 0x0070,
                           0x0071, 0x0072})


def _first(client: bytes, server: bytes) -> bytes:
    return client or server


def is_tls(client: bytes, server: bytes) -> bool:
    """A TLS handshake record (type 22) of version 3.x carrying a ClientHello/ServerHello."""
    data = _first(client, server)
    if len(data) >= 5 and data[0] & 0x80 and data[2] == 1 and data[3] in (0, 2, 3):
        return True  # SSLv2-format ClientHello (still sent by old stacks offering SSLv3/TLS)
    return (len(data) >= 6 and data[0] == 0x16 and data[1] == 3 and data[2] <= 4
            and data[5] in (1, 2))


def _request_line(client: bytes) -> bytes:
    """The client's first line (or what came of it), without its line end."""
    end = client.find(b"\n", 0, 4096)
    return client[:end].rstrip(b"\r") if end >= 0 else client[:4096]


def is_http(client: bytes, server: bytes) -> bool:
    """An HTTP/1.x request line from the client or a status line from the server.

    RTSP borrows HTTP's syntax and some of its methods (OPTIONS, GET_PARAMETER aside): a
    request line that names RTSP as its version is not HTTP.
    """
    if client:
        head = client[:10]
        if any(head.startswith(m) for m in HTTP_METHODS):
            return not _request_line(client).endswith(RTSP_VERSIONS)
    return server.startswith(b"HTTP/1.")


def is_rtsp(client: bytes, server: bytes) -> bool:
    """An RTSP request line (``DESCRIBE rtsp://cam/live RTSP/1.0``) or status line
    (``RTSP/1.0 200 OK``): IP cameras' stream control, on 554 or any other port."""
    if client:
        method, _, rest = _request_line(client).partition(b" ")
        return (method.replace(b"_", b"").isalpha() and method.isupper()
                and rest.endswith(RTSP_VERSIONS) and b" " in rest)
    return server.startswith(RTSP_VERSIONS) and server[8:9] == b" "


def is_ssh(client: bytes, server: bytes) -> bool:
    """An SSH identification string, from either side (the server usually speaks first)."""
    return client.startswith(b"SSH-") or server.startswith(b"SSH-")


def _mqtt_remaining_length(data: bytes, pos: int) -> tuple[int, int] | None:
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    return None


def is_mqtt(client: bytes, server: bytes) -> bool:
    """An MQTT CONNECT naming protocol "MQTT" (3.1.1, 5) or "MQIsdp" (3.1)."""
    if not client or client[0] != 0x10:
        return False
    parsed = _mqtt_remaining_length(client, 1)
    if parsed is None:
        return False
    _, pos = parsed
    return client[pos:pos + 6] in (b"\x00\x04MQTT", b"\x00\x06MQIs")


def _is_tpkt_cotp(data: bytes) -> bool:
    return len(data) >= 7 and data[0] == 3 and data[1] == 0 and data[5] in (0xE0, 0xD0, 0xF0)


def is_s7comm(client: bytes, server: bytes) -> bool:
    """TPKT + COTP whose connection request names TSAPs, or a data TPDU carrying S7 (0x32/0x72)."""
    data = _first(client, server)
    if not _is_tpkt_cotp(data):
        return False
    if data[5] == 0xF0:
        return len(data) >= 8 and data[7] in (0x32, 0x72)
    # RDP also starts TPKT + COTP CR; S7 names its TSAPs with parameters 0xC1/0xC2
    return b"\xc1\x02" in data[11:40] or b"\xc2\x02" in data[11:40]


def is_rdp(client: bytes, server: bytes) -> bool:
    """TPKT + COTP connection request carrying an RDP cookie or an RDP negotiation request."""
    if not _is_tpkt_cotp(client) or client[5] != 0xE0:
        return False
    body = client[11:]
    return body.startswith(b"Cookie: ") or (len(body) >= 8 and body[-8] == 0x01 and body[-6] == 8)


def is_enip(client: bytes, server: bytes) -> bool:
    """An EtherNet/IP encapsulation header with a known command and a consistent length."""
    data = _first(client, server)
    if len(data) < 24:
        return False
    command = data[0] | data[1] << 8
    return command in ENIP_COMMANDS and data[20:24] == b"\x00\x00\x00\x00"  # options: 0


def is_opcua(client: bytes, server: bytes) -> bool:
    """An OPC UA TCP message header (HEL/ACK/OPN/MSG/...) with a final/chunk marker."""
    data = _first(client, server)
    return len(data) >= 8 and data[:3] in OPCUA_TYPES and data[3:4] in (b"F", b"C", b"A")


def is_vnc(client: bytes, server: bytes) -> bool:
    """The RFB protocol version string the VNC server sends first (client echoes one)."""
    return server.startswith(b"RFB ") or client.startswith(b"RFB ")


def is_telnet(client: bytes, server: bytes) -> bool:
    """Telnet option negotiation: IAC followed by WILL/WONT/DO/DONT at the flow start."""
    for data in (server, client):
        if len(data) >= 3 and data[0] == 0xFF and 0xFB <= data[1] <= 0xFE:
            return True
    return False


def is_teamviewer(client: bytes, server: bytes) -> bool:
    """TeamViewer's TCP framing: packets start with magic 0x17 0x24 or 0x11 0x30 (as nDPI)."""
    data = _first(client, server)
    return len(data) >= 4 and data[:2] in (b"\x17\x24", b"\x11\x30")


def is_anydesk(client: bytes, server: bytes) -> bool:
    """AnyDesk speaks TLS on its own port; the ClientHello alone does not tell it from others,
    so the remote-access decoder confirms it by the "AnyDesk" certificate subject."""
    return is_tls(client, server)


def is_dns_tcp(client: bytes, server: bytes) -> bool:
    """A DNS message behind a 2-byte length: one question, sane flags."""
    data = _first(client, server)
    if len(data) < 14:
        return False
    length = data[0] << 8 | data[1]
    qdcount = data[6] << 8 | data[7]
    return 12 <= length <= 65535 and qdcount == 1 and (data[4] >> 3) & 0x0F in (0, 2, 4, 5)


def is_dns_udp(client: bytes, server: bytes) -> bool:
    """A standard DNS query on any port: one question whose labels end right before QTYPE/QCLASS."""
    data = client
    if len(data) < 17 or data[2] & 0xF8 or data[4:6] != b"\x00\x01" or data[6:8] != b"\x00\x00":
        return False
    pos = 12
    while pos < len(data) and data[pos] and pos < 12 + 255:
        if data[pos] > 63:
            return False
        pos += 1 + data[pos]
    return pos < len(data) and data[pos] == 0 and len(data) >= pos + 5 and (
        len(data) == pos + 5 or data[10:12] != b"\x00\x00")


def is_syslog(client: bytes, server: bytes) -> bool:
    """A syslog priority ``<N>`` (N ≤ 191), optionally after an RFC 6587 octet count."""
    data = client
    if data[:1].isdigit():
        space = data.find(b" ", 0, 8)
        if space < 0:
            return False
        data = data[space + 1:]
    if not data.startswith(b"<"):
        return False
    close = data.find(b">", 1, 5)
    return close > 1 and data[1:close].isdigit() and int(data[1:close]) <= 191


def identify(client: bytes, server: bytes, transport: str = "tcp") -> str | None:
    """The name of the first registered protocol whose probe accepts the flow, or None.

    Needs the protocol modules loaded (``cranewatch.protocols.load_all``).
    """
    for spec in sorted(REGISTRY, key=lambda s: s.priority):
        if spec.transport == transport and spec.probe is not None and spec.probe(client, server):
            return spec.name
    return None
