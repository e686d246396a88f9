"""Who talked to whom in a capture: finished flows folded into conversations, for the store.

A conversation is every flow between one client and one server on one transport and server
port (with the application protocol the pipeline named): flows, packets, bytes, first and last
seen. ``ConversationBook`` is a pipeline sink that keeps them while an analysis runs; the run
records them (``Store.record_traffic_summary``) for the asset inventory and the communication
map. At most ``MAX_CONVERSATIONS`` are kept (a scan of every port would make one per port):
past that, flows of new conversations are counted in ``dropped_flows`` only.

API::

    Conversation(client, server, transport, server_port, protocol, flows, packets, bytes,
                 first_seen, last_seen)                  .to_json()
    ConversationBook()          a Sink: on_flow_end(FlowSummary) or on_flows([Flow]) folds;
                                .conversations() -> list
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cranewatch.model import Finding, iso_time

MAX_CONVERSATIONS = 20_000

__all__ = ["MAX_CONVERSATIONS", "Conversation", "ConversationBook"]


@dataclass(frozen=True, slots=True)
class Conversation:
    """Every flow from ``client`` to ``server``'s ``transport``/``server_port``."""

    client: str
    server: str
    transport: str  # tcp | udp | ...
    server_port: int
    protocol: str  # the application protocol the pipeline recognised, else transport/port
    flows: int
    packets: int
    bytes: int
    first_seen: float | None
    last_seen: float | None

    @property
    def service(self) -> str:
        """How the map labels it: ``modbus/502``, ``tcp/8443``."""
        return f"{self.protocol}/{self.server_port}" if self.protocol != self.transport else \
            f"{self.transport}/{self.server_port}"

    def to_json(self) -> dict[str, Any]:
        return {"client": self.client, "server": self.server, "transport": self.transport,
                "server_port": self.server_port, "protocol": self.protocol, "service": self.service,
                "flows": self.flows, "packets": self.packets, "bytes": self.bytes,
                "first_seen": iso_time(self.first_seen), "last_seen": iso_time(self.last_seen)}


Key = tuple[str, str, str, int, str]


class ConversationBook:
    """A pipeline sink folding finished flows into conversations (it reports no findings)."""

    series_use = "none"  # register series are not its business (``pipeline``)

    def __init__(self, limit: int = MAX_CONVERSATIONS) -> None:
        self.limit = limit
        self.dropped_flows = 0
        self._book: dict[Key, list[Any]] = {}

    def on_event(self, event: Any) -> None:
        return None

    def on_series(self, series: Any) -> None:
        return None

    def on_flow_end(self, flow: Any) -> None:
        protocol = flow.protocol or flow.transport
        key = (flow.client, flow.server, flow.transport, int(flow.server_port), protocol)
        entry = self._book.get(key)
        if entry is None:
            if len(self._book) >= self.limit:
                self.dropped_flows += 1
                return
            self._book[key] = [1, flow.packets, flow.bytes, flow.first_seen, flow.last_seen]
            return
        entry[0] += 1
        entry[1] += flow.packets
        entry[2] += flow.bytes
        entry[3] = min(entry[3], flow.first_seen)
        entry[4] = max(entry[4], flow.last_seen)

    def on_flows(self, flows: list[Any]) -> None:
        """Finished flows of the flow table (``flows.Flow``) in a run, folded as
        ``on_flow_end`` folds their summaries, without making the summaries."""
        from cranewatch.pipeline import ip_text

        book = self._book
        for flow in flows:
            transport = flow.transport
            key = (ip_text(flow.client), ip_text(flow.server), transport, flow.server_port,
                   flow.protocol or transport)
            to_server, to_client = flow.to_server, flow.to_client
            packets = to_server.packets + to_client.packets
            size = to_server.bytes + to_client.bytes
            entry = book.get(key)
            if entry is None:
                if len(book) >= self.limit:
                    self.dropped_flows += 1
                    continue
                book[key] = [1, packets, size, flow.first_seen, flow.last_seen]
                continue
            entry[0] += 1
            entry[1] += packets
            entry[2] += size
            entry[3] = min(entry[3], flow.first_seen)
            entry[4] = max(entry[4], flow.last_seen)

    def finish(self) -> list[Finding]:
        return []

    def conversations(self) -> list[Conversation]:
        """Every conversation kept, in a stable order (client, server, transport, port)."""
        return [Conversation(*key, *values) for key, values in sorted(self._book.items())]
