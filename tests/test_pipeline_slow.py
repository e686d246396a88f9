"""The slow path of the pipeline: a decoder that refuses a PDU is warned about and asked again
for what followed, at most 64 times per feed; in-order segments reach the decoder unchanged."""

from __future__ import annotations

from pathlib import Path

from cranewatch.errors import DecodeError, Location
from cranewatch.flows import IPPROTO_TCP, Flow
from cranewatch.pipeline import Analysis
from cranewatch.protocols.base import Event
from cranewatch.protocols.ssh import SshBannerRequest, SshBannerResponse
from modbus_capture import Conversation, write_pcap


class _Refusing:
    """Raises ``errors`` times, then gives one event per call."""

    def __init__(self, errors: int) -> None:
        self.errors = errors
        self.calls: list[bytes] = []

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        self.calls.append(data)
        if self.errors:
            self.errors -= 1
            raise DecodeError(f"broken PDU, {self.errors} more")
        return [SshBannerRequest(ts=ts, frame=frame, src="a", dst="b", banner="SSH-2.0-x")]

    def gap(self, from_client: bool) -> None: ...


def _flow(decoder: _Refusing) -> Flow:
    flow = Flow(key=b"k", proto=IPPROTO_TCP, client=bytes(16), client_port=50000,
                server=bytes(16), server_port=22, client_is_a=True, first_seen=0.0,
                last_seen=0.0, first_frame=1, source="t.pcap")
    flow.protocol, flow.decoder = "ssh", decoder
    return flow


def _emitted(analysis: Analysis) -> list[Event]:
    events: list[Event] = []
    analysis.emit = events.append  # type: ignore[method-assign]
    return events


def test_a_refused_pdu_is_one_warning_and_its_bytes_are_never_fed_again() -> None:
    analysis = Analysis()
    events = _emitted(analysis)
    decoder = _Refusing(errors=2)
    flow = _flow(decoder)
    analysis._feed(flow, True, b"\x00" * 8, 1.5, 7, "t.pcap")
    analysis._feed(flow, True, b"\x01" * 8, 1.6, 8, "t.pcap")
    analysis._feed(flow, True, b"\x02" * 8, 1.7, 9, "t.pcap")
    assert decoder.calls == [b"\x00" * 8, b"\x01" * 8, b"\x02" * 8]  # no b"" re-feeds
    assert [(w.message, w.frame, w.kind) for w in analysis.warnings] == [
        ("ssh: broken PDU, 1 more", 7, "decode"), ("ssh: broken PDU, 0 more", 8, "decode")]
    assert [e.frame for e in events] == [9]


class _Reporting(_Refusing):
    """Reports a problem beside its event instead of raising (the Modbus decoder's way)."""

    def __init__(self) -> None:
        super().__init__(errors=0)
        self.problems: list[DecodeError] = []

    def feed(self, from_client: bool, data: bytes, ts: float, frame: int) -> list[Event]:
        self.problems.append(DecodeError("odd PDU", Location(frame=frame - 1)))
        return super().feed(from_client, data, ts, frame)


def test_problems_beside_events_become_warnings_at_their_frame() -> None:
    analysis = Analysis()
    events = _emitted(analysis)
    decoder = _Reporting()
    analysis._feed(_flow(decoder), True, b"\x00" * 8, 1.0, 3, "t.pcap")
    assert [(w.message, w.file, w.frame, w.kind) for w in analysis.warnings] == [
        ("ssh: odd PDU", "t.pcap", 2, "decode")]
    assert [e.frame for e in events] == [3] and decoder.problems == []


def test_ssh_banners_split_over_in_order_segments(tmp_path: Path) -> None:
    c = Conversation("10.20.0.50", "10.20.7.10", client_port=40100, server_port=22)
    frames = c.handshake()
    frames.append(c.send(False, b"SSH-2.0-Open"))  # 4
    frames.append(c.send(False, b"SSH_9.2p1\r\n"))  # 5: completes the server banner
    frames.append(c.send(True, b"SSH-2.0-dropbear_2022.83\r\n"))  # 6
    events: list[Event] = []

    class Sink:
        def on_event(self, event: Event) -> None:
            events.append(event)

        def on_series(self, series: object) -> None: ...

        def on_flow_end(self, flow: object) -> None: ...

        def finish(self) -> list[object]:
            return []

    Analysis([Sink()]).run([write_pcap(tmp_path / "ssh.pcap", frames)])
    server, client = events
    assert isinstance(server, SshBannerResponse) and server.frame == 5
    assert server.software == "OpenSSH_9.2p1"
    assert isinstance(client, SshBannerRequest) and client.frame == 6
