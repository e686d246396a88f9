"""Turn decoder events, finished flows and raw payloads into the facts detectors judge.

One function per source of facts; each reads the decoder's event by its ``kind`` and field
names (the decoders' documented contract) and yields zero or more facts. Events this module
does not know pass through unchanged when a detector accepts them (Modbus requests and
responses, register series) and are otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cranewatch.detect.facts import (
    Binding,
    Conversation,
    DhcpMessage,
    DnsQuery,
    Fact,
    HttpRequest,
    MqttPublish,
    Payload,
    PlcCommand,
    RemoteSession,
    TlsHello,
)

# S7 job functions (s7comm.param.func) and PI services, in plc-control's operation names.
# Only the engineering station's opening jobs count: during a download the PLC itself sends
# the download-block jobs (0x1B/0x1C) back to the station, and one upload is 0x1D then many 0x1E.
S7_FUNCTIONS = {0x29: "cpu-stop", 0x1A: "program-download", 0x1D: "program-upload"}
S7_PI_SERVICES = {"P_PROGRAM": "cpu-start", "_DELE": "block-delete", "_INSE": "block-activate",
                  "_MODU": "copy-ram-to-rom", "_GARB": "memory-compress"}
# CIP request operations (protocols.enip.operation_of) in plc-control's names.
CIP_OPERATIONS = {"stop": "cip-stop", "reset": "cip-reset", "run": "cip-start",
                  "program_download_initiate": "program-transfer", "program_download": "program-transfer",
                  "program_write_partial": "program-transfer", "program_clear": "program-transfer",
                  "program_upload_initiate": "program-upload", "program_upload": "program-upload"}
# OPC UA service request node ids (binary encoding ids) that change or command the server.
OPCUA_SERVICES = {673: "opcua-write", 712: "opcua-call"}
DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
             65: "HTTPS", 255: "ANY"}
# Events no detector reads (answers, connection set-up): skipped without a look.
IGNORED_KINDS = frozenset({"dns_query_response", "mqtt_connect_request", "mqtt_connect_response",
                           "mqtt_control_request", "mqtt_subscribe_request", "tls_server_hello_response",
                           "tls_certificate_response", "s7comm_job_response", "s7comm_connect_request",
                           "cip_service_response", "enip_command_request", "enip_command_response",
                           "enip_io_request", "opcua_service_response", "ntp_time_request",
                           "ntp_time_response"})
REMOTE_KINDS = {"ssh": "ssh", "rdp": "rdp", "vnc": "vnc", "rfb": "vnc", "telnet": "telnet",
                "teamviewer": "teamviewer", "anydesk": "anydesk"}


def _base(event: Any) -> dict[str, Any]:
    return {"ts": float(event.ts), "frame": int(event.frame), "src": str(event.src),
            "dst": str(event.dst), "sport": int(getattr(event, "sport", 0) or 0),
            "dport": int(getattr(event, "dport", 0) or 0), "source": str(getattr(event, "source", ""))}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def facts_from_event(event: Any) -> list[Any]:
    """Facts one decoder event gives; unknown kinds give nothing."""
    kind: str = getattr(event, "kind", "")
    if kind.startswith("modbus_"):
        return [event]  # the common case, first: detectors read Modbus events as they are
    if kind in IGNORED_KINDS:
        return []
    return list(_facts(event, kind))


def _facts(event: Any, kind: str) -> Iterator[Any]:
    proto = kind.split("_", 1)[0]
    if kind == "s7comm_job_request":
        yield from _s7(event)
    elif kind == "cip_service_request":
        operation = CIP_OPERATIONS.get(getattr(event, "operation", ""))
        if operation:
            yield PlcCommand(**_base(event), protocol="enip", operation=operation,
                             target=_text(getattr(event, "tag", None) or ""),
                             values={"service": event.service, "classes": list(event.classes)})
    elif kind == "opcua_service_request":
        service = getattr(event, "service_id", None)
        if isinstance(service, int) and service in OPCUA_SERVICES:
            yield PlcCommand(**_base(event), protocol="opcua", operation=OPCUA_SERVICES[service],
                             target=_text(getattr(event, "node_ids", "") or ""),
                             values={"service": service})
    elif proto == "arp":
        mac, ip = getattr(event, "sender_mac", ""), getattr(event, "sender_ip", "")
        if mac and ip and ip != "0.0.0.0" and mac != "00:00:00:00:00:00":
            yield Binding(**_base(event), ip=ip, mac=mac)
    elif proto == "dns" and kind.endswith("request"):
        for name in _names(event):
            yield DnsQuery(**_base(event), name=name, qtype=_qtype(getattr(event, "qtype", 1)))
    elif proto == "tls" and ("client_hello" in kind or kind.endswith("hello_request")):
        yield TlsHello(**_base(event), sni=getattr(event, "sni", None) or getattr(event, "server_name", None),
                       ja3=getattr(event, "ja3_md5", None) or getattr(event, "ja3", None) or None,
                       ja4=getattr(event, "ja4", None) or None)
    elif proto == "http" and kind.endswith("response"):
        body = _bytes(getattr(event, "body", b""))
        if body:  # a response carries data from the server (src) to the client (dst)
            yield Payload(**_base(event), from_client=True, data=body, transport="http")
    elif proto == "http" and kind.endswith("request"):
        yield HttpRequest(**_base(event), method=_text(getattr(event, "method", "")),
                          host=getattr(event, "host", None), uri=_text(getattr(event, "uri", "")),
                          body=_bytes(getattr(event, "body", b"")),
                          user_agent=getattr(event, "user_agent", None))
    elif proto == "mqtt" and "publish" in kind:
        yield MqttPublish(**_base(event), topic=_text(getattr(event, "topic", "")),
                          payload=_bytes(getattr(event, "payload", b"")))
    elif kind == "syslog_message_request":
        # Log lines leave the crane too: what they say is checked like any clear payload.
        text = f"{getattr(event, 'host', '')} {getattr(event, 'app', '')}: {getattr(event, 'message', '')}"
        yield Payload(**_base(event), from_client=True, data=text.encode(), transport="syslog")
    elif kind == "conn_session_response":
        conversation = _zeek_conn(event)
        yield conversation
        remote = REMOTE_KINDS.get(conversation.protocol)
        if remote is not None:  # conn.log alone still says which connections were SSH, RDP ...
            fields = {k: getattr(conversation, k) for k in ("ts", "frame", "src", "dst", "sport", "dport", "source")}
            yield RemoteSession(**fields, protocol=remote, detail=f"Zeek service {conversation.protocol}")
    elif proto == "dhcp":
        yield from _dhcp(event)
    elif proto in REMOTE_KINDS or proto == "remote":
        yield from _remote(event, proto)


def _names(event: Any) -> list[str]:
    """Every question's name of a DNS query (``protocols.dns.DnsQueryRequest``)."""
    names = getattr(event, "qnames", None)
    if isinstance(names, tuple | list) and names:
        return [_text(n) for n in names]
    name = getattr(event, "qname", None) or getattr(event, "name", None)
    return [_text(name)] if name else []


def _qtype(value: Any) -> str:
    if isinstance(value, int):
        return DNS_TYPES.get(value, str(value))
    return _text(value) or "A"


def _s7(event: Any) -> Iterator[PlcCommand]:
    function = getattr(event, "function", None)
    operation = S7_FUNCTIONS.get(function) if function is not None else None
    if function == 0x28:
        service = (getattr(event, "pi_service", "") or "").upper()
        operation = S7_PI_SERVICES.get(service, "cpu-start" if service else None)
    if operation:
        yield PlcCommand(**_base(event), protocol="s7comm", operation=operation,
                         target=_text(getattr(event, "block", None) or getattr(event, "filename", None)),
                         values={"function": function,
                                 "pi_service": getattr(event, "pi_service", None) or ""})


def _dhcp(event: Any) -> Iterator[Fact]:
    message = _text(getattr(event, "message_type", "")).lower()
    names = {"1": "discover", "2": "offer", "3": "request", "5": "ack", "6": "nak", "8": "inform"}
    message = names.get(message, message)
    router = getattr(event, "router", None) or getattr(event, "routers", None) or ()
    dns = getattr(event, "dns_servers", None) or getattr(event, "dns", None) or ()
    yield DhcpMessage(**_base(event), message_type=message,
                      client_mac=getattr(event, "client_mac", None),
                      server_ip=getattr(event, "server_id", None) or getattr(event, "server_ip", None)
                      or (event.src if message in ("offer", "ack") else None),
                      server_mac=getattr(event, "server_mac", None),
                      router=tuple(_as_list(router)), dns=tuple(_as_list(dns)))
    client_mac, your_ip = getattr(event, "client_mac", None), getattr(event, "your_ip", None)
    if message == "ack" and client_mac and your_ip and your_ip != "0.0.0.0":
        yield Binding(**_base(event), ip=str(your_ip), mac=str(client_mac))


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _remote(event: Any, proto: str) -> Iterator[RemoteSession]:
    name = REMOTE_KINDS.get(proto) or REMOTE_KINDS.get(_text(getattr(event, "protocol", "")).lower())
    if name is None:
        return
    detail = getattr(event, "banner", None) or getattr(event, "version", None) or \
        getattr(event, "detail", None) or ""
    base = _base(event)
    # Decoders report both directions; the session's client is the flow's client.
    if getattr(event, "from_client", True) is False or kind_is_response(event):
        base.update(src=base["dst"], dst=base["src"], sport=base["dport"], dport=base["sport"])
    yield RemoteSession(**base, protocol=name, detail=_text(detail)[:120])


def kind_is_response(event: Any) -> bool:
    return str(getattr(event, "kind", "")).endswith("_response")


def conversation(flow: Any) -> Conversation:
    """A finished flow (``flows.FlowSummary``) as a fact."""
    return Conversation(
        ts=float(flow.first_seen), frame=int(flow.first_frame), src=flow.client, dst=flow.server,
        sport=int(flow.client_port), dport=int(flow.server_port), source=flow.source,
        transport=flow.transport, protocol=flow.protocol or "", last_ts=float(flow.last_seen),
        packets_to_server=int(flow.packets_to_server), packets_to_client=int(flow.packets_to_client),
        bytes_to_server=int(flow.bytes_to_server), bytes_to_client=int(flow.bytes_to_client),
        client_macs=tuple(flow.client_macs), server_macs=tuple(flow.server_macs),
        handshake=bool(flow.handshake),
    )


# Zeek's service names where they differ from the decoders' protocol names.
ZEEK_SERVICES = {"ssl": "tls", "dtls": "tls", "krb": "kerberos", "krb_tcp": "kerberos"}


def _zeek_conn(event: Any) -> Conversation:
    """A Zeek conn.log record (``sources.zeek.ConnEvent``) as a finished flow without MACs.

    Zeek logs no Ethernet addresses by default, so hidden-uplink cannot judge these; the
    handshake is Zeek's ``S`` (SYN) then ``h`` (SYN-ACK) history, or an established state.
    """
    service = str(getattr(event, "service", "") or "").split(",")[0]
    history = str(getattr(event, "history", "") or "")
    state = str(getattr(event, "state", "") or "")
    duration = getattr(event, "duration", None) or 0.0
    return Conversation(
        **_base(event), transport=str(getattr(event, "transport", "") or "tcp"),
        protocol=ZEEK_SERVICES.get(service, service), last_ts=float(event.ts) + float(duration),
        packets_to_server=int(getattr(event, "orig_pkts", None) or 0),
        packets_to_client=int(getattr(event, "resp_pkts", None) or 0),
        bytes_to_server=int(getattr(event, "orig_bytes", None) or 0),
        bytes_to_client=int(getattr(event, "resp_bytes", None) or 0),
        handshake=("S" in history and "h" in history) or state in ("SF", "S1", "S2", "S3", "RSTO", "RSTR"),
    )


def payload(flow: Any, from_client: bool, data: bytes, ts: float, frame: int) -> Payload:
    """Clear bytes of an unclaimed flow (the pipeline's ``on_payload`` hook) as a fact."""
    client: Any = getattr(flow, "client", "")
    server: Any = getattr(flow, "server", "")
    if isinstance(client, bytes) and isinstance(server, bytes):
        from cranewatch.decode import ip_text

        client, server = ip_text(client), ip_text(server)
    transport = getattr(flow, "transport", None) or ("udp" if getattr(flow, "proto", 6) == 17 else "tcp")
    return Payload(ts=ts, frame=frame, src=str(client), dst=str(server),
                   sport=int(getattr(flow, "client_port", 0)), dport=int(getattr(flow, "server_port", 0)),
                   source=str(getattr(flow, "source", "")), from_client=from_client, data=bytes(data),
                   transport=str(transport))
