"""A finding's evidence frames as a small capture, cut from the capture the run recorded.

A network finding's evidence names its capture (``Evidence.source``, the path the analysis was
given) and the frame numbers in it (1-based, as tshark numbers them). The run that recorded the
finding keeps each input's path, absolute location, size and sha256 (``Store.evidence_inputs``);
the cut is made only from that very file: a file that is gone, or whose sha256 is no longer
the recorded one, is refused (``EvidenceFileMissing``, ``EvidenceFileChanged``; both
``InputError``, exit 3), since frame numbers of another file would be other packets.

The captures may be pcap or pcapng, and gzip-, xz- or zstd-compressed. The cut keeps each
packet's bytes, captured and original length, link type and timestamp to the nanosecond: a
classic pcap with nanosecond timestamps when the frames share one link type, else a pcapng
with one interface per link type. Frames of several captures are merged in time order.

API (used by ``cranewatch evidence pcap`` and the console)::

    finding_frames(finding: Finding) -> dict[str, tuple[int, ...]]
        capture source as named in the evidence -> its evidence frame numbers, sorted, unique
    cut_frames(path: str | Path, frames: Iterable[int]) -> list[CutPacket]
        the packets with those numbers, read from the capture (pcap/pcapng, gz/xz/zst);
        a number past the end raises InputError naming it
    write_capture(packets: Sequence[CutPacket], out: BinaryIO) -> str
        write them (time order kept as given); returns "pcap" or "pcapng"
    evidence_pcap(store: Store, finding: str, out: BinaryIO, *, crane: str | None = None) -> EvidenceCut
        all of the above for a stored finding (id or unique id prefix), after verifying each
        capture's sha256 against the run's record; raises UsageError (exit 2) for an unknown or
        ambiguous finding or one without evidence frames, EvidenceFileMissing /
        EvidenceFileChanged (exit 3) for a capture gone or changed
"""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from cranewatch.errors import CaptureError, InputError, Location, UsageError
from cranewatch.model import Finding
from cranewatch.sources.pcap import CaptureReader, PacketBatch, open_capture
from cranewatch.sources.pcapwrite import LINKTYPE_ETHERNET, PcapngWriter, PcapWriter

if TYPE_CHECKING:
    from cranewatch.store import Store

__all__ = [
    "CutPacket",
    "EvidenceCut",
    "EvidenceFileChanged",
    "EvidenceFileMissing",
    "cut_frames",
    "evidence_pcap",
    "finding_frames",
    "write_capture",
]

_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SNAPLEN = 262144


class EvidenceFileMissing(InputError):
    """The capture a run recorded is no longer where it was (exit 3)."""


class EvidenceFileChanged(InputError):
    """The capture at the recorded place is not the file the run read: its sha256 differs (exit 3)."""


@dataclass(frozen=True, slots=True)
class CutPacket:
    """One packet as it was captured: its frame number in its file, timestamp, link type, bytes."""

    source: str
    frame: int
    ts_ns: int
    linktype: int
    data: bytes
    origlen: int


@dataclass(frozen=True, slots=True)
class EvidenceCut:
    """What ``evidence_pcap`` wrote: the finding, the format, and the frames of each capture."""

    crane: str
    finding: str
    format: str  # pcap | pcapng
    packets: int
    frames: dict[str, tuple[int, ...]]  # capture source -> frame numbers written
    files: dict[str, str]  # capture source -> the file they were cut from (absolute)


def finding_frames(finding: Finding) -> dict[str, tuple[int, ...]]:
    """Capture source -> the finding's evidence frames in it (sorted, unique, positive)."""
    out: dict[str, set[int]] = {}
    for evidence in finding.evidence:
        if evidence.source and evidence.frames:
            out.setdefault(evidence.source, set()).update(f for f in evidence.frames if f > 0)
    return {source: tuple(sorted(frames)) for source, frames in out.items() if frames}


def _open_any(path: str) -> CaptureReader:
    """A reader of a pcap/pcapng, plain or gzip (the project's reader), xz or zstd."""
    with open(path, "rb") as probe:
        head = probe.read(6)
    if head.startswith(_XZ_MAGIC):
        stream: BinaryIO = lzma.open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115 (the reader closes it)
    elif head.startswith(_ZSTD_MAGIC):
        stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
    else:
        return open_capture(path)
    try:
        first = stream.read(4)
    except (lzma.LZMAError, zstandard.ZstdError, EOFError) as exc:
        stream.close()
        raise CaptureError(f"compressed capture cannot be decompressed: {exc}", Location(file=path)) from None
    return CaptureReader(path, stream, first)


def cut_frames(path: str | Path, frames: Iterable[int]) -> list[CutPacket]:
    """The packets numbered ``frames`` (1-based, tshark's numbering) of one capture, in file order.

    Reading stops after the last wanted frame. A frame the file does not hold raises
    ``InputError`` naming the file and the frame.
    """
    name = str(path)
    wanted = sorted(set(frames))
    if not wanted:
        return []
    last = wanted[-1]
    want = set(wanted)
    out: list[CutPacket] = []
    try:
        with _open_any(name) as reader:
            for batch in _batches(reader):
                hits = [i for i, n in enumerate(batch.frame.tolist()) if n in want]
                for i in hits:
                    start = int(batch.offset[i])
                    out.append(CutPacket(name, int(batch.frame[i]), int(batch.ts_ns[i]), int(batch.linktype[i]),
                                         batch.buf[start:start + int(batch.caplen[i])], int(batch.origlen[i])))
                if int(batch.frame[-1]) >= last:
                    break
    except OSError as exc:
        raise InputError(f"cannot read the capture: {exc.strerror or exc}", Location(file=name)) from None
    found = {p.frame for p in out}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise InputError(f"the capture holds no frame {missing[0]} (evidence frames {missing[:5]} missing)",
                         Location(file=name, frame=missing[0]))
    return out


def _batches(reader: CaptureReader) -> Iterator[PacketBatch]:
    for batch in reader.batches(max_packets=8192):
        if len(batch):
            yield batch


def write_capture(packets: Sequence[CutPacket], out: BinaryIO) -> str:
    """Write packets (in the order given) as a nanosecond pcap, or as pcapng (one interface per
    link type, nanosecond resolution) when their link types differ; returns the format written."""
    linktypes = list(dict.fromkeys(p.linktype for p in packets))
    if len(linktypes) <= 1:
        pcap = PcapWriter(out, linktypes[0] if linktypes else LINKTYPE_ETHERNET, _SNAPLEN, nanosecond=True)
        for p in packets:
            pcap.write(p.ts_ns, p.data, p.origlen)
        return "pcap"
    pcapng = PcapngWriter(out)
    interface = {linktype: pcapng.interface(linktype, _SNAPLEN, tsresol=9) for linktype in linktypes}
    for p in packets:
        pcapng.write(interface[p.linktype], p.ts_ns, p.data, p.origlen)
    return "pcapng"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evidence_pcap(store: Store, finding: str, out: BinaryIO, *, crane: str | None = None) -> EvidenceCut:
    """Cut a stored finding's evidence frames from the captures its runs recorded into ``out``.

    Each capture is verified first: it must be at its recorded location (or, for a run recorded
    before locations were kept, at its recorded path) with the recorded sha256.
    """
    matches = store.locate_finding(finding, crane)
    if not matches:
        raise UsageError(f"no stored finding {finding}" + (f" of {crane}" if crane else ""))
    if len(matches) > 1:
        shown = ", ".join(f"{c}/{i}" for c, i in matches[:5])
        raise UsageError(f"{finding} is ambiguous: {shown} (give more of the id, or --crane)")
    crane_name, finding_id = matches[0]
    stored = next((f for f in store.findings(crane_name) if f.id == finding_id), None)
    assert stored is not None
    frames = finding_frames(stored)
    if not frames:
        raise UsageError(f"finding {finding_id} of {crane_name} has no evidence frames to cut "
                         "(its evidence is not from a capture)")
    recorded = store.evidence_inputs(crane_name, finding_id)
    files: dict[str, str] = {}
    packets: list[CutPacket] = []
    for source, numbers in frames.items():
        record = recorded.get(source)
        if record is None:
            raise EvidenceFileMissing(f"finding {finding_id}'s capture is not an input of any run that recorded it "
                                      "(a live capture, or recorded without its inputs)", Location(file=source))
        place = Path(record.location or record.path)
        if not place.is_file():
            raise EvidenceFileMissing(f"the capture run {record.run_id} recorded is no longer there "
                                      f"(recorded sha256 {record.sha256})", Location(file=str(place)))
        actual = _sha256(place)
        if actual != record.sha256:
            raise EvidenceFileChanged(f"the capture changed since run {record.run_id} recorded it: sha256 "
                                      f"{actual}, recorded {record.sha256}; its frame numbers would be other "
                                      "packets", Location(file=str(place)))
        files[source] = str(place)
        packets.extend(cut_frames(place, numbers))
    packets.sort(key=lambda p: p.ts_ns)  # several captures merged as the analysis read them
    fmt = write_capture(packets, out)
    return EvidenceCut(crane_name, finding_id, fmt, len(packets), frames, files)
