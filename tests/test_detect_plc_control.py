"""plc-control: every operation of rules/plc_control.yaml, replayed from its examples; the
public S7/CIP captures give the expected findings through the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cranewatch.detect import adapt
from cranewatch.detect.plc_control import operations
from cranewatch.model import Severity
from detect_helpers import EWS, PLC, T0, request, run, sts07

enip = pytest.importorskip("cranewatch.protocols.enip")
s7comm = pytest.importorskip("cranewatch.protocols.s7comm")
CipRequest, operation_of, S7JobRequest = enip.CipRequest, enip.operation_of, s7comm.S7JobRequest

BASE: dict[str, Any] = {"ts": T0, "frame": 5, "src": "192.0.2.50", "dst": "192.0.2.10", "sport": 1100,
                        "source": "t.pcap"}


def example_event(example: dict[str, Any]) -> Any:
    """The decoder event an example of the rule data describes."""
    if example["protocol"] == "modbus":
        return request(BASE["src"], BASE["dst"], example["function"], sub_function=example["sub_function"])
    if example["protocol"] == "s7comm" and "group" in example:
        return s7comm.S7UserDataRequest(**BASE, dport=102, pdu_ref=1, group=example["group"],
                                        subfunction=example["subfunction"], method_type=4, sequence=0)
    if example["protocol"] == "s7comm":
        return S7JobRequest(**BASE, dport=102, pdu_ref=1, function=example["function"],
                            pi_service=example.get("pi_service"))
    if example["protocol"] == "enip":
        classes = (example["class"],) if "class" in example else (0x8E,)
        return CipRequest(**BASE, dport=44818, service=example["service"], classes=classes,
                          operation=operation_of(example["service"], classes))
    if example["protocol"] == "dnp3":
        from cranewatch.protocols.dnp3 import Dnp3Request
        return Dnp3Request(**BASE, dport=20000, link_src=1, link_dst=10, app_control=0xC0,
                           function=example["function"])
    return None


def cases() -> list[tuple[str, dict[str, Any]]]:
    return [(name, ex) for name, op in operations().items() for ex in op["examples"]
            if ex["protocol"] != "opcua"]


@pytest.mark.parametrize(("operation", "example"), cases())
def test_rule_data_examples(operation: str, example: dict[str, Any]) -> None:
    event = example_event(example)
    findings = [f for f in run([*adapt.facts_from_event(event)], crane=None) if f.category == "plc-control"]
    assert len(findings) == 1, (operation, example)
    f = findings[0]
    assert f.title.startswith(operations()[operation]["title"])
    assert f.severity == Severity.parse(operations()[operation]["severity"])
    assert f.src == BASE["src"] and f.dst is not None and f.dst.startswith(BASE["dst"])


def test_modbus_echo_diagnostic_is_not_control() -> None:
    assert run([request(EWS, PLC, 8, sub_function=0)]) == []


def test_restart_from_the_ews_in_its_window_is_low() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    in_window = datetime(2026, 11, 24, 8, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
    (f,) = run([request(EWS, PLC, 8, ts=in_window, sub_function=1)], profile=sts07())
    assert f.severity == Severity.LOW and "maintenance window" in f.title
    (g,) = run([request("10.20.7.30", PLC, 8, ts=in_window, sub_function=1)], profile=sts07())
    assert g.severity == Severity.CRITICAL


PUBLIC = [
    # (capture under ICS-Security-Tools/pcaps, expected operations) — checked with
    # tshark -Y 's7comm.param.func in {0x29 0x1a 0x28} or cip.sc in {5 6 7}'
    ("s7/snap7_s300_stop.pcapng", {"S7 CPU stop"}),
    ("s7/s7comm_downloading_block_db1.pcap", {"Program download", "Program block inserted"}),
    ("EthernetIP/cip_stop_plc.pcap", {"CIP stop"}),
    ("EthernetIP/cip_start_plc.pcap", {"CIP start"}),
    ("quickdraw/CL5000EIP-Software Download.pcap", {"CIP stop", "CIP reset", "CIP start"}),
    ("s7/step7_s300_copyRamToRom.pcapng", {"S7 copy RAM to ROM"}),
    # tshark: frame 43 "Function group: Time functions (7), Subfunction: Set clock (2)", Request
    ("s7/s7comm_reading_setting_plc_time.pcap", {"S7 set PLC clock"}),
    # tshark: frame 386 "Set Attribute List (0x04)", path Class 0x8B instance 1
    ("openics/EIP-ChangeTimeAttempt.pcap", {"CIP set of the controller's clock"}),
    ("openics/EIP-ChangeDateAttempt.pcap", {"CIP set of the controller's clock"}),
    # tshark: frame 2398 "Set Attribute Single (0x10)", "Ethernet Link, Instance 1, Attribute 6"
    ("openics/EIP-ChangePortConfigurationAttempt.pcap", {"CIP change of the device's network port"}),
    # tshark: frames 1062/1232 "Unknown Service (0x4c)/(0x4b)", path Class 0x8E, Class 0x74
    ("openics/EIP-LockPLCAttempt.pcap", {"Rockwell controller lock/unlock"}),
    ("EthernetIP/cip_unlock_cpu.pcap", {"Rockwell controller lock/unlock"}),
    # DNP3 (tshark dnp3.al.func 13, 14, 27, 5)
    ("dnp3/cold_restart_and_response.pcap", {"DNP3 cold restart"}),
    ("dnp3/warm_restart_and_response.pcap", {"DNP3 warm restart"}),
    ("dnp3/file_delete.pcap", {"DNP3 file deleted"}),
    ("dnp3/directoperate_and_response.pcap", {"DNP3 control operation"}),
]


@pytest.mark.parametrize(("capture", "expected"), PUBLIC)
def test_public_ics_captures(shared_data: Path, capture: str, expected: set[str]) -> None:
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    result = analyze([shared_data / "pcaps" / "ICS-Security-Tools" / "pcaps" / capture],
                     sinks=[build_sink()])
    titles = {f.title for f in result.findings if f.category == "plc-control"}
    for prefix in expected:
        assert any(t.startswith(prefix) for t in titles), (prefix, titles)


def test_modbus_diagnostics_counts_match_tshark(shared_data: Path, tshark: str) -> None:
    import subprocess

    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    capture = shared_data / "pcaps/ICS-Security-Tools/pcaps/ModbusTCP/modbus_test_data_part1.pcap"
    out = subprocess.run([tshark, "-r", str(capture), "-Y", "modbus.func_code == 8 && tcp.dstport == 502",
                          "-T", "fields", "-e", "modbus.diagnostic_code"],
                         capture_output=True, text=True, check=True).stdout.split()
    result = analyze([capture], sinks=[build_sink()])
    counts = {f.evidence[0].values["sub_function"]: f.count for f in result.findings
              if f.category == "plc-control" and f.evidence[0].values.get("function") == 8
              and f.evidence[0].values["sub_function"] in (1, 4)}
    assert counts == {1: out.count("1"), 4: out.count("4")}
    assert counts[1] > 0 and counts[4] > 0


def _opcua_write(src: str = "192.0.2.50", dst: str = "192.0.2.10") -> Any:
    from cranewatch.detect.facts import PlcCommand

    return PlcCommand(ts=T0, frame=9, src=src, dst=dst, sport=1100, dport=4840, source="t.pcap",
                      protocol="opcua", operation="opcua-write", target="ns=1;s=setpoint")


def test_opcua_write_without_profile_or_baseline_is_noted_low() -> None:
    # A miss of the public-data evaluation (docs/evaluation.md): open62541's ordinary
    # client-server session wrote and called methods and gave two high findings.
    (f,) = run([_opcua_write()], crane=None)
    assert f.severity == Severity.LOW and f.title.endswith("(no profile or baseline to judge it)")


def test_opcua_write_by_a_client_the_baseline_never_saw_stays_high() -> None:
    from detect_helpers import conv, learn

    baseline = learn([conv("192.0.2.60", "192.0.2.10", 4840)])
    (f,) = run([_opcua_write()], baseline=baseline, crane=None)
    assert f.severity == Severity.HIGH


def test_open62541_client_server_session_is_not_an_alarm(shared_data: Path) -> None:
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    capture = shared_data / "pcaps" / "icsnpp-opcua-binary" / "pcaps" / "open62541_client-server_mainloop.pcap"
    findings = analyze([capture], sinks=[build_sink()]).findings
    assert sorted((f.title.split(" by ")[0], str(f.severity)) for f in findings) == [
        ("OPC UA method call on the controller", "low"), ("OPC UA write to the controller's nodes", "low")]


def _tshark_node_ids(tshark: str, capture: Path, service: int) -> dict[int, list[str]]:
    """The node ids of each request of ``service`` as tshark dissects them, in OPC UA's text
    notation, after the request header's two (authentication token, additional header type)."""
    import subprocess

    rows = subprocess.run([tshark, "-r", str(capture), "-Y", f"opcua.servicenodeid.numeric == {service}",
                           "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
                           "-e", "frame.number", "-e", "opcua.nodeid.encodingmask", "-e", "opcua.nodeid.nsindex",
                           "-e", "opcua.nodeid.numeric", "-e", "opcua.nodeid.string"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    nodes: dict[int, list[str]] = {}
    for row in rows:
        frame, masks, *columns = row.split("\t")
        namespaces, numerics, strings = (iter(c.split("|") if c else []) for c in columns)
        texts = []
        for mask in masks.split("|"):
            encoding = int(mask, 16) & 0x0F
            namespace = int(next(namespaces)) if encoding else 0  # the two-byte form has none
            prefix = f"ns={namespace};" if namespace else ""
            if encoding in (0, 1, 2):
                texts.append(f"{prefix}i={next(numerics)}")
            elif encoding == 3:
                texts.append(f"{prefix}s={next(strings)}")
            else:
                texts.append(f"{prefix}?")  # the token (GUID or opaque): not compared
        nodes[int(frame)] = texts[2:]
    return nodes


def test_opcua_targets_are_node_ids_as_tshark_shows_them(shared_data: Path, tshark: str) -> None:
    # The target of an OPC UA write or call was the Python text of a tuple of node ids
    # ("('i=85', 'ns=1;i=62541')"): it is now one node id like an S7 block or a CIP tag, the node
    # written or the method called, with the called method's object under ``object``.
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    capture = shared_data / "pcaps" / "icsnpp-opcua-binary" / "pcaps" / "open62541_client-server_mainloop.pcap"
    writes, calls = _tshark_node_ids(tshark, capture, 673), _tshark_node_ids(tshark, capture, 712)
    assert writes == {88: ["ns=1;s=the.answer"], 92: ["ns=1;s=the.answer"]}  # read by hand in -V too
    assert calls == {120: ["i=85", "ns=1;i=62541"]}
    findings = {f.evidence[0].values["service"]: f for f in analyze([capture], sinks=[build_sink()]).findings
                if f.evidence[0].values.get("protocol") == "opcua"}
    write, call = findings[673], findings[712]
    assert list(write.evidence[0].frames) == sorted(writes)
    assert write.evidence[0].values["target"] == sorted({nodes[0] for nodes in writes.values()})
    assert "object" not in write.evidence[0].values
    assert list(call.evidence[0].frames) == sorted(calls)
    assert call.evidence[0].values["object"] == [calls[120][0]]
    assert call.evidence[0].values["target"] == [calls[120][1]]
