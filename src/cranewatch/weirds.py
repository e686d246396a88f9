"""Problems of the traffic met while reassembling it, as warnings of the result (Zeek's
"weirds"): what, where (the flow, the frame) and how much.

``content_gap``: bytes of one direction of a TCP connection the capture never showed and the
pipeline gave up waiting for because the peer acknowledged past them (``flows.Stream.acked``):
the receiver had them, so a SPAN port or tap dropped them and no retransmission will come.
Zeek logs the same as the weird ``content_gap``; tshark flags the segment after the hole
``tcp.analysis.lost_segment`` and the acknowledgement ``tcp.analysis.ack_lost_segment``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cranewatch.decode import ip_text
from cranewatch.result import InputWarning

if TYPE_CHECKING:
    from cranewatch.flows import Flow, Gap


def content_gap(flow: Flow, to_server: bool, gap: Gap, source: str, ack_frame: int) -> InputWarning:
    """The warning of one hole given up at the peer's ACK (frame ``ack_frame``): located at the
    frame of the first segment after the hole."""
    client = f"{ip_text(flow.client)}:{flow.client_port}"
    server = f"{ip_text(flow.server)}:{flow.server_port}"
    way = f"{client} -> {server}" if to_server else f"{server} -> {client}"
    return InputWarning(
        f"{flow.protocol}: content_gap: {gap.lost:,} bytes of {flow.transport} {way} were not in "
        f"the capture before this frame; the peer acknowledged them in frame {ack_frame}, so "
        "they were given up (lost by the capture, not the network)", source, gap.frame, "capture")
