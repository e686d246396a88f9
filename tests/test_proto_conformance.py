"""Decoders against tshark, frame by frame, over the public captures of ../shared/data/pcaps.

For each protocol, tshark's fields (``-T fields`` with the dissector's own field names) and
cranewatch's decoded fields are put side by side per frame; they must agree exactly except
for the disagreements listed in ``KNOWN``, each with its reason. The captures come from
MANIFEST.tsv (the protocols column). The default run takes a few captures per protocol;
``-m slow`` sweeps every capture the manifest lists for the protocol.

The decoders are driven by ``proto_walk`` (dpkt + in-order TCP delivery), not by the
pipeline, so the comparison tests the decoders alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cranewatch.protocols.base import Event
from cranewatch.protocols.dhcp import MESSAGE_TYPES, DhcpMessageRequest
from cranewatch.protocols.dns import DnsQueryRequest
from cranewatch.protocols.enip import (
    CipRequest,
    CipResponse,
    EnipCommandRequest,
    EnipIdentityResponse,
)
from cranewatch.protocols.http import HttpRequest, HttpResponse
from cranewatch.protocols.mqtt import (
    MqttConnectRequest,
    MqttControlRequest,
    MqttPublishRequest,
    MqttSubscribeRequest,
)
from cranewatch.protocols.ntp import NtpTimeRequest
from cranewatch.protocols.opcua import (
    OpcuaChannelRequest,
    OpcuaChannelResponse,
    OpcuaHelloRequest,
    OpcuaHelloResponse,
    OpcuaServiceRequest,
)
from cranewatch.protocols.s7comm import (
    NUMBERED_AREAS,
    S7JobRequest,
    S7JobResponse,
    S7UserDataRequest,
)
from cranewatch.protocols.ssh import (
    SshBannerRequest,
    SshKexinitRequest,
    SshKexinitResponse,
)
from cranewatch.protocols.tls import TlsClientHelloRequest, TlsServerHelloResponse
from proto_walk import AGGREGATOR, readable, tshark_fields, walk

Row = list[list[str]]


def _s7(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, S7JobRequest):
        items = [(column, value) for item in event.items for column, value in (
            (3, f"0x{item.area:02x}"), (4, str(item.db)),
            *(((8, str(item.byte_address)),) if item.area in NUMBERED_AREAS else
              ((5, str(item.byte_address)), (6, str(item.bit_address)))),
            (7, str(item.count)))]
        return [(0, f"0x{event.function:02x}"), *items]
    if isinstance(event, S7JobResponse) and event.function is not None:
        return [(0, f"0x{event.function:02x}")]
    if isinstance(event, S7UserDataRequest):  # requests and responses (subclass)
        szl = [(2, f"0x{event.szl_id:04x}")] if event.szl_id is not None else []
        return [(1, str(event.group)), *szl]
    return None


def _enip(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, EnipCommandRequest):  # requests and responses (subclass)
        return [(0, f"0x{event.command:04x}")]
    if isinstance(event, EnipIdentityResponse):
        return [(3, event.product_name), (4, f"0x{event.vendor_id:04x}")]
    if isinstance(event, CipRequest):
        return [(1, f"0x{event.service:02x}"), *((2, str(c)) for c in event.classes),
                *((5, str(i)) for i in event.instances)]
    if isinstance(event, CipResponse):
        return [(1, f"0x{event.service:02x}"), *((2, str(c)) for c in event.classes),
                *((5, str(i)) for i in event.instances)]
    return None


def _opcua(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, OpcuaHelloRequest):
        return [(0, "HEL")]
    if isinstance(event, OpcuaHelloResponse):
        return [(0, event.message_type)]
    if isinstance(event, OpcuaChannelRequest | OpcuaChannelResponse):
        sid = event.service_id
        return [(0, event.message_type), *([(1, str(sid))] if sid is not None else []),
                *([(2, event.policy_uri)] if event.message_type == "OPN" else [])]
    if isinstance(event, OpcuaServiceRequest):  # requests and responses (subclass)
        return [(0, "MSG"), *([(1, str(event.service_id))] if event.service_id is not None else [])]
    return None


def _mqtt(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, MqttConnectRequest):
        return [(0, "1"), (1, event.client_id)]
    if isinstance(event, MqttPublishRequest):
        return [(0, "3"), (2, event.topic), (3, str(event.qos))]
    if isinstance(event, MqttSubscribeRequest):
        return [(0, "10" if event.unsubscribe else "8"), *((2, t) for t in event.topics)]
    if isinstance(event, MqttControlRequest):
        return [(0, str(event.packet_type))]
    if event.kind == "mqtt_connect_response":
        return [(0, "2")]
    return None


def _dns(event: Event) -> list[tuple[int, str]] | None:
    if not isinstance(event, DnsQueryRequest):
        return None
    records = (*getattr(event, "answers", ()), *event.records)
    return [*((0, name) for name in event.qnames),
            *((1, r.data) for r in records if r.rtype == 1 and r.data),
            *((2, str(qtype)) for qtype in event.qtypes)]


def _tls(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, TlsClientHelloRequest):
        return [*([(0, event.sni)] if event.sni else []), (1, event.ja3_md5),
                *((3, name) for name in event.alpn)]
    if isinstance(event, TlsServerHelloResponse):
        return [(2, event.ja3s_md5), *([(3, event.alpn)] if event.alpn else [])]
    return None


def _http(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, HttpRequest):
        return [*([(0, event.host)] if event.host is not None else []),
                *([(1, event.uri)] if event.uri else []),
                *([(3, event.user_agent)] if event.user_agent is not None else [])]
    if isinstance(event, HttpResponse):
        return [(2, str(event.status))]
    return None


def _ssh(event: Event) -> list[tuple[int, str]] | None:
    if isinstance(event, SshBannerRequest):  # both sides (the response class derives from it)
        return [(0, event.banner)]
    if isinstance(event, SshKexinitResponse):
        return [(2, event.hassh)]
    if isinstance(event, SshKexinitRequest):
        return [(1, event.hassh)]
    return None


def _dhcp(event: Event) -> list[tuple[int, str]] | None:
    if not isinstance(event, DhcpMessageRequest):  # requests and responses (subclass)
        return None
    codes = {name: code for code, name in MESSAGE_TYPES.items()}
    kind = [(0, str(codes[event.message_type]))] if event.message_type in codes else []  # not BOOTP
    return [*kind, (1, event.client_mac)]


def _ntp(event: Event) -> list[tuple[int, str]] | None:
    if not isinstance(event, NtpTimeRequest):  # requests and responses (subclass)
        return None
    return [(0, str(event.mode)), *([(1, str(event.stratum))] if event.mode not in (6, 7) else [])]


# protocol -> (decoder names, tshark filter, tshark fields, our fields, probe only, sample captures)
PROTOCOLS: dict[str, tuple[list[str], str, list[str], Callable[[Event], list[tuple[int, str]] | None], bool, list[str]]] = {
    "s7comm": (["s7comm"], "s7comm",
               ["s7comm.param.func", "s7comm.param.userdata.funcgroup", "s7comm.data.userdata.szl_id",
                "s7comm.param.item.area", "s7comm.param.item.db", "s7comm.param.item.address.byte",
                "s7comm.param.item.address.bit", "s7comm.param.item.length",
                "s7comm.param.item.address.number"], _s7,
               False, ["snap7_s300_everything.pcapng", "s7comm_downloading_block_db1.pcap",
                       "step7_s300_stop.pcapng", "s7comm_plus.pcap", "s7comm_reading_plc_status.pcap"]),
    "enip": (["enip"], "enip", ["enip.command", "cip.sc", "cip.class", "enip.lir.name", "enip.lir.vendor",
                                "cip.instance"],
             _enip, False,
             ["cip_stop_plc.pcap", "cip_start_plc.pcap", "cip-multiple-1.pcap", "enip_test.pcap",
              "EIP-ChangeDateAttempt.pcap", "EIP-RebootorRestart.pcap"]),
    "opcua": (["opcua"], "opcua",
              ["opcua.transport.type", "opcua.servicenodeid.numeric", "opcua.security.spu"], _opcua,
              False, ["open62541_client-server_minimal.pcap", "open62541_client-server_encrypted.pcap",
                      "python_opcua-client-server_encrypted.pcap", "opcua_with-gap.pcap"]),
    "mqtt": (["mqtt"], "mqtt", ["mqtt.msgtype", "mqtt.clientid", "mqtt.topic", "mqtt.qos"], _mqtt,
             False, ["mqtt.pcap"]),
    "dns": (["dns"], "dns && !icmp", ["dns.qry.name", "dns.a", "dns.qry.type"], _dns, False,
            ["dynamic-update.pcap", "dns-binds.pcap", "dns-edns-bad-length.pcap",
             "open62541_client-server_mainloop.pcap"]),
    "tls": (["tls", "http"], "tls.handshake.type==1 || tls.handshake.type==2",
            ["tls.handshake.extensions_server_name", "tls.handshake.ja3", "tls.handshake.ja3s",
             "tls.handshake.extensions_alpn_str"], _tls,
            True, ["tls1_1.pcap", "hrr.pcap", "ssl.v3.pcap", "tls13draft16-ff52.a01.pcap",
                   "smtp-starttls.pcap"]),
    "http": (["http"], "http.request || http.response",
             ["http.host", "http.request.uri", "http.response.code", "http.user_agent"], _http, False,
             ["methods.pcap", "http-pipelining.pcap", "putty-upload.pcap", "byteranges.pcap",
              "missing-zlib-header.pcap"]),
    "dhcp": (["dhcp"], "dhcp", ["dhcp.option.dhcp", "dhcp.hw.mac_addr"], _dhcp, False,
             ["profinet_io_cm_mixed_1.pcap"]),
    "ntp": (["ntp"], "ntp", ["ntp.flags.mode", "ntp.stratum"], _ntp, False, []),
    "ssh": (["ssh"], "ssh.protocol || ssh.kex.hassh || ssh.kex.hasshserver",
            ["ssh.protocol", "ssh.kex.hassh", "ssh.kex.hasshserver"], _ssh, False,
            ["ssh.pcap", "ssh1-ssh2-fingerprints.pcap", "server-pre-banner-data.pcap"]),
}

# Where tshark and cranewatch differ, by protocol and capture: the frames and why.
WALKER = ("segments before this frame were not captured; tshark and the test's frame walker "
          "resynchronise on different PDUs")
SPURIOUS = ("tshark marks these segments spurious retransmissions (the first copy was never "
            "captured) and does not dissect them; cranewatch decodes each byte range once")
FORWARD_CLOSE = ("tshark lists the path of the Forward Open that the Forward Close ends once more "
                 "in cip.class; cranewatch lists the close's own connection path once")
CIP_PAIRING = ("an unconnected reply whose request tshark pairs with a different one of two "
               "outstanding Get_Attribute requests (cranewatch pairs in order)")
OPCUA_GAP = ("the message follows a lost segment: tshark cannot complete its reassembly, "
             "cranewatch resynchronises on the next message header")
LLMNR = "LLMNR (UDP 5355) is DNS-formatted; cranewatch decodes it as DNS, tshark names it llmnr"
EDNS_BAD = ("a malformed EDNS OPT record: tshark abandons the message and lists no answers; "
            "cranewatch keeps the A record that precedes the bad record")
DNS_LOOP = ("a compression pointer loop: cranewatch rejects the message (DecodeError), tshark "
            "shows a placeholder name")
HRR = ("the ServerHello after a TLS 1.3 HelloRetryRequest: tshark computes JA3S only once per "
       "stream, cranewatch for every ServerHello")
UPGRADE = ("TLS after STARTTLS: the flow is claimed by its first, clear-text protocol (SMTP, "
           "IMAP, POP3, XMPP), which cranewatch does not decode, so the upgrade is not followed")
SSDP = "SSDP is HTTP over UDP multicast; cranewatch decodes HTTP over TCP only"
SMUGGLE_REJECT = ("request smuggling test: an impossible chunk size or negative Content-Length; "
                  "cranewatch rejects the request (DecodeError), tshark shows it")
SMUGGLE_CL = ("a Content-Length of 2^64-1 or beyond: cranewatch waits for that body, tshark "
              "gives up on it and shows the request (and the smuggled one)")
OBS_FOLD = ("Transfer-Encoding folded onto a continuation line: cranewatch unfolds it (RFC 7230 "
            "3.2.4) and sees the smuggled request; tshark does not")
CRUFT = ("clear-text lines after the exchange look like requests (\"GET /\") to cranewatch; "
         "tshark shows them as continuation data")
QUERY = ("the QUERY method: on a non-standard port cranewatch's content probe does not know "
         "it; tshark's heuristics take the answer. On port 80 cranewatch reports the request "
         "that tshark does not")
HTTP09 = ("an HTTP/0.9 request line (no version, no headers): cranewatch reports it when its "
          "line ends; tshark waits for a blank line")
NO_URI = ("a request line without URI (\"OPTIONS HTTP/1.1\"): tshark takes the version for the "
          "URI; cranewatch, like Zeek, reads no URI and version HTTP/1.1")
UNTIL_CLOSE = ("a response without length ends at connection close: cranewatch reports it with "
               "its head; tshark when reassembly ends at FIN (or never, after a lost segment)")
PRE_BANNER = ("the server sends lines before its SSH banner; tshark then misses the banner and "
              "the KEXINIT, cranewatch skips the lines as RFC 4253 4.2 allows")
SSH_PORT = ("SSH on ports 40184/41644: tshark does not dissect it without Decode As; "
            "cranewatch identifies it by its banner")
HALF_DUPLEX = ("only the server side was captured: tshark treats the server's KEXINIT as "
               "encrypted; cranewatch fingerprints it (HASSHserver)")
SSH1 = "SSH-1.5 banners: tshark's ssh.protocol is for SSH-2 only"
KNOWN: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {
    "s7comm": {
        "s7comm_clean.pcap": ((
            398, 412, 1273, 1456, 1611, 1746, 2002, 2296, 2299, 2859, 3654, 4060,
        ), SPURIOUS),
        "tia_s300_downloadHwConfig.pcapng": ((140,), WALKER),
        "wincc_s300_setup-alarm-read_2.pcapng": ((422,), WALKER),
    },
    "enip": {
        "cip_only.pcap": ((2884, 10096, 17160, 18743, 18795, 18796, 18798), FORWARD_CLOSE),
        "EIP-ChangePortConfigurationAttempt.pcap": ((1275,), CIP_PAIRING),
        "EIP-RebootorRestart.pcap": ((31, 45, 70, 85), FORWARD_CLOSE),
        "EIP-SoftwareDownload.pcap": ((31, 45, 70, 85), FORWARD_CLOSE),
        "EIP-SoftwareUpload.pcap": ((33, 159, 224, 684, 702, 716), FORWARD_CLOSE),
        "CL5000EIP-Change Port Configuration Attempt.pcap": ((1275,), CIP_PAIRING),
        "CL5000EIP-Reboot or Restart.pcap": ((31, 45, 70, 85), FORWARD_CLOSE),
        "CL5000EIP-Software Download.pcap": ((31, 45, 70, 85), FORWARD_CLOSE),
        "CL5000EIP-Software Upload.pcap": ((33, 159, 224, 684, 702, 716), FORWARD_CLOSE),
    },
    "opcua": {
        "opcua_with-gap.pcap": ((30,), OPCUA_GAP),
        "opcua_with-gap_with-handshake.pcap": ((30,), OPCUA_GAP),
    },
    "dns": {
        "c37118_1100_unclean.pcap": ((
            74, 75, 77, 78, 1565, 1566, 1567, 1683, 1684, 1769, 1974,
        ), LLMNR),
        "dns-edns-bad-length.pcap": ((1,), EDNS_BAD),
        "dns-invalid-names.pcap": ((2,), DNS_LOOP),
    },
    "tls": {
        "hrr.pcap": ((11,), HRR),
        "imap-starttls.pcap": ((14, 15), UPGRADE),
        "pop3-starttls.pcap": ((11, 13), UPGRADE),
        "smtp-starttls.pcap": ((13, 14), UPGRADE),
        "xmpp-dialback-starttls.pcap": ((11, 13), UPGRADE),
        "xmpp-starttls.pcap": ((13, 14), UPGRADE),
    },
    "http": {
        "http-09-content-length-confusion.pcap": ((10, 12), HTTP09),
        "methods.pcap": ((14,), NO_URI),
        "no-uri.pcap": ((4,), NO_URI),
        "c37118_1100_unclean.pcap": ((
            31, 32, 47, 48, 60, 61, 86, 87, 101, 102, 129, 130, 138, 139, 149, 150, 179,
            180, 325, 326, 1119, 1120, 1952, 1953,
        ), SSDP),
        "206_example_b.pcap": ((953,), UNTIL_CLOSE),
        "variant-01-chunk_2pow64_overflow.pcap": ((4,), SMUGGLE_REJECT),
        "variant-02-cl_uint64max.pcap": ((4,), SMUGGLE_CL),
        "variant-03-cl_negative.pcap": ((4,), SMUGGLE_REJECT),
        "variant-09-te_obs_fold.pcap": ((4,), OBS_FOLD),
        "byteranges.pcap": ((6, 65), UNTIL_CLOSE),
        "concurrent-range-requests.pcap": ((32,), UNTIL_CLOSE),
        "content-length-overflow.pcap": ((8,), SMUGGLE_CL),
        "content-range-gap-skip.pcap": ((6,), UNTIL_CLOSE),
        "http-11-request-then-cruft.pcap": ((10, 15, 17), CRUFT),
        "http-bad-content-range-01.pcap": ((12, 20), UNTIL_CLOSE),
        "http-inner-transfer-encoding-reproducer.pcap": ((12, 16), UNTIL_CLOSE),
        "putty-upload.pcap": ((27, 29), UNTIL_CLOSE),
        "query-method-non-standard-port.pcap": ((6,), QUERY),
        "query-method.pcap": ((4,), QUERY),
    },
    "ssh": {
        "server-pre-banner-data.pcap": ((12, 15), PRE_BANNER),
        "ssh.pcap": ((49, 51, 54, 55, 203, 205, 208, 210), SSH_PORT),
        "ssh.server-side-half-duplex.pcap": ((
            4, 25, 206, 229, 261, 290, 310, 336, 361, 374, 600,
        ), HALF_DUPLEX),
        "ssh1-ssh2-fingerprints.pcap": ((36, 38), SSH1),
    },
}


def _manifest(shared: Path, protocol: str) -> list[Path]:
    names = {"enip": ("enip", "cip")}.get(protocol, (protocol,))
    paths: list[Path] = []
    for line in (shared / "pcaps" / "MANIFEST.tsv").read_text().splitlines()[1:]:
        columns = line.split("\t")
        if set(columns[6].split(",")) & set(names):
            path = shared / "pcaps" / columns[2]
            if path not in paths:
                paths.append(path)
    return paths


def compare(tshark: str, path: Path, protocol: str) -> dict[int, tuple[Row | None, Row | None]]:
    """Frames where our decoded fields and tshark's differ: frame -> (ours, tshark's)."""
    names, display_filter, fields, extract, probe_only, _ = PROTOCOLS[protocol]
    result = walk(path, names, use_ports=not probe_only)
    ours: dict[int, Row] = {}
    for event in result.events:
        values = extract(event)
        if values is None:
            continue
        row = ours.setdefault(event.frame, [[] for _ in fields])
        for column, value in values:
            row[column].append(value)
    theirs: dict[int, Row] = {}
    for line in tshark_fields(tshark, path, display_filter, fields):
        row = [cell.split(AGGREGATOR) if cell else [] for cell in line[1:]]
        if any(row):
            theirs[int(line[0])] = row
    if protocol == "enip":  # tshark prints 16-bit classes as 0x0037; compare as numbers
        for row in theirs.values():
            for column in (2, 5):
                row[column] = [str(int(c, 16)) for c in row[column]]
    if protocol == "dhcp":  # tshark lists the client MAC twice when option 61 repeats it
        for row in theirs.values():
            row[1] = sorted(set(row[1]))
    if protocol == "mqtt":  # our MQTT QoS is the PUBLISH header's; tshark also shows SUBSCRIBE's
        for row in theirs.values():
            if "3" not in row[0]:
                row[3] = []
    return {frame: (ours.get(frame), theirs.get(frame))
            for frame in sorted(set(ours) | set(theirs)) if ours.get(frame) != theirs.get(frame)}


def _check(tshark: str, paths: list[Path], protocol: str) -> None:
    problems: list[str] = []
    for path in paths:
        if not readable(path):
            continue  # gzip-compressed traces dpkt cannot read; tshark alone is no comparison
        differences = compare(tshark, path, protocol)
        known_frames, _reason = KNOWN.get(protocol, {}).get(path.name, ((), ""))
        unexpected = {f: d for f, d in differences.items() if f not in known_frames}
        vanished = [f for f in known_frames if f not in differences]
        for frame, (ours, theirs) in list(unexpected.items())[:5]:
            problems.append(f"{path.name} frame {frame}: cranewatch {ours} tshark {theirs}")
        if vanished:
            problems.append(f"{path.name}: listed disagreements now agree: {vanished[:10]}")
    assert not problems, "\n".join(problems)


def _sample(shared: Path, protocol: str) -> list[Path]:
    wanted = PROTOCOLS[protocol][5]
    by_name = {p.name: p for p in _manifest(shared, protocol)}
    return [by_name[name] for name in wanted if name in by_name] or list(by_name.values())[:2]


@pytest.mark.shared
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_decoders_agree_with_tshark_on_sample_captures(shared_data: Path, tshark: str,
                                                       protocol: str) -> None:
    paths = _sample(shared_data, protocol)
    assert paths, f"no sample capture of {protocol} in MANIFEST.tsv"
    _check(tshark, paths, protocol)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_decoders_agree_with_tshark_on_every_capture(shared_data: Path, tshark: str,
                                                     protocol: str) -> None:
    _check(tshark, _manifest(shared_data, protocol), protocol)


def test_mqtt5_session_through_mosquitto_agrees_with_tshark(tshark: str) -> None:
    capture = Path(__file__).parent / "data" / "proto" / "mqtt5-mosquitto.pcap"
    assert compare(tshark, capture, "mqtt") == {}
    events = walk(capture, ["mqtt"]).events
    connects = {e.client_id: e for e in events if isinstance(e, MqttConnectRequest)}
    assert connects["gw01"].protocol_level == 5 and connects["gw01"].username == "crane"
    assert connects["gw01"].password_present and not connects["crane-sub"].username_present
    publishes = [(e.topic, e.qos, e.payload) for e in events if isinstance(e, MqttPublishRequest)]
    assert ("sts07/load", 1, b"42.5") in publishes and ("sts07/wind", 2, b'{"speed": 12.5}') in publishes
