"""Zeek logs as a source: TSV (``#fields`` headers) and JSON-lines logs → cranewatch events.

Ports that already run Zeek (alone, in Malcolm or Security Onion) feed its logs instead of
captures. ``read_zeek`` takes files or directories, reads every log it recognises by its
``#path`` header or file name (conn, dns, ssl + x509, http, ssh, modbus, the ICSNPP
modbus_detailed, s7comm, enip and cip logs, mqtt_connect/publish/subscribe) and maps each
record to the same event classes the protocol decoders produce, so the same detectors run.
conn.log (and x509.log, joined to ssl.log) are mapped here; every other log by the protocol
module that declares it (``registry.ProtocolSpec.zeek``, with ``zeek_fields``' readers). A
conn.log connection another log announced (ftp.log's ``data_channel``: an event whose adapter
gives ``ExpectedConnection``) carries its announcing session, and the announced protocol's name
(``ftp-data``) when Zeek's ``service`` names none, as a capture's flow would (``_Announcements``).

Several sensors' rotated trees (``logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz``) are read
as one stream (``ZeekStream``): files in time order, duplicates read once, every log stream of
every input merged by time through a bounded reorder window, events handed on in batches
(docs/zeek.md). Events from logs carry the log file in ``source`` (after ``node@`` when the
log names the node that wrote it) and the line number in ``frame`` (the
evidence a finding can point to). A log carries less than a capture: ``ZeekResult.notes`` says what could not be known (for
example Modbus register values when only ``modbus.log`` is present, masked timestamps of
test baselines, fields a trimmed log left out).

The logs may come from a compromised sensor, so nothing in them can end the reading: a line
that is not JSON, has the wrong number of fields, or values of the wrong type (a text port, a
timestamp of 1e300, a number where a list belongs), a bad ``#separator``, a damaged gzip file
or a line over ``MAX_LINE_BYTES`` (skipped without being held in memory) is a problem in
``ZeekResult.problems`` located at file:line, and reading goes on with the next line or log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from cranewatch.detect.adapt import ZEEK_CONVERSATION
from cranewatch.detect.expected import ExpectedConnections
from cranewatch.detect.facts import ExpectedConnection
from cranewatch.errors import InputError, Location
from cranewatch.protocols import registry
from cranewatch.protocols.base import Event
from cranewatch.protocols.registry import ProtocolSpec, register_protocol
from cranewatch.protocols.tls import TlsCertificateResponse
from cranewatch.sources.input_files import (
    GZIP_MAGIC,
    DamagedCompression,
    GunzipStream,
    open_regular_file,
    refuse_unless_regular,
)
from cranewatch.sources.zeek_fields import (
    ZeekRecord,
    ZeekResult,
    ends,
    finite,
    integer,
    record_ts,
    short,
    text,
)

# The logs read: conn.log and x509.log (joined to ssl.log) here, the rest as the protocol
# modules map them (``registry.ProtocolSpec.zeek``).
SUPPORTED = ("conn", "x509", *registry.zeek_mappers())
# A Zeek log line longer than this is skipped (and reported) without being held in memory;
# real lines stay far below (an http.log line with an 8 KB URI, an x509 line of a long SAN list).
MAX_LINE_BYTES = 1024 * 1024
MAX_PROBLEMS_PER_LOG = 50  # listed per log file; the rest are counted
_READ_BLOCK = 1024 * 1024
# What a value of the wrong type raises while a record is mapped to events: a problem of that
# line, never the end of the reading. (RecursionError: JSON nested thousands deep.)
_BAD_VALUE = (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError, RecursionError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnEvent(Event):
    """A connection summary from Zeek's conn.log (one per finished connection).

    ``src``/``sport`` are the originator, ``dst``/``dport`` the responder. ``service``: the
    protocols Zeek recognised (comma-separated); ``state``: Zeek's ``conn_state`` (S0, SF,
    REJ, ...); ``history`` its flag history. Byte and packet counts are None when absent.
    """

    kind: ClassVar[str] = "conn_session_response"
    uid: str
    transport: str = ""
    service: str = ""
    duration: float | None = None
    orig_bytes: int | None = None
    resp_bytes: int | None = None
    state: str = ""
    history: str = ""
    orig_pkts: int | None = None
    resp_pkts: int | None = None
    # the session that announced this connection (client, client port, server, server port),
    # from another log (ftp.log's data_channel): ``_Announcements``
    announced_by: tuple[str, int, str, int] | None = None


class _Announcements:
    """Connections another log announced (ftp.log's ``data_channel``: any event whose adapter
    gives ``ExpectedConnection`` facts), matched to conn.log records as the stream hands them
    on in time order: a match gets its announcing session and, when Zeek named no service,
    the announced protocol's name (as a capture's flow is named, ``ProtocolRun.expected``)."""

    def __init__(self) -> None:
        self.expected = ExpectedConnections()
        self._announces: dict[str, Any] = {}  # event kind -> its adapter's converter, or None

    def see(self, event: Event) -> Event:
        if type(event) is ConnEvent:
            return self._match(event) if self.expected else event
        kind = event.kind
        convert = self._announces.get(kind, False)
        if convert is False:
            adapter = registry.adapter_for(kind)
            convert = self._announces[kind] = (
                adapter.convert if adapter is not None and ExpectedConnection in adapter.gives else None)
        if convert is not None:
            for fact in convert(event):
                if isinstance(fact, ExpectedConnection):
                    self.expected.add(fact)
        return event

    def _match(self, conn: ConnEvent) -> ConnEvent:
        found = self.expected.announced_at(conn.transport or "tcp", conn.src, conn.dst, conn.dport, conn.ts)
        if found is None:
            return conn
        return dataclasses.replace(conn, service=conn.service or found.protocol,
                                   announced_by=(found.src, found.sport, found.dst, found.dport))


# --- reading --------------------------------------------------------------------------------

class _Problems:
    """The problems of one log: the first ``MAX_PROBLEMS_PER_LOG`` kept, the rest counted."""

    def __init__(self, path: Path, into: list[InputError] | None) -> None:
        self.path = str(path)
        self._into = into  # None: raise the first problem
        self.count = 0

    def add(self, message: str, line: int | None, always: bool = False) -> None:
        """Note a problem; ``always``: listed even past the limit (a damaged file, said once)."""
        problem = InputError(message, Location(file=self.path, line=line))
        if self._into is None:
            raise problem
        self.count += not always
        if always or self.count <= MAX_PROBLEMS_PER_LOG:
            self._into.append(problem)

    def close(self) -> None:
        if self._into is not None and self.count > MAX_PROBLEMS_PER_LOG:
            self._into.append(InputError(f"{self.count - MAX_PROBLEMS_PER_LOG} more lines with "
                                         "problems in this log, not listed", Location(file=self.path)))


_TEXT_RUN = re.compile(rb"[^\n]+")


def _numbered_lines(path: Path, problems: _Problems) -> Iterator[tuple[int, str]]:
    """The log's non-empty lines (without the line end) with their numbers, plain or gzip.

    Read in blocks; a line over ``MAX_LINE_BYTES`` is reported and skipped as it streams by: at
    most one block and ``MAX_LINE_BYTES`` are held, whatever the line's length. Empty lines are
    counted, not visited one by one (a megabyte of newlines is one ``count``).
    """
    with open_regular_file(str(path), "Zeek log") as raw:
        stream: Any = raw
        if raw.read(2) == GZIP_MAGIC:
            stream = GunzipStream(raw, str(path))
        raw.seek(0)
        number = 0  # of the last line that ended
        tail = b""  # the start of a line that continues in the next block
        skipping = False  # inside a line already reported as too long
        while True:
            try:
                block = stream.read(_READ_BLOCK)
            except DamagedCompression as exc:
                where = f" at compressed byte {exc.location.offset}" if exc.location else ""
                problems.add(f"{exc.message}{where}; the lines before it were read", number + 1, always=True)
                block = b""
            if not block:
                break
            last_end = block.rfind(b"\n")
            if last_end >= 0:
                first_end = block.find(b"\n")
                number += 1  # the line that was going on when the block began ends here
                if not skipping:
                    yield from _line(number, tail + block[:first_end], problems)
                tail, skipping = b"", False
                at = first_end + 1
                for run in _TEXT_RUN.finditer(block, at, last_end):
                    number += run.start() - at + 1  # the empty lines before it, and itself
                    yield from _line(number, run.group(), problems)
                    at = run.end() + 1
                number += last_end + 1 - at  # empty lines at the end of the block
                block = block[last_end + 1 :]
            if not skipping:
                tail += block
                if len(tail) > MAX_LINE_BYTES:
                    problems.add(f"line longer than {MAX_LINE_BYTES} bytes: skipped", number + 1)
                    skipping, tail = True, b""
        if tail and not skipping:
            yield from _line(number + 1, tail, problems)


def _line(number: int, data: bytes, problems: _Problems) -> Iterator[tuple[int, str]]:
    if len(data) > MAX_LINE_BYTES:
        problems.add(f"line longer than {MAX_LINE_BYTES} bytes: skipped", number)
    elif data:
        yield number, data.removesuffix(b"\r").decode("utf-8", "replace")


_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(text: str) -> str:
    r"""Zeek escapes the separator and non-printables as ``\xNN`` in TSV logs.

    The escaped bytes are put back and the whole decoded as UTF-8 (an escaped multi-byte
    character comes back whole); a ``\x`` not followed by two hex digits stays as it is.
    """
    if "\\x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "replace")


def _separator(value: str) -> str | None:
    r"""The ``#separator`` header's value (``\x09``, or literal text); None if unusable."""
    text = _unescape(value)
    return text if text and not any(c in text for c in ("\n", "\r", "\\x")) else None


def _convert(text: str, type_name: str, meta: dict[str, str]) -> Any:
    if text == meta.get("unset_field", "-"):
        return None
    container = type_name.startswith(("set[", "vector[", "table["))
    if container:
        if text == meta.get("empty_field", "(empty)"):
            return ()
        inner = type_name[type_name.index("[") + 1:-1]
        return tuple(_convert(part, inner, meta) for part in text.split(meta.get("set_separator", ",")))
    if text == meta.get("empty_field", "(empty)"):
        return ""
    if type_name in ("count", "int", "port"):
        try:
            return int(text)
        except ValueError:
            return None
    if type_name in ("double", "interval", "time"):
        try:
            return float(text)
        except ValueError:
            return None  # test baselines mask times as XXXXXXXXXX.XXXXXX
    if type_name == "bool":
        return text == "T"
    return _unescape(text)


def read_log(path: Path, problems: list[InputError] | None = None) -> tuple[str, Iterator[ZeekRecord]]:
    """The log's path name (``dns``, ``conn``...) and its records; TSV or JSON lines.

    Streams: only the header is read here; records are parsed as the iterator is consumed.
    A line that cannot be read is added to ``problems`` (file:line) and skipped; without a
    ``problems`` list the first one is raised. A log that is no Zeek log at all (no
    ``#fields`` header, not JSON) raises ``InputError``.
    """
    log_problems = _Problems(path, problems)
    numbered = _numbered_lines(path, log_problems)
    meta: dict[str, str] = {"separator": "\t"}
    fields: list[str] = []
    types: list[str] = []
    first: tuple[int, str] | None = None
    try:
        for number, line in numbered:
            if line.startswith("### ") or not line.strip():
                continue  # btest baselines start with a comment line
            if line.lstrip().startswith("{"):
                name = path.name.split(".")[0]
                return name, _json_records(name, path, [(number, line)], numbered, log_problems)
            if not line.startswith("#"):
                if not fields and _looks_like_field_names(line):
                    # zeek-cut output keeps one plain header line of field names and no types
                    fields = line.split("\t")
                    types = [_type_by_name(f) for f in fields]
                    meta["path"] = path.name.split(".")[0]
                    continue
                first = (number, line)
                break
            if line.startswith("#separator"):
                value = line[len("#separator"):]
                separator = _separator(value[1:] if value.startswith(" ") else value)
                if separator is None:
                    log_problems.add(f"unusable #separator {value[:20]!r}: tab assumed", number)
                else:
                    meta["separator"] = separator
                continue
            key, _, value = line[1:].partition(meta["separator"])
            if key == "fields":
                fields = value.split(meta["separator"])
            elif key == "types":
                types = value.split(meta["separator"])
            else:
                meta[key] = value
    except OSError as exc:
        raise InputError(f"cannot read Zeek log: {exc.strerror or exc}", Location(file=str(path))) from None
    name = meta.get("path", path.name.split(".")[0])
    if not fields and first is None:
        log_problems.close()
        return name, iter(())  # an empty log: nothing happened
    if not fields:
        raise InputError("Zeek log without a #fields header (neither TSV nor JSON lines)",
                         Location(file=str(path), line=1))
    if len(types) != len(fields):
        types = ["string"] * len(fields)
    separator = meta["separator"]

    def records() -> Iterator[ZeekRecord]:
        lines = [first] if first is not None else []
        for number, line in itertools.chain(lines, numbered):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.split(separator)
            if len(parts) != len(fields):
                log_problems.add(f"{len(parts)} values for {len(fields)} fields: line skipped", number)
                continue
            try:
                values = {f: _convert(v, t, meta) for f, v, t in zip(fields, parts, types, strict=True)}
            except _BAD_VALUE as exc:
                log_problems.add(f"unreadable value ({type(exc).__name__}: {short(exc)}): line skipped",
                                 number)
                continue
            yield ZeekRecord(name, values, _source(path, values), number)
        log_problems.close()

    return name, records()


def _source(path: Path, values: dict[str, Any]) -> str:
    """Where a record came from: its file, after the node that wrote it when the log names one
    (``worker-1@logs/2024-05-01/conn.13:00:00-14:00:00.log.gz``; see ``NODE_FIELDS``)."""
    for name in NODE_FIELDS:
        node = values.get(name)
        if isinstance(node, str) and node:
            node = "".join(c if c.isprintable() and c != "@" else "?" for c in node[:MAX_NODE_NAME])
            return f"{node}@{path}"
    return str(path)


# Types of common fields, for logs whose #types header was cut away (zeek-cut output).
_NAMED_TYPES = {"ts": "time", "id.orig_p": "port", "id.resp_p": "port", "duration": "interval",
                "rtt": "interval", "answers": "vector[string]", "TTLs": "vector[interval]",
                "tags": "set[string]", "cert_chain_fps": "vector[string]",
                "client_cert_chain_fps": "vector[string]", "topics": "vector[string]",
                "qos_levels": "vector[count]", "values": "vector[count]"}
_BOOL_FIELDS = frozenset({"AA", "TC", "RD", "RA", "rejected", "resumed", "established",
                          "from_client", "retain", "is_orig", "local_orig", "local_resp",
                          "auth_success", "sni_matches_cert", "ack"})
_COUNT_SUFFIXES = ("_len", "_bytes", "_pkts", "_ip_bytes", "trans_depth", "status_code",
                   "info_code", "trans_id", "qclass", "qtype", "rcode", "opcode", "Z", "tid",
                   "unit", "auth_attempts", "missed_bytes")


def _type_by_name(name: str) -> str:
    if name in _NAMED_TYPES:
        return _NAMED_TYPES[name]
    if name in _BOOL_FIELDS:
        return "bool"
    if name.endswith(("fuids", "filenames", "mime_types")):
        return "vector[string]"
    if name.endswith(_COUNT_SUFFIXES):
        return "count"
    return "string"


def _looks_like_field_names(line: str) -> bool:
    names = line.rstrip("\n").split("\t")
    return ("uid" in names or "ts" in names) and all(n and " " not in n for n in names)


def _json_records(name: str, path: Path, first: list[tuple[int, str]],
                  rest: Iterable[tuple[int, str]], problems: _Problems) -> Iterator[ZeekRecord]:
    for number, raw in itertools.chain(first, rest):
        if not raw.strip():
            continue
        try:
            values = json.loads(raw)
            if not isinstance(values, dict):
                problems.add("JSON log line is not an object: line skipped", number)
                continue
            flat = _flatten(values)
        except json.JSONDecodeError as exc:
            problems.add(f"not a JSON log line ({exc.msg}): line skipped", number)
            continue
        except _BAD_VALUE as exc:  # numbers of 5,000 digits, nesting thousands deep
            problems.add(f"unreadable JSON ({type(exc).__name__}: {short(exc)}): line skipped", number)
            continue
        if "_path" in values:
            name = str(values["_path"])
        yield ZeekRecord(name, flat, _source(path, flat), number)
    problems.close()


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """JSON logs may nest ``id`` as an object; TSV names are dotted (``id.orig_h``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


_LOG_SUFFIXES = (".log", ".log.gz", ".json", ".json.gz")


def _logs_under(directory: Path) -> Iterator[Path]:
    """The regular ``*.log``/``*.json`` files under a directory (FIFOs and devices left out)."""
    return (p for p in directory.rglob("*") if p.name.endswith(_LOG_SUFFIXES) and p.is_file())


def log_files(paths: Iterable[Path]) -> list[Path]:
    """Every ``*.log``/``*.log.gz``/``*.json`` under the given files and directories.

    A path given by name that is a device, FIFO or socket is refused (``NotARegularFile``).
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(_logs_under(path)))
        elif path.exists():
            refuse_unless_regular(str(path), path.stat().st_mode, "Zeek log")
            found.append(path)
        else:
            raise InputError("no such Zeek log file or directory", Location(file=str(path)))
    return found


def is_zeek_input(path: Path) -> bool:
    """Whether ``path`` is Zeek output (a log file, or a directory holding some), not a capture.

    For ``cranewatch analyze`` to route an input: captures start with a pcap/pcapng magic;
    Zeek logs with ``#separator``/``#fields`` headers, a zeek-cut header line, or a JSON object.
    """
    if path.is_dir():
        supported = _supported()
        return any(p.name.split(".")[0] in supported for p in _logs_under(path))
    if not path.is_file():
        return False  # devices and FIFOs are never opened here
    try:
        with open_regular_file(str(path), "Zeek log") as handle:
            head = handle.read(4096)
            if head.startswith(GZIP_MAGIC):
                handle.seek(0)
                head = GunzipStream(handle, str(path)).read(4096)
    except (OSError, InputError):  # unreadable, damaged gzip, or swapped for a device: not a log
        return False
    text = head.decode("utf-8", "replace").lstrip()
    while text.startswith("### "):  # btest baseline comment
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return (text.startswith(("#separator", "#fields", "#path"))
            or (text.startswith("{") and ('"_path"' in text or '"uid"' in text or '"id.orig_h"' in text))
            or _looks_like_field_names(text.split("\n", 1)[0]))


# --- a tree of logs: walking, duplicates, time order -------------------------------------------

# Rotated logs as zeekctl's archiver and a cluster's logger name them:
# logs/2024-05-01/conn.13:00:00-14:00:00.log.gz (the day a directory, the hours in the name).
_ROTATED = re.compile(r"^[^.]+\.(\d\d):(\d\d):(\d\d)-\d\d:\d\d:\d\d\.")
_DAY = re.compile(r"^(\d{4})-(\d\d)-(\d\d)$")
# Extension fields naming the node that wrote a record: ``_node_name`` (the add-node-names
# package, Security Onion), ``_system_name`` (the logging framework's extension example,
# Corelight). The first present names the record's sensor.
NODE_FIELDS = ("_node_name", "_system_name")
MAX_NODE_NAME = 64  # a hostile log's node name is cut, not carried whole into every finding
# The reorder window: Zeek writes a conn record when its connection ends, with the time it
# began, and other logs at a reply or a timeout, so times within a log go back and forth.
# Records are held until the newest time read is REORDER_SECONDS past theirs, and never more
# than REORDER_RECORDS of them; a record older than the last one handed on is handed on at once
# and counted as late (ZeekStream.late): a connection that lasted longer than the window.
REORDER_SECONDS = 300.0  # Zeek's tcp_inactivity_timeout: most connections end within it
REORDER_RECORDS = 50_000
EVENT_BATCH = 4096
X509_KEPT = 20_000  # certificates remembered for the ssl join (the most recent)
_LATE_LISTED = 5


@dataclass(frozen=True, slots=True)
class LogFile:
    """One log file of the input: the input (tree or file) it was found under, its stream
    name from the file name (``conn``, ``dns``...), and its rotation start (epoch seconds,
    the day directory and the name read as UTC) when the name carries one."""

    path: Path
    root: int
    stream: str
    rotated: float | None


@dataclass(frozen=True, slots=True)
class DuplicateLog:
    """A log file not read because another one has the same content."""

    path: str
    same_as: str
    sha256: str


def rotation_start(path: Path) -> float | None:
    """The rotation start of ``logs/YYYY-MM-DD/name.HH:MM:SS-HH:MM:SS.log[.gz]``, or None."""
    hours = _ROTATED.match(path.name)
    day = _DAY.match(path.parent.name)
    if hours is None:
        return None
    h, m, s = (int(g) for g in hours.groups())
    if day is None or h > 23 or m > 59 or s > 60:
        return float(h * 3600 + m * 60 + s) if h <= 23 else None
    try:
        year, month, mday = (int(g) for g in day.groups())
        midnight = datetime(year, month, mday, tzinfo=UTC).timestamp()
    except ValueError:  # 2024-13-45
        return None
    return midnight + h * 3600 + m * 60 + s


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open_regular_file(str(path), "Zeek log") as handle:
        while block := handle.read(_READ_BLOCK):
            sha.update(block)
    return sha.hexdigest()


def unique_logs(files: list[LogFile], duplicates: list[DuplicateLog],
                problems: list[InputError]) -> list[LogFile]:
    """The files without repeats: the same file under two names (a link) or a copy of it.

    Only files of one size are hashed (a copy has its original's size); the first in the
    walk's order is kept, each other one listed in ``duplicates``.
    """
    by_size: dict[int, list[LogFile]] = {}
    seen_real: dict[Path, LogFile] = {}
    kept: list[LogFile] = []
    for log in files:
        try:
            real = log.path.resolve()
            size = real.stat().st_size
        except OSError as exc:
            problems.append(InputError(f"cannot read Zeek log: {exc.strerror or exc}", Location(file=str(log.path))))
            continue
        if real in seen_real:
            duplicates.append(DuplicateLog(str(log.path), str(seen_real[real].path), ""))
            continue
        seen_real[real] = log
        by_size.setdefault(size, []).append(log)
        kept.append(log)
    dropped: set[Path] = set()
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        first_by_digest: dict[str, LogFile] = {}
        for log in same_size:
            try:
                digest = _digest(log.path)
            except (OSError, InputError):
                continue  # read (and reported) as a log later
            if digest in first_by_digest:
                duplicates.append(DuplicateLog(str(log.path), str(first_by_digest[digest].path), digest))
                dropped.add(log.path)
            else:
                first_by_digest[digest] = log
    return [log for log in kept if log.path not in dropped]


def _first_ts(path: Path) -> float | None:
    """The first record's time of a log without a rotation name (None: none readable)."""
    try:
        _, records = read_log(path, [])
        for record in records:
            ts = record_ts(record)
            return ts if ts else None
    except (InputError, OSError, *_BAD_VALUE):
        return None
    return None


def _in_time_order(files: list[LogFile]) -> list[LogFile]:
    """Rotated files by their rotation start, the others by their first time, current last."""
    def key(log: LogFile) -> tuple[float, str]:
        start = log.rotated if log.rotated is not None else _first_ts(log.path)
        return (math.inf if start is None else start, str(log.path))
    return sorted(files, key=key)


# --- streaming: a k-way merge of every log, a bounded reorder window, batches of events ---------

@dataclass(slots=True)
class InputTally:
    """What one given input (a sensor's tree of logs, or a file) gave: its logs, notes and
    problems (``found``), events, first/last time, and records that came later than the window."""

    path: str
    found: ZeekResult = field(default_factory=ZeekResult)
    events: int = 0
    first: float | None = None
    last: float | None = None
    late: int = 0


@dataclass(slots=True)
class _Item:
    """One record's events on their way through the merge and the reorder window."""

    ts: float
    root: int
    events: list[Event]
    ssl: ZeekRecord | None = None  # joined to x509 when it leaves the window
    x509: ZeekRecord | None = None  # remembered when it leaves the merge


class ZeekStream:
    """Zeek logs of one or more inputs (sensors' trees, files), read as one stream of events.

    Files of one stream (``conn``, ``dns``...) of one input are read one after another in time
    order; the streams of every input are merged by time, then pass a reorder window (see
    ``REORDER_SECONDS``); ``batches()`` hands on lists of at most ``EVENT_BATCH`` events.
    Memory holds one open file per stream and input, the window and the recent certificates,
    whatever the length of the logs. After ``batches()``: ``inputs`` (per given input: its
    notes, logs, skipped files and problems), ``duplicates``, ``late``; ``result()`` all
    inputs' in one ``ZeekResult``.
    """

    def __init__(self, paths: Iterable[Path], *, window_seconds: float = REORDER_SECONDS,
                 window_records: int | None = REORDER_RECORDS, batch: int = EVENT_BATCH) -> None:
        self.paths = [Path(p) for p in paths]
        self.window_seconds = window_seconds
        self.window_records = window_records
        self.batch = batch
        self.inputs = [InputTally(str(p)) for p in self.paths]
        self.duplicates: list[DuplicateLog] = []
        self.late = 0  # records older than the last one handed on: handed on out of order
        self.latest_late: list[tuple[float, str, int]] = []  # (seconds late, file, line), worst first
        self._x509: dict[str, ZeekRecord] = {}
        self._announcements = _Announcements()
        self._mappers = _mappers()
        self._supported = ("x509", *self._mappers)  # as registered now (a protocol may have been added)

    # the walk
    def files(self) -> list[LogFile]:
        found: list[LogFile] = []
        for root, path in enumerate(self.paths):
            for log in log_files([path]):
                found.append(LogFile(log, root, log.name.split(".")[0], rotation_start(log)))
        return unique_logs(found, self.duplicates, self.inputs[0].found.problems)

    def result(self) -> ZeekResult:
        """Every input's logs, notes and problems in one (events: none; see ``batches``)."""
        merged = ZeekResult()
        for tally in self.inputs:
            merged.logs += tally.found.logs
            merged.skipped += tally.found.skipped
            merged.problems += tally.found.problems
            for note in tally.found.notes:
                merged.note(note)
        return merged

    def batches(self) -> Iterator[list[Event]]:
        files = self.files()
        for duplicate in self.duplicates:
            how = f"same content (sha256 {duplicate.sha256[:16]}...)" if duplicate.sha256 else "the same file"
            root = next((i for i, p in enumerate(self.paths) if duplicate.path.startswith(str(p))), 0)
            self.inputs[root].found.note(f"{duplicate.path}: {how} as {duplicate.same_as}; read once")
        chains: dict[tuple[int, str], list[LogFile]] = {}
        for log in files:
            chains.setdefault((log.root, log.stream), []).append(log)
        merged = heapq.merge(*(self._records(_in_time_order(chain)) for chain in chains.values()),
                             key=lambda item: item.ts)
        yield from self._reordered(merged)
        limit = (f"{self.window_seconds:g} s" + (f" / {self.window_records} records"
                                                 if self.window_records is not None else ""))
        for tally in self.inputs:
            if tally.late:
                worst = ", ".join(f"{file} line {line} ({late:.0f} s)" for late, file, line in self.latest_late)
                tally.found.note(f"{tally.late} records came later than the reorder window ({limit}) and "
                                 f"were analysed out of time order; the latest of all inputs: {worst}")

    def _records(self, chain: list[LogFile]) -> Iterator[_Item]:
        """One stream's records, file after file, mapped to events as they are read."""
        for log in chain:
            result = self.inputs[log.root].found
            path = log.path
            try:
                name, records = read_log(path, result.problems)
            except InputError as exc:
                if log.stream in self._supported:
                    result.problems.append(exc)  # a log we use, unreadable: the others are still read
                else:
                    result.skipped.append(str(path))  # a log we do not use, in a form we cannot read
                continue
            if name not in self._supported:
                result.skipped.append(str(path))
                continue
            result.logs.append(str(path))
            line_problems = _Problems(path, result.problems)
            for record in records:
                try:
                    item = _map_record(name, record, result, self._mappers, log.root)
                except _BAD_VALUE as exc:
                    line_problems.add(f"{name} record with a value of the wrong type or range "
                                      f"({type(exc).__name__}: {short(exc)}): line skipped", record.line)
                    continue
                if item is not None:
                    yield item
            line_problems.close()

    def _reordered(self, merged: Iterator[_Item]) -> Iterator[list[Event]]:
        window: list[tuple[float, int, _Item]] = []
        out: list[Event] = []
        newest = -math.inf
        handed = -math.inf  # the time of the last record handed on
        for seq, item in enumerate(merged):
            if item.x509 is not None:
                self._remember(item.x509)
                continue
            if item.ts < handed:
                self._late(item, handed)
                self._hand_on(item, out)
            else:
                heapq.heappush(window, (item.ts, seq, item))
                newest = max(newest, item.ts)
            horizon = newest - self.window_seconds
            while window and (window[0][0] <= horizon or (self.window_records is not None
                                                          and len(window) > self.window_records)):
                handed = window[0][0]
                self._hand_on(heapq.heappop(window)[2], out)
            if len(out) >= self.batch:
                yield out
                out = []
        while window:
            self._hand_on(heapq.heappop(window)[2], out)
        if out:
            yield out

    def _late(self, item: _Item, handed: float) -> None:
        self.late += 1
        self.inputs[item.root].late += 1
        first = item.events[0] if item.events else None
        where = (first.source, first.frame) if first is not None else (
            (item.ssl.file, item.ssl.line) if item.ssl is not None else ("?", 0))
        self.latest_late.append((handed - item.ts, where[0], where[1]))
        self.latest_late.sort(reverse=True)
        del self.latest_late[_LATE_LISTED:]

    def _remember(self, record: ZeekRecord) -> None:
        fingerprint = record.get("fingerprint") or record.get("id")
        if not fingerprint:
            return
        key = text(fingerprint)
        self._x509.pop(key, None)
        self._x509[key] = record
        if len(self._x509) > X509_KEPT:
            del self._x509[next(iter(self._x509))]

    def _hand_on(self, item: _Item, out: list[Event]) -> None:
        events = item.events
        if item.ssl is not None:
            try:
                events = events + _ssl_certificate(item.ssl, self._x509, self.inputs[item.root].found)
            except _BAD_VALUE as exc:
                self.inputs[item.root].found.problems.append(InputError(
                    f"ssl record with a certificate value of the wrong type ({type(exc).__name__}: "
                    f"{short(exc)})", Location(file=item.ssl.file, line=item.ssl.line)))
        if not events:
            return
        tally = self.inputs[item.root]
        tally.events += len(events)
        if item.ts:
            tally.first = item.ts if tally.first is None else min(tally.first, item.ts)
            tally.last = item.ts if tally.last is None else max(tally.last, item.ts)
        see = self._announcements.see
        out.extend(see(event) for event in events)


def read_zeek(paths: Iterable[Path]) -> ZeekResult:
    """Read Zeek logs (files or directories) into a list of events in time order.

    Everything in memory, the order exact (an unbounded window): for small inputs and tests.
    An analysis streams them (``ZeekStream``).
    """
    stream = ZeekStream(paths, window_seconds=math.inf, window_records=None)
    events = [event for batch in stream.batches() for event in batch]
    result = stream.result()
    result.events = events
    return result


def _map_record(name: str, record: ZeekRecord, result: ZeekResult, mappers: dict[str, Any],
                root: int) -> _Item | None:
    """One record's events (x509 and ssl records are also kept for the join); None: none."""
    if record.values.get("ts") is None and "ts" in record.values:
        result.note(f"{Path(record.file).name}: timestamps are masked or absent; events carry ts 0")
    if name == "x509":
        return _Item(record_ts(record), root, [], x509=record)
    events = mappers[name](record, result)  # all of the line's events, or none of them
    if name == "ssl":
        return _Item(record_ts(record), root, events, ssl=record)
    return _Item(events[0].ts, root, events) if events else None


# --- mapping --------------------------------------------------------------------------------

def _conn(record: ZeekRecord, result: ZeekResult) -> list[Event]:
    if record.get("id.orig_h") is None:
        result.note(f"{Path(record.file).name}: connection endpoints absent (trimmed log); "
                    "connections not reported")
        return []
    return [ConnEvent(uid=text(record.get("uid")), transport=text(record.get("proto")),
                      service=text(record.get("service")), duration=finite(record.get("duration")),
                      orig_bytes=integer(record.get("orig_bytes")), resp_bytes=integer(record.get("resp_bytes")),
                      state=text(record.get("conn_state")), history=text(record.get("history")),
                      orig_pkts=integer(record.get("orig_pkts")), resp_pkts=integer(record.get("resp_pkts")),
                      **ends(record))]


def _ssl_certificate(record: ZeekRecord, x509: dict[str, ZeekRecord], result: ZeekResult) -> list[Event]:
    subject, issuer = record.get("subject"), record.get("issuer")
    chain = record.get("cert_chain_fps") or record.get("cert_chain_fuids") or ()
    if subject is None and chain:
        leaf = x509.get(str(chain[0]))
        if leaf is None:
            result.note("ssl.log names certificates that no x509.log in the input describes")
            return []
        subject, issuer = leaf.get("certificate.subject"), leaf.get("certificate.issuer")
    if subject is None:
        return []
    return [TlsCertificateResponse(subject=str(subject), issuer=str(issuer or ""),
                                   chain_length=max(len(chain), 1),
                                   self_signed=subject == issuer, **ends(record, from_orig=False))]


def _supported() -> tuple[str, ...]:
    return ("conn", "x509", *registry.zeek_mappers())


def _mappers() -> dict[str, Any]:
    return {"conn": _conn, **registry.zeek_mappers()}


# conn.log's records are this reader's own events: their adapter is declared here, as a
# protocol module declares its events' (one with no flow decoder and no profile name).
CONN = register_protocol(ProtocolSpec(name="zeek-conn", module=__name__, policy={},
                                      adapters={ConnEvent: ZEEK_CONVERSATION}))
