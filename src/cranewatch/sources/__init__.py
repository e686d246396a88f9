"""Where packets and events come from: capture files, live interfaces, Zeek logs."""

from cranewatch.sources.pcap import CaptureReader, PacketBatch, open_capture

__all__ = ["CaptureReader", "PacketBatch", "open_capture"]
