"""The protocol registry: a protocol is one module, the pipeline names none, and what a
protocol declares (adapters, profile names, transports) is where the rest reads it."""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cranewatch.detect.base import Context
from cranewatch.detect.engine import DetectionSink
from cranewatch.detect.facts import PlcCommand, where
from cranewatch.pipeline import Analysis
from cranewatch.protocols import registry
from cranewatch.protocols.base import DecoderSpec, Event, FlowContext
from cranewatch.protocols.framing import endpoints
from cranewatch.protocols.registry import (
    Adapter,
    ProtocolSpec,
    RegistrationError,
    register_protocol,
    unregister_protocol,
)
from modbus_capture import udp_frame, write_pcap

SRC = Path(__file__).resolve().parent.parent / "src" / "cranewatch"


def _words(path: Path) -> set[str]:
    """Every word of a source file, snake_case and CamelCase split, lower-cased."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", path.read_text())
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if w}


def test_the_pipeline_names_no_protocol() -> None:
    names = set(registry.load_all())
    for spec in registry.PROTOCOLS.values():
        names |= set(spec.policy_names()) | {d.name for d in spec.decoders}
        names |= {a for d in spec.decoders for a in d.aliases}
    names |= {"modbus", "arp", "mbap", "profinet", "dcp"}
    names -= {"any"}
    found = names & _words(SRC / "pipeline.py")
    assert not found, f"pipeline.py names protocols: {sorted(found)}"


def test_profile_and_policy_read_the_protocols_declarations() -> None:
    from cranewatch.policy.inservice import TRANSPORTS
    from cranewatch.profile import PROTOCOLS

    # The names and transports the profile format has always accepted (docs/profile), now
    # derived from the modules: enip and syslog allow rules open what their docs say only.
    assert set(PROTOCOLS) == {"modbus", "s7comm", "enip", "opcua", "mqtt", "http", "https", "tls",
                              "dns", "ntp", "syslog", "rtsp", "ssh", "rdp", "vnc", "telnet",
                              "dhcp", "dnp3", "ftp", "smb", "any"}
    assert TRANSPORTS["enip"] == ("tcp",) and TRANSPORTS["syslog"] == ("udp",)
    assert TRANSPORTS["dns"] == ("tcp", "udp") and TRANSPORTS["any"] is None


# ------------------------------------------------------------------------------ a toy protocol

TOY_PORT = 47999


def _toy_module() -> types.ModuleType:
    """A protocol module made here, as a new protocol's file would be: events, decoder,
    adapter, one registration line."""
    module = types.ModuleType("cranewatch_test_toy")
    sys.modules[module.__name__] = module

    @dataclass(frozen=True, slots=True, kw_only=True)
    class ToyStopRequest(Event):
        kind: ClassVar[str] = "toy_stop_request"
        target: str

    ToyStopRequest.__module__ = module.__name__

    class ToyDecoder:
        def __init__(self, ctx: FlowContext) -> None:
            self.ctx = ctx

        def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
            if not data.startswith(b"STOP "):
                return []
            return [ToyStopRequest(ts=ts, frame=frame, target=data[5:].decode(),
                                   **endpoints(self.ctx, from_client))]

        def gap(self, from_client: bool) -> None:
            return None

    def stop_command(event: Any) -> list[PlcCommand]:
        return [PlcCommand(**where(event), protocol="toy", operation="cpu-stop", target=event.target)]

    module.ToyStopRequest = ToyStopRequest  # type: ignore[attr-defined]
    module.ToyDecoder = ToyDecoder  # type: ignore[attr-defined]
    module.stop_command = stop_command  # type: ignore[attr-defined]
    return module


class _Recorder:
    """A detector that keeps every PLC command it is shown."""

    name: ClassVar[str] = "recorder"
    accepts: ClassVar[tuple[type, ...]] = (PlcCommand,)

    def __init__(self) -> None:
        self.seen: list[PlcCommand] = []

    def observe(self, fact: Any, ctx: Context) -> None:
        self.seen.append(fact)

    def finish(self, ctx: Context) -> list[Any]:
        return []


def test_a_toy_protocol_registered_from_one_module_reaches_a_detector(tmp_path: Path) -> None:
    toy = _toy_module()
    spec = ProtocolSpec(
        name="toy", module=toy.__name__,
        decoders=(DecoderSpec(name="toy", transport="udp", ports=frozenset({TOY_PORT}),
                              factory=toy.ToyDecoder),),
        adapters={toy.ToyStopRequest: Adapter(toy.stop_command, (PlcCommand,))},
    )
    register_protocol(spec)
    try:
        capture = write_pcap(tmp_path / "toy.pcap", [
            udp_frame("10.9.0.5", "10.9.0.10", 50000, TOY_PORT, b"STOP hoist-drive"),
            udp_frame("10.9.0.5", "10.9.0.10", 50000, TOY_PORT, b"noise"),
        ])
        recorder = _Recorder()
        result = Analysis([DetectionSink(Context(), [recorder])]).run([capture])
    finally:
        unregister_protocol("toy")
        del sys.modules[toy.__name__]
    assert [(f.protocol, f.operation, f.target, f.src, f.dst, f.frame) for f in recorder.seen] == [
        ("toy", "cpu-stop", "hoist-drive", "10.9.0.5", "10.9.0.10", 1)]
    assert result.events == {"toy_stop_request": 1}
    assert [p.protocol for p in result.protocols] == ["toy"]
    assert "toy" not in registry.PROTOCOLS  # and it is gone again


def test_an_event_class_without_an_adapter_is_refused_at_registration() -> None:
    toy = _toy_module()
    try:
        with pytest.raises(RegistrationError, match="ToyStopRequest have no adapter"):
            register_protocol(ProtocolSpec(name="toy", module=toy.__name__, adapters={}))
        assert "toy" not in registry.PROTOCOLS
    finally:
        del sys.modules[toy.__name__]


def test_a_profile_name_or_ethertype_given_twice_is_refused() -> None:
    registry.load_all()
    with pytest.raises(RegistrationError, match="'https' already given"):
        register_protocol(ProtocolSpec(name="toy2", module="nowhere", policy={"https": ("tcp",)}))
    arp_link = registry.PROTOCOLS["arp"].links[0]
    with pytest.raises(RegistrationError, match="ethertype 0x0806 registered twice"):
        register_protocol(ProtocolSpec(name="toy3", module="nowhere", links=(arp_link,)))
    assert "toy2" not in registry.PROTOCOLS and "toy3" not in registry.PROTOCOLS


def test_every_registered_event_kind_has_a_declared_adapter() -> None:
    """Each event class of every protocol module is in its declaration (the check at
    registration covers what exists; this names them all once)."""
    for spec in registry.load_all().values():
        module = sys.modules[spec.module]
        events = {v for v in vars(module).values()
                  if isinstance(v, type) and issubclass(v, Event) and v.__module__ == spec.module}
        assert events <= set(spec.adapters), spec.name


# ------------------------------------------------------------------------------ PROFINET

CHANGE_IP = "pcaps/ICS-Security-Tools/pcaps/profinet/PROFINET-RT-DCP/ChangeIPUsingDCP.pcap"


def test_profinet_is_registered_by_its_module_with_its_ethertype_and_pnio_cm_port() -> None:
    spec = registry.load_all()["profinet"]
    assert [link.ethertype for link in spec.links] == [0x8892]
    assert [(d.transport, sorted(d.ports)) for d in spec.decoders] == [("udp", [34964])]
    assert 0x8892 in registry.links() and 0x0806 in registry.links()


def test_a_dcp_set_ip_from_a_host_that_is_no_engineering_station_is_plc_control(
        shared_data: Path, tmp_path: Path) -> None:
    """ChangeIPUsingDCP.pcap, read with tshark: frames 1-2 a DCP Identify (ServiceID 5) of
    X208-BORD (08:00:06:93:cf:32) at 192.168.0.6; frame 3 a Set (ServiceID 4) of its IP suite
    to 192.168.0.10/24 gw 192.168.0.1 from 00:0c:29:ba:09:ea, frame 4 the device's answer."""
    from cranewatch.commands.analyze import detector_sinks
    from cranewatch.profile import load_profile

    capture = shared_data / CHANGE_IP
    result = Analysis(detector_sinks(None, None, None)).run([capture])
    dcp = [f for f in result.findings if f.rule == "profinet-dcp-set"]
    assert [(f.category, f.severity.name, f.src, f.dst, f.evidence[0].frames) for f in dcp] == [
        ("plc-control", "HIGH", "00:0c:29:ba:09:ea", "192.168.0.6", (3, 4))]
    assert dcp[0].evidence[0].values["new_ip"] == "192.168.0.10/255.255.255.0 gw 192.168.0.1"
    assert result.events["profinet_dcp_request"] == 2 and result.events["profinet_dcp_response"] == 2

    # The same Set from the profile's engineering station is no finding.
    profile_text = (Path(__file__).resolve().parent.parent / "src/cranewatch/data/profiles/sts-07.toml").read_text()
    ews = 'role = "ews"\nip = "10.20.0.50"\n'
    assert ews in profile_text
    profile_path = tmp_path / "ews.toml"
    profile_path.write_text(profile_text.replace(ews, ews + 'mac = "00:0c:29:ba:09:ea"\n'))
    profile = load_profile(profile_path)
    result = Analysis(detector_sinks(profile, None, None)).run([capture])
    assert not [f for f in result.findings if f.rule.startswith("profinet-dcp")]


def test_zeek_logs_are_read_by_the_protocol_that_declares_them(tmp_path: Path) -> None:
    from cranewatch.sources.zeek import read_zeek

    toy = _toy_module()

    def zeek_toy(record: Any, result: Any) -> list[Event]:
        return [toy.ToyStopRequest(ts=1.5, frame=record.line, src=str(record.get("id.orig_h")),
                                   dst=str(record.get("id.resp_h")), source=record.file,
                                   target=str(record.get("target")))]

    register_protocol(ProtocolSpec(
        name="toy", module=toy.__name__, zeek={"toy_stop": zeek_toy},
        adapters={toy.ToyStopRequest: Adapter(toy.stop_command, (PlcCommand,))}))
    try:
        log = tmp_path / "toy_stop.log"
        log.write_text("#separator \\x09\n#path\ttoy_stop\n#fields\tts\tid.orig_h\tid.resp_h\ttarget\n"
                       "#types\ttime\taddr\taddr\tstring\n1.5\t10.9.0.5\t10.9.0.10\thoist-drive\n")
        result = read_zeek([tmp_path])
    finally:
        unregister_protocol("toy")
        del sys.modules[toy.__name__]
    assert [(e.kind, e.src, e.dst, e.target, e.frame) for e in result.events] == [  # type: ignore[attr-defined]
        ("toy_stop_request", "10.9.0.5", "10.9.0.10", "hoist-drive", 5)]
    assert result.logs == [str(log)]
