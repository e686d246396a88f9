"""new-asset: new hosts, MACs, services and protocols on the crane LAN."""

from __future__ import annotations

from pathlib import Path

from cranewatch.baseline import Baseline
from cranewatch.detect.facts import Binding
from cranewatch.model import Severity
from detect_helpers import CMS, OCR, PLC, T0, conv, learn, normal_crane, run, sts07


def test_new_host_on_the_crane_lan() -> None:
    baseline = learn(normal_crane())
    findings = run([conv("10.20.7.77", PLC, 502, T0, client_macs=("02:00:00:00:07:77",))],
                   profile=sts07(), baseline=baseline)
    (f,) = [f for f in findings if f.category == "new-asset"]
    assert f.title == "New host 10.20.7.77 on the crane LAN (MAC 02:00:00:00:07:77)"
    assert f.severity == Severity.MEDIUM


def test_known_traffic_is_quiet() -> None:
    baseline = learn(normal_crane())
    assert [f for f in run(normal_crane(T0 + 3600), profile=sts07(), baseline=baseline)
            if f.category == "new-asset"] == []


def test_new_service_on_a_known_host_is_low() -> None:
    baseline = learn(normal_crane())
    findings = run([conv(OCR, CMS, 2323, T0, protocol="telnet")], baseline=baseline)
    (f,) = [f for f in findings if f.category == "new-asset"]
    assert f.severity == Severity.LOW and "TCP/2323" in f.title


def test_half_open_probes_do_not_make_services() -> None:
    baseline = learn(normal_crane())
    probe = conv(OCR, CMS, 2323, T0, to_server=1, to_client=1)
    assert [f for f in run([probe], baseline=baseline) if f.category == "new-asset"] == []


def test_a_known_ip_answering_from_a_new_mac() -> None:
    baseline = learn(normal_crane())
    spoof = Binding(ts=T0, frame=2, src=PLC, dst=CMS, source="t.pcap", ip=PLC, mac="02:66:66:66:66:66")
    (f,) = [f for f in run([spoof], baseline=baseline) if f.category == "new-asset"]
    assert "02:66:66:66:66:66" in f.title


def test_a_negotiated_ftp_data_port_is_no_new_service(tmp_path: Path) -> None:
    """The FTP server is a new service (TCP/21); the passive port its 227 named is not."""
    from test_detect_lateral import CMS as SERVER
    from test_detect_lateral import PLC2 as CLIENT
    from test_detect_lateral import _ftp_session, analyze, baseline, build_sink, polling, write_pcap

    base = baseline(tmp_path)
    frames, _, _ = _ftp_session(CLIENT, SERVER, size=3_000, data_port=40134)
    result = analyze([write_pcap(tmp_path / "a.pcap", polling() + frames)],
                     sinks=[build_sink(None, base)])
    services = sorted(f.dst for f in result.findings if f.rule == "new-asset")
    assert services == [f"{SERVER}:21"]


def _saved(baseline: Baseline, *, drop_named: bool) -> Baseline:
    """``baseline`` saved and loaded again; without "named" it is the form saved before the
    baseline listed the protocol names its tool could give."""
    from cranewatch.baseline import from_json, to_json

    data = to_json(baseline)
    if drop_named:
        del data["named"]
    return from_json(data)


def test_a_name_the_learning_tool_could_not_give_is_no_new_protocol() -> None:
    """A baseline saved before SMB was named saw TCP/445 answered but unnamed; today's run names
    that service "smb": the service is known and the name is no change of protocol."""
    old = _saved(learn([*normal_crane(), conv(OCR, CMS, 445, T0)]), drop_named=True)
    assert "smb" not in old.named and "telnet" in old.named
    findings = run([conv(OCR, CMS, 445, T0 + 60, protocol="smb")], baseline=old)
    assert [f for f in findings if f.category == "new-asset"] == []


def test_a_name_the_old_tool_could_give_is_still_a_new_protocol() -> None:
    """The exception is only for names added later: telnet on a port the old baseline saw
    unnamed is a protocol that tool would have named, so it is new."""
    old = _saved(learn([*normal_crane(), conv(OCR, CMS, 4000, T0)]), drop_named=True)
    findings = run([conv(OCR, CMS, 4000, T0 + 60, protocol="telnet")], baseline=old)
    (f,) = [f for f in findings if f.category == "new-asset"]
    assert f.title == f"New protocol telnet on {CMS}:4000"


def test_a_baseline_that_could_name_smb_flags_smb_on_a_port_it_saw_as_http() -> None:
    now = _saved(learn([*normal_crane(), conv(OCR, CMS, 445, T0, protocol="http")]), drop_named=False)
    assert "smb" in now.named
    findings = run([conv(OCR, CMS, 445, T0 + 60, protocol="smb")], baseline=now)
    (f,) = [f for f in findings if f.category == "new-asset"]
    assert f.title.startswith("New protocol smb on ")
