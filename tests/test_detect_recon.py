"""recon: device identification sweeps, port and address scans, unusual register ranges."""

from __future__ import annotations

from pathlib import Path

from cranewatch.model import Severity
from cranewatch.protocols.modbus import ModbusResponse
from detect_helpers import CMS, OCR, PLC, T0, conv, learn, normal_crane, request, run, series, sts07


def probe(src: str, dst: str, port: int, i: int):  # type: ignore[no-untyped-def]
    return conv(src, dst, port, T0 + i * 0.01, to_server=1, to_client=1, bytes_to_server=60,
                bytes_to_client=54, frame=i + 1, sport=33000)


def test_port_scan_of_one_host() -> None:
    scanner = "10.20.7.66"
    findings = run([probe(scanner, PLC, port, i) for i, port in enumerate(range(1, 200, 7))], profile=sts07())
    (f,) = [f for f in findings if f.category == "recon"]
    assert f.src == scanner and f.dst == PLC and f.severity == Severity.HIGH
    assert "port scan" in f.title and f.count == len(range(1, 200, 7))


def test_address_sweep_on_one_port() -> None:
    findings = run([probe("172.16.3.9", f"172.16.3.{h}", 502, h) for h in range(1, 30)], crane=None)
    (f,) = [f for f in findings if f.category == "recon"]
    assert "address sweep" in f.title and len(f.evidence[0].values["targets"]) == 29
    assert f.dst == "172.16.3.0/24"


def test_a_few_ports_on_several_hosts_is_a_scan() -> None:
    items = [probe("10.20.7.66", f"10.20.7.{h}", p, h * 10 + i)
             for h in (10, 20, 30, 254, 199) for i, p in enumerate((22, 8080, 502))]
    (f,) = [f for f in run(items, profile=sts07()) if f.category == "recon"]
    assert f.title.startswith("scan by 10.20.7.66: 5 host(s), 3 port(s), 15 probes")
    assert f.dst == "10.20.7.0/24" and f.first_seen == items[0].ts


def test_a_few_connections_are_not_a_scan() -> None:
    items = [probe(CMS, PLC, p, i) for i, p in enumerate((502, 102, 80))]
    assert [f for f in run(items, profile=sts07()) if f.category == "recon"] == []


def test_device_identification_sweep_over_units() -> None:
    items = [request("10.20.7.66", PLC, 43, frame=i + 1, unit_id=u, sub_function=14) for i, u in enumerate(range(1, 6))]
    (f,) = [f for f in run(items, profile=sts07()) if f.category == "recon"]
    assert "sweep of 5 targets (1 host(s))" in f.title and f.severity == Severity.HIGH
    assert f.dst == f"{PLC}:502"


def test_known_master_reading_an_unusual_range() -> None:
    baseline = learn(normal_crane())
    findings = run([series(CMS, PLC, 3, 100, 50, n=5)], baseline=baseline)
    (f,) = [f for f in findings if f.category == "recon"]
    assert "HR:100-149" in f.title and f.src == CMS
    # the normal ranges stay quiet
    assert [f for f in run(normal_crane(), baseline=baseline) if f.category == "recon"] == []


def test_many_illegal_address_answers() -> None:
    answers = [ModbusResponse(ts=T0 + i, frame=i + 1, src=PLC, dst=OCR, sport=502, dport=40000,
                              source="t.pcap", transaction_id=i, unit_id=1, function=3, exception_code=2)
               for i in range(6)]
    (f,) = [f for f in run(answers, profile=sts07()) if f.category == "recon"]
    assert f.src == OCR and f.count == 6


def test_undefined_function_codes_are_fuzzing() -> None:
    # A miss of the public-data evaluation (docs/evaluation.md): Zeek's modbus.log of a fuzzed
    # session logs only "unknown-29", "unknown-33", ...; no Modbus stack sends those codes.
    fuzz = [request(OCR, PLC, code, frame=10 + i) for i, code in enumerate((29, 33, 54))]
    (f,) = [f for f in run(fuzz) if f.category == "recon"]
    assert f.severity == Severity.MEDIUM and "3 malformed Modbus request(s)" in f.title
    assert f.evidence[0].values["problems"] == ["undefined function code 29", "undefined function code 33",
                                                "undefined function code 54"]
    # user-defined (65-72, 100-110) and vendor codes (UMAS 90) are not
    assert [f for f in run([request(OCR, PLC, code) for code in (65, 90, 100)]) if f.category == "recon"] == []


def test_zeek_modbus_log_of_a_fuzzed_session(shared_data: Path) -> None:
    from cranewatch.detect.engine import build_sink
    from cranewatch.pipeline import analyze

    logs = shared_data / "zeek-logs" / "scripts.base.protocols.modbus.exception_handling"
    findings = [f for f in analyze([logs], sinks=[build_sink()]).findings if f.category == "recon"]
    # by hand from its modbus.log: requests with codes 29, 33, 35, 36, 37, 38, 54 and 63 are
    # undefined (65 and 71 are user-defined); 4 ILLEGAL_FUNCTION answers stay under 5
    (f,) = findings
    assert f.src == "192.168.66.235" and f.dst == "166.161.16.230:502" and f.count == 8
