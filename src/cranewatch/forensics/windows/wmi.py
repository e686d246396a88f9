"""WMI event subscriptions: a filter (a WQL event query) bound to a consumer that runs a command or a script.

Windows keeps them in its CIM repository (``Windows/System32/wbem/Repository``); an attacker's
subscription runs its command as SYSTEM each time the event happens (at boot, every minute …)
and appears in no Run key, service or task. Three sources are read:

- the repository (``wmi_repository``): ``OBJECTS.DATA`` through the current ``MAPPING*.MAP``
  (in ``Repository``; or ``Repository/FS`` on Windows XP, with ``OBJECTS.MAP``),
  instances of ``__EventFilter``, ``__FilterToConsumerBinding``, ``CommandLineEventConsumer``
  and ``ActiveScriptEventConsumer``, located by file offset; remains on pages the mapping no
  longer uses, and in a page's slack, are deleted subscriptions;
- MOF files declaring such instances (``mof``): ``wbem/AutoRecover`` (recompiled whenever the
  repository is rebuilt) and any other ``.mof``;
- event 5861 of ``Microsoft-Windows-WMI-Activity/Operational`` (a binding was registered; its
  text is MOF) and Sysmon's 19/20/21 (filter, consumer, binding created or deleted), read with
  the Rust ``evtx`` parser the event-log check uses.

A command-line or script consumer bound to a filter is **high** (persistence), **critical** with
a download cradle, encoded PowerShell or tunnel in it, **medium** when only the remains of a
deleted one are left or the consumer is bound to nothing. Other consumer kinds (log file, event
log, e-mail) bound to a filter are low. Windows' own subscriptions (``SCM Event Log Consumer``
with ``SCM Event Log Filter``; ``BVTConsumer`` running ``cscript KernCap.vbs`` with
``BVTFilter``) give nothing. One subscription is one finding, with a piece of evidence from
each source that shows it; a binding whose consumer or filter its own source lacks takes it
from another source (the repository's binding, the command its AutoRecover MOF keeps).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from cranewatch.forensics.windows.commands import cradle_in, decoded_powershell
from cranewatch.forensics.windows.eventlogs import MAX_LOG_BYTES
from cranewatch.forensics.windows.mof import MofInstance, MofValue, parse_mof, unescape
from cranewatch.forensics.windows.safe_xml import UnsafeXml, local, parse_xml
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.forensics.windows.wmi_repository import Instance, current_mapping, read_instances
from cranewatch.model import Evidence, Finding, Severity, finding_id

NAME = "windows_wmi_subscriptions"
REPOSITORY = "Windows/System32/wbem/Repository"
AUTORECOVER = "windows/system32/wbem/autorecover/"
MAX_OBJECTS_BYTES = 4 << 30  # real repositories are tens to hundreds of MB; beyond this is reported
MAX_MOF_BYTES = 8 << 20
MAX_SHOWN = 4000  # characters of a command or script kept in the evidence
_TECH = ("T1546.003",)
_RUNS = ("commandlineeventconsumer", "activescripteventconsumer")
_STOCK = {
    ("nteventlogeventconsumer", "scm event log consumer", "scm event log filter"),
    ("commandlineeventconsumer", "bvtconsumer", "bvtfilter"),
}
_STOCK_BVT_COMMAND = "cscript kerncap.vbs"
_REFERENCE = re.compile(r"""(?:^|[:\\/])(?P<cls>\w+)\.Name\s*=\s*(?P<q>["'])(?P<name>(?:(?!(?P=q))[^\\]|\\.)*)(?P=q)""", re.I)
_QUERY = re.compile(r"^\s*select\s", re.I)
_ENGINES = ("vbscript", "jscript", "javascript")
_SCRIPT_FILE = re.compile(r"\.(vbs|vbe|js|jse|wsf|wsh)$", re.I)


@dataclass(frozen=True)
class Where:
    """Where one source shows an object: file, and line (MOF) or offset (repository) or record (log)."""

    path: str
    source: str  # "repository", "mof", "event 5861"
    line: int | None = None
    offset: int | None = None
    detail: str = ""
    deleted: bool = False
    time: str | None = None


@dataclass(frozen=True)
class Filter:
    name: str
    query: str
    namespace: str
    where: Where


@dataclass(frozen=True)
class Consumer:
    kind: str  # the class, e.g. CommandLineEventConsumer
    name: str
    action: str  # the command line, or the script text (or its file)
    engine: str
    where: Where


@dataclass(frozen=True)
class Binding:
    consumer_kind: str
    consumer_name: str
    filter_name: str
    where: Where


@dataclass
class _Found:
    """What one source (a file) declares."""

    filters: list[Filter]
    consumers: list[Consumer]
    bindings: list[Binding]


def check(win: WindowsTree) -> Iterator[Finding]:
    found = list(_repositories(win))
    found.extend(_mof_files(win))
    found.extend(_activity_logs(win))
    merged: dict[tuple[str, ...], Finding] = {}
    elsewhere = _known(found)
    for source in found:
        for key, finding in _judge(win, source, elsewhere):
            earlier = merged.get(key)
            merged[key] = finding if earlier is None else _merge(earlier, finding)
    bound = {key[1:3] for key in merged if key[0] == "binding"}
    for key, finding in merged.items():
        if key[0] != "unbound" or key[1:3] not in bound:  # a consumer another source shows bound is not idle
            yield finding


# -- the repository ------------------------------------------------------------------------------

def _repositories(win: WindowsTree) -> Iterator[_Found]:
    for folder in (REPOSITORY, f"{REPOSITORY}/FS"):  # Vista and later; XP
        found = _repository(win, folder)
        if found is not None:
            yield found


def _repository(win: WindowsTree, folder: str) -> _Found | None:
    objects = win.find(f"{folder}/OBJECTS.DATA")
    if objects is None:
        return None
    size = win.image.entries[objects].size
    if size > MAX_OBJECTS_BYTES:
        win.problem(objects, f"WMI repository of {size} bytes is larger than {MAX_OBJECTS_BYTES} and was not read")
        return None
    maps: list[tuple[str, bytes]] = []
    for name in ("OBJECTS.MAP", "MAPPING1.MAP", "MAPPING2.MAP", "MAPPING3.MAP"):
        path = win.find(f"{folder}/{name}")
        data = win.read_bytes(path, limit=64 << 20) if path is not None else None
        if path is not None and data is not None:
            maps.append((path, data))
    # XP keeps the current objects mapping in OBJECTS.MAP (MAPPING1/2.MAP are its backups, libyal's
    # "WMI repository file format"); later Windows in the MAPPINGn.MAP of the highest version.
    is_objects_map = [path.upper().endswith("OBJECTS.MAP") for path, _ in maps]
    objects_map, problems = current_mapping([m for m, yes in zip(maps, is_objects_map, strict=True) if yes])
    numbered, more = current_mapping([m for m, yes in zip(maps, is_objects_map, strict=True) if not yes])
    mapping = objects_map or numbered
    problems += more
    for problem in problems:
        path, _, text = problem.partition(": ")
        win.problem(path, text)
    if mapping is None:
        win.problem(objects, "no usable MAPPING*.MAP beside it: pages read in file order, deleted objects not told apart")
    with win.image.open(objects) as stream:
        instances, problems = read_instances(stream, size, mapping)
    for problem in problems:
        win.problem(objects, f"WMI repository: {problem}")
    return _from_instances(objects, instances)


def _from_instances(path: str, instances: list[Instance]) -> _Found:
    out = _Found([], [], [])
    where = {id(i): Where(path, "repository", offset=i.offset, deleted=not i.allocated, time=i.written,
                          detail=f"page {i.page}, " + (f"record {i.record_id}" if i.record_id else "slack"))
             for i in instances}
    for instance in instances:
        if instance.class_name == "__FilterToConsumerBinding":
            refs = [m for s in instance.strings if (m := _REFERENCE.search(s))]
            consumer = next((m for m in refs if m.group("cls").lower().endswith("eventconsumer")), None)
            filter_ = next((m for m in refs if m.group("cls").lower() == "__eventfilter"), None)
            if consumer is not None and filter_ is not None:
                out.bindings.append(Binding(consumer.group("cls"), _unquote(consumer.group("name")),
                                            _unquote(filter_.group("name")), where[id(instance)]))
    bound = {b.consumer_name.lower() for b in out.bindings} | {b.filter_name.lower() for b in out.bindings}
    for instance in instances:
        strings = list(instance.strings)
        if instance.class_name == "__EventFilter":
            query = next((s for s in strings if _QUERY.match(s)), "")
            rest = [s for s in strings if s != query and s.upper() != "WQL"]
            namespace = next((s for s in rest if re.match(r"^(root\b|\\\\|//)", s, re.I)), "")
            name = next((s for s in rest if s.lower() in bound), None) or next((s for s in rest if s != namespace), "")
            out.filters.append(Filter(name, query, namespace, where[id(instance)]))
        elif instance.class_name in ("CommandLineEventConsumer", "ActiveScriptEventConsumer"):
            out.consumers.append(_consumer_from_strings(instance.class_name, strings, bound, where[id(instance)]))
    return out


def _consumer_from_strings(kind: str, strings: list[str], bound: set[str], where: Where) -> Consumer:
    """A consumer from its string values alone: the name is the one a binding names (else the first
    string that is neither the command nor a path), the action the longest of the others."""
    name = next((s for s in strings if s.lower() in bound), None)
    if kind == "ActiveScriptEventConsumer":
        engine = next((s for s in strings if s.lower() in _ENGINES), "")
        others = [s for s in strings if s not in (name, engine)]
        if name is None:
            name = next((s for s in others if "\n" not in s and not _SCRIPT_FILE.search(s)), "")
            others = [s for s in others if s != name]
        action = max(others, key=len, default="")
        return Consumer(kind, name, action, engine, where)
    if name is None:
        command = max(strings, key=len, default="")
        name = next((s for s in strings if s != command and "\\" not in s and " " not in s.strip()), "")
    others = [s for s in strings if s != name]
    return Consumer(kind, name, max(others, key=len, default=""), "", where)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


# -- MOF files -----------------------------------------------------------------------------------

def _mof_files(win: WindowsTree) -> Iterator[_Found]:
    for path, entry in sorted(win.image.entries.items()):
        if entry.type != "file" or not path.lower().endswith(".mof"):
            continue
        if entry.size > MAX_MOF_BYTES:
            win.problem(path, f"MOF file of {entry.size} bytes is larger than {MAX_MOF_BYTES} and was not read")
            continue
        text = _decode(win.read_bytes(path, limit=MAX_MOF_BYTES) or b"")
        low = text.lower()
        if "instance" not in low or not any(w in low for w in ("eventconsumer", "__eventfilter", "filtertoconsumerbinding")):
            continue  # the hundreds of class-only MOF files of a stock Windows
        instances, aliases, error = parse_mof(text)
        if error is not None:
            win.problem(path, f"MOF {error}; the declarations before it are read")
        yield _from_mof(instances, aliases, partial(_mof_where, path))


def _mof_where(path: str, line: int) -> Where:
    return Where(path, "mof", line=line)


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if len(data) > 1 and data[1:2] == b"\x00":
        return data.decode("utf-16-le", "replace")  # UTF-16 without a BOM, as some tools write it
    return data.decode("utf-8", "replace")


def _from_mof(instances: list[MofInstance], aliases: dict[str, MofInstance], where: Callable[[int], Where]) -> _Found:
    out = _Found([], [], [])
    for instance in instances:
        cls = instance.class_name.lower()
        if cls == "__eventfilter":
            out.filters.append(Filter(instance.text("Name"), instance.text("Query"), instance.text("EventNamespace"),
                                      where(instance.line)))
        elif cls == "commandlineeventconsumer":
            action = instance.text("CommandLineTemplate") or instance.text("ExecutablePath")
            out.consumers.append(Consumer(instance.class_name, instance.text("Name"), action, "", where(instance.line)))
        elif cls == "activescripteventconsumer":
            action = instance.text("ScriptText") or instance.text("ScriptFileName")
            out.consumers.append(Consumer(instance.class_name, instance.text("Name"), action,
                                          instance.text("ScriptingEngine"), where(instance.line)))
        elif cls.endswith("eventconsumer"):
            out.consumers.append(Consumer(instance.class_name, instance.text("Name"), "", "", where(instance.line)))
        elif cls == "__filtertoconsumerbinding":
            consumer = _target(instance.get("Consumer"), aliases)
            filter_ = _target(instance.get("Filter"), aliases)
            if consumer is not None and filter_ is not None:
                out.bindings.append(Binding(consumer[0], consumer[1], filter_[1], where(instance.line)))
    return out


def _target(value: MofValue, aliases: dict[str, MofInstance]) -> tuple[str, str] | None:
    """(class, name) a binding's Filter or Consumer names: a ``$alias`` or an object path."""
    if not isinstance(value, str):
        return None
    if value.startswith("$"):
        instance = aliases.get(value.lower())
        return (instance.class_name, instance.text("Name")) if instance is not None else None
    match = _REFERENCE.search(value)
    return (match.group("cls"), _unquote(match.group("name"))) if match else None


# -- event logs: WMI-Activity 5861, Sysmon 19/20/21 ------------------------------------------------

def _activity_logs(win: WindowsTree) -> Iterator[_Found]:
    paths = [p for p, e in sorted(win.image.entries.items())
             if e.type == "file" and p.lower().endswith(".evtx") and ("wmi-activity" in p.lower() or "sysmon" in p.lower())]
    if not paths:
        return
    try:
        import evtx
    except ImportError:
        return  # the event-log check says why logs are not read
    for path in paths:
        size = win.image.entries[path].size
        if size == 0 or size > MAX_LOG_BYTES:
            continue  # the event-log check reports a log too large to read
        out = _Found([], [], [])
        latest: dict[tuple[str, ...], Binding] = {}  # Sysmon: a binding created, then deleted, is deleted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged records: reported by the event-log check
            try:
                parser = evtx.PyEvtxParser(str(win.image.disk_path(path)), number_of_threads=1, skip_errors=True)
                for record in parser.records():
                    _subscription_event(win, path, record, out, latest)
            except (RuntimeError, OSError, ValueError) as exc:
                win.problem(path, f"event log unreadable from here on ({' '.join(str(exc).split())[:200]})")
        out.bindings.extend(latest.values())
        yield out


def _subscription_event(win: WindowsTree, path: str, record: Any, out: _Found,
                        latest: dict[tuple[str, ...], Binding]) -> None:
    xml = record.get("data") or ""
    match = re.search(r"<EventID[^>]*>(5861|19|20|21)<", xml)
    sysmon = "microsoft-windows-sysmon" in xml[:800].lower()  # the provider, in the System header
    if match is None or (match.group(1) == "5861") == sysmon:
        return  # 19-21 count only from Sysmon, 5861 only from WMI-Activity
    record_id = int(record.get("event_record_id") or 0)
    try:
        root = parse_xml(xml.encode("utf-8"))
    except UnsafeXml as exc:
        win.problem(path, f"record {record_id} not read ({exc})")
        return
    fields = {e.get("Name") or local(e.tag): (e.text or "").strip() for e in root.iter() if len(e) == 0}
    when = str(record.get("timestamp") or "").removesuffix(" UTC")
    event_id = match.group(1)
    if event_id == "5861":
        where = Where(path, "event 5861", detail=f"record {record_id}", time=when)
        consumer_ref = re.match(r'\s*(\w+)\s*=\s*"(.*)"\s*$', fields.get("CONSUMER", ""))
        instances, aliases, _error = parse_mof(fields.get("PossibleCause", ""))
        described = _from_mof(instances, aliases, lambda _line: where)
        out.filters.extend(described.filters)
        out.consumers.extend(described.consumers)
        if consumer_ref is not None and fields.get("ESS"):
            out.bindings.append(Binding(consumer_ref.group(1), _unquote(consumer_ref.group(2)), fields["ESS"], where))
        return
    deleted = fields.get("Operation", "").lower().startswith("delete")
    where = Where(path, f"Sysmon event {event_id}", detail=f"record {record_id}", time=when, deleted=deleted)
    if event_id == "19":
        out.filters.append(Filter(_sysmon_text(fields.get("Name", "")), _sysmon_text(fields.get("Query", "")),
                                  _sysmon_text(fields.get("EventNamespace", "")), where))
    elif event_id == "20":
        kind = {"command line": "CommandLineEventConsumer", "script": "ActiveScriptEventConsumer"}.get(
            fields.get("Type", "").strip().lower(), f"{fields.get('Type', '').replace(' ', '')}EventConsumer")
        out.consumers.append(Consumer(kind, _sysmon_text(fields.get("Name", "")),
                                      _sysmon_text(fields.get("Destination", "")), "", where))
    else:
        consumer = _REFERENCE.search(_sysmon_text(fields.get("Consumer", "")))
        filter_ = _REFERENCE.search(_sysmon_text(fields.get("Filter", "")))
        if consumer is not None and filter_ is not None:
            binding = Binding(consumer.group("cls"), _unquote(consumer.group("name")), _unquote(filter_.group("name")), where)
            latest[(binding.consumer_kind.lower(), binding.consumer_name.lower(), binding.filter_name.lower())] = binding


def _sysmon_text(value: str) -> str:
    """A Sysmon WMI field as it writes it: a MOF string, ``"value"`` in quotes (after a space), with
    its escapes (``\\\\`` for a backslash, ``\\"`` for a quote); plain text is taken as it is."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return unescape(text[1:-1])
    return text


# -- findings ------------------------------------------------------------------------------------

def _known(found: list[_Found]) -> tuple[dict[str, Filter], dict[tuple[str, str], Consumer]]:
    """Filters by name and consumers by (class, name) of ``found``; a live copy wins over remains,
    and one that recovered its query or command over one that did not."""
    filters: dict[str, Filter] = {}
    for f in sorted((f for each in found for f in each.filters), key=lambda f: (not f.where.deleted, bool(f.query))):
        filters[f.name.lower()] = f
    consumers: dict[tuple[str, str], Consumer] = {}
    for c in sorted((c for each in found for c in each.consumers), key=lambda c: (not c.where.deleted, bool(c.action))):
        consumers[(c.kind.lower(), c.name.lower())] = c
    return filters, consumers


def _judge(win: WindowsTree, found: _Found, elsewhere: tuple[dict[str, Filter], dict[tuple[str, str], Consumer]]
           ) -> Iterator[tuple[tuple[str, ...], Finding]]:
    """The findings of one source; a binding's filter or consumer this source lacks is taken from
    ``elsewhere`` (every source), so the repository's binding gets the command its AutoRecover MOF keeps."""
    filters, consumers = _known([found])
    bound: set[tuple[str, str]] = set()
    for binding in found.bindings:
        ident = (binding.consumer_kind.lower(), binding.consumer_name.lower())
        bound.add(ident)
        consumer = consumers.get(ident) or elsewhere[1].get(ident)
        filter_ = filters.get(binding.filter_name.lower()) or elsewhere[0].get(binding.filter_name.lower())
        key = (*ident, binding.filter_name.lower())
        if _stock(key, consumer):
            continue
        yield ("binding", *key), _binding_finding(win, binding, consumer, filter_)
    for ident, consumer in consumers.items():
        if ident not in bound and ident[0] in _RUNS and not consumer.where.deleted:
            yield ("unbound", *ident), _unbound_finding(win, consumer)


def _stock(key: tuple[str, str, str], consumer: Consumer | None) -> bool:
    if key not in _STOCK:
        return False
    if key[0] == "commandlineeventconsumer" and consumer is not None and consumer.action:
        return " ".join(consumer.action.lower().split()) == _STOCK_BVT_COMMAND
    return True


def _action_text(consumer: Consumer | None) -> str:
    if consumer is None or not consumer.action:
        return ""
    return consumer.action


def _danger(action: str) -> str | None:
    cradle = cradle_in(action)
    if cradle is None:
        decoded = decoded_powershell(action)
        if decoded and cradle_in(decoded):
            cradle = f"encoded {cradle_in(decoded)}"
    return cradle


def _binding_finding(win: WindowsTree, binding: Binding, consumer: Consumer | None, filter_: Filter | None) -> Finding:
    kind = binding.consumer_kind
    action = _action_text(consumer)
    runs = kind.lower() in _RUNS
    deleted = binding.where.deleted
    danger = _danger(action) if runs else None
    if not runs:
        severity, what = Severity.LOW, f"a {kind}"
    elif deleted:
        severity, what = Severity.MEDIUM, "the remains of a deleted subscription"
    elif danger:
        severity, what = Severity.CRITICAL, f"a {danger}"
    else:
        severity, what = Severity.HIGH, "persistence"
    verb = "runs" if kind.lower() == "commandlineeventconsumer" else "runs the script" if runs else "feeds"
    shown = " ".join(action.split())[:120] if action else "(its command was not recovered)"
    query = filter_.query if filter_ is not None else ""
    title = (f"WMI event subscription {binding.consumer_name!r} {verb} {shown if runs else kind} "
             f"when filter {binding.filter_name!r} fires: {what}")
    values: dict[str, object] = {"consumer_class": kind, "consumer": binding.consumer_name, "filter": binding.filter_name,
                                 "query": query, "namespace": filter_.namespace if filter_ is not None else ""}
    if consumer is not None:
        values["engine" if consumer.engine else "action"] = consumer.engine or _capped(action)
        if consumer.engine:
            values["script"] = _capped(action)
        if consumer.where.offset is not None:
            values["consumer_offset"] = consumer.where.offset
        if consumer.where.path != binding.where.path:  # the command comes from another source
            values["consumer_where"] = _shown_where(consumer.where)
    remedy = (f"Remove the subscription (as administrator: Get-WmiObject -Namespace root\\subscription "
              f"-Class __FilterToConsumerBinding | Where-Object {{$_.Consumer -like '*{binding.consumer_name}*'}} "
              "| Remove-WmiObject, then its consumer and filter) unless the vendor documents it; find who created it "
              "and treat the PC as compromised if it runs a command.")
    return _finding(win, binding.where, "windows.wmi-subscription", severity, title, remedy, values,
                    (binding.consumer_kind.lower(), binding.consumer_name.lower(), binding.filter_name.lower()), action or query)


def _unbound_finding(win: WindowsTree, consumer: Consumer) -> Finding:
    shown = " ".join(consumer.action.split())[:120] or "(its command was not recovered)"
    title = f"WMI {consumer.kind} {consumer.name!r} bound to no filter: {shown}"
    values: dict[str, object] = {"consumer_class": consumer.kind, "consumer": consumer.name,
                                 "action": _capped(consumer.action)}
    remedy = "Remove the consumer unless the vendor documents it; a binding to any event filter would make it run."
    return _finding(win, consumer.where, "windows.wmi-consumer", Severity.MEDIUM, title, remedy, values,
                    (consumer.kind.lower(), consumer.name.lower()), consumer.action)


def _finding(win: WindowsTree, where: Where, rule: str, severity: Severity, title: str, remedy: str,
             values: dict[str, object], key: tuple[str, ...], excerpt: str) -> Finding:
    values = {**values, "source": where.source}
    if where.detail:
        values["where"] = where.detail
    if where.time:
        values["time"] = where.time
    if where.deleted:
        values["deleted"] = True
    finding = win.ctx.finding(rule=rule, category="persistence", severity=severity, title=title, path=where.path,
                              line=where.line, offset=where.offset, excerpt_text=excerpt or None, technique=_TECH,
                              key=key, values=values, remedy=remedy)
    # The id names the subscription, not the file that shows it: the same one found tomorrow in
    # another source (the repository rebuilt from its AutoRecover MOF) keeps its id and disposition.
    return replace(finding, id=finding_id(rule, win.ctx.crane, "wmi", *key))


def _shown_where(where: Where) -> str:
    if where.line is not None:
        return f"{where.path}:{where.line}"
    if where.offset is not None:
        return f"{where.path} at offset 0x{where.offset:X}"
    return f"{where.path} {where.detail}".strip()


def _capped(text: str) -> str:
    """A command or script as evidence: whole up to 4,000 characters, else its start and its length."""
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}… ({len(text)} characters)"


def _merge(earlier: Finding, later: Finding) -> Finding:
    """One subscription seen by several sources: the worse verdict, every source's evidence."""
    main, other = (earlier, later) if _rank(earlier) >= _rank(later) else (later, earlier)
    evidence: tuple[Evidence, ...] = main.evidence + tuple(e for e in other.evidence if e not in main.evidence)
    return replace(main, evidence=evidence)


def _rank(finding: Finding) -> tuple[int, bool]:
    """The worse verdict first; between equals, the one that recovered the command or script."""
    order = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
    values = finding.evidence[0].values
    return order.index(finding.severity), bool(values.get("action") or values.get("script"))
