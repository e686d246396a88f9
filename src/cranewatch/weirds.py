"""Problems of the traffic met while reassembling it, as warnings of the result (Zeek's
"weirds"): what, where (the flow, the frame) and how much.

``content_gap``: bytes of one direction of a TCP connection the capture never showed and the
pipeline gave up waiting for because the peer acknowledged past them (``flows.Stream.acked``):
the receiver had them, so a SPAN port or tap dropped them and no retransmission will come.
Zeek logs the same as the weird ``content_gap``; tshark flags the segment after the hole
``tcp.analysis.lost_segment`` and the acknowledgement ``tcp.analysis.ack_lost_segment``.

A badly dropping capture has a hole every few packets, and the run keeps at most
``pipeline.MAX_WARNINGS`` warnings: one warning per hole would push the decode warnings that
follow out of the document. So ``GapTally`` (``Analysis.warn``) lets through the first
``PER_FLOW`` holes of each flow and ``MAX_SINGLE`` of the run; the others are summed per flow
and said at the end of the run (``summaries``), a warning per flow for the first
``MAX_FLOW_SUMS`` such flows, then one line for the rest. Every hole is counted exactly once.
It is a function of the order of the warnings only, so the serial run, ``analyze --jobs N``
(whose main process gets every gap warning in the serial order) and every batch size agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cranewatch.decode import ip_text
from cranewatch.result import InputWarning

if TYPE_CHECKING:
    from cranewatch.flows import Flow, Gap

PER_FLOW = 3  # holes of one flow said one by one
MAX_SINGLE = 100  # holes of the run said one by one (all flows)
MAX_FLOW_SUMS = 100  # flows whose other holes get a summary of their own; then one line
MAX_FLOWS = 100_000  # flows tallied one by one (memory; a monitor never ends its run)


@dataclass(frozen=True, slots=True)
class GapWarning(InputWarning):
    """The warning of one hole, with what the tally needs (its JSON is ``InputWarning``'s)."""

    flow: tuple[Any, ...] = ()  # the flow's identity: (file, key, first frame)
    protocol: str = ""
    connection: str = ""  # "tcp client <-> server"
    lost: int = 0


def content_gap(flow: Flow, to_server: bool, gap: Gap, source: str, ack_frame: int) -> GapWarning:
    """The warning of one hole given up at the peer's ACK (frame ``ack_frame``): located at the
    frame of the first segment after the hole."""
    client = f"{ip_text(flow.client)}:{flow.client_port}"
    server = f"{ip_text(flow.server)}:{flow.server_port}"
    way = f"{client} -> {server}" if to_server else f"{server} -> {client}"
    return GapWarning(
        f"{flow.protocol}: content_gap: {gap.lost:,} bytes of {flow.transport} {way} were not in "
        f"the capture before this frame; the peer acknowledged them in frame {ack_frame}, so "
        "they were given up (lost by the capture, not the network)", source, gap.frame, "capture",
        (flow.source, flow.key, flow.first_frame), str(flow.protocol),
        f"{flow.transport} {client} <-> {server}", gap.lost)


@dataclass(slots=True)
class _FlowGaps:
    first: GapWarning  # the flow's first hole (its names)
    shown: int = 0  # holes said one by one
    holes: int = 0  # holes summed
    lost: int = 0
    first_frame: int | None = None
    last_frame: int | None = None


class GapTally:
    """Which ``content_gap`` warnings are said one by one, and the sums of the others."""

    def __init__(self) -> None:
        self.flows: dict[tuple[Any, ...], _FlowGaps] = {}
        self.single = 0
        self.untold = [0, 0]  # holes and bytes of flows beyond ``MAX_FLOWS`` (not told apart)

    def keep(self, warning: GapWarning) -> bool:
        """True: say this hole on its own; False: it is counted in its flow's summary."""
        tally = self.flows.get(warning.flow)
        if tally is None:
            if len(self.flows) >= MAX_FLOWS:
                self.untold[0] += 1
                self.untold[1] += warning.lost
                return False
            tally = self.flows[warning.flow] = _FlowGaps(warning)
        if tally.shown < PER_FLOW and self.single < MAX_SINGLE:
            tally.shown += 1
            self.single += 1
            return True
        tally.holes += 1
        tally.lost += warning.lost
        if tally.first_frame is None:
            tally.first_frame = warning.frame
        tally.last_frame = warning.frame
        return False

    def summaries(self) -> list[InputWarning]:
        """The holes not said one by one, at the end of the run: per flow (in the order of
        their first hole), then one line for the flows beyond ``MAX_FLOW_SUMS``."""
        out: list[InputWarning] = []
        holes = lost = flows = 0
        for tally in self.flows.values():
            if not tally.holes:
                continue
            if len(out) < MAX_FLOW_SUMS:
                w = tally.first
                out.append(InputWarning(
                    f"{w.protocol}: content_gap: {tally.holes:,} more holes of {w.connection} "
                    f"were not in the capture, {tally.lost:,} bytes in all, the first before "
                    f"frame {tally.first_frame}, the last before frame {tally.last_frame}; the "
                    "peer acknowledged them, so they were given up (lost by the capture, not "
                    "the network)", w.file, tally.first_frame, "capture"))
                continue
            holes, lost, flows = holes + tally.holes, lost + tally.lost, flows + 1
        if flows or self.untold[0]:
            more = f"{flows:,} more flows" + (
                f" ({self.untold[0]:,} of them in flows past the first {MAX_FLOWS:,} with "
                "holes, not told apart)" if self.untold[0] else "")
            out.append(InputWarning(
                f"content_gap: {holes + self.untold[0]:,} more holes in {more} were not in the "
                f"capture, {lost + self.untold[1]:,} bytes in all (given up at the peers' "
                "acknowledgements)", None, None, "capture"))
        self.flows.clear()
        self.untold = [0, 0]
        return out
