"""Event logs (``*.evtx``): what happened on the computer, read with the Rust ``evtx`` parser.

The parser is ``evtx`` (pyevtx-rs, MIT; the Rust crate is MIT/Apache-2.0): memory-safe Rust,
checksums validated, damaged records skipped with a warning, and orders of magnitude faster
than python-evtx (Apache-2.0, pure Python: minutes for a 30 MB Security log). Each log under
``Windows/System32/winevt/Logs`` (or anywhere in a collection) is read record by record, and
these events become findings, one per cause with its count and first/last time:

- 7045 (System, a service was installed): a command interpreter, download cradle or a program
  in a user-writable folder is critical/high, a remote-control tool's service (PsExec's
  PSEXESVC, TeamViewer, AnyDesk, ScreenConnect …) high, a program outside Windows and Program
  Files medium;
- 4720 (a user account was created) medium, 4732 (added to Administrators) high;
- 4624 with logon type 10 (a remote desktop logon), per user and address: high from a public
  address, medium from a private one;
- 1102 (Security log cleared) and 104 (another log cleared) high: traces removed;
- 4104 (a PowerShell script block) holding a download cradle or an encoded command: critical.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from cranewatch.forensics.checks.endpoints import classify_host
from cranewatch.forensics.windows.commands import cradle_in, place_of, program_of
from cranewatch.forensics.windows.safe_xml import UnsafeXml, local, parse_xml
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_event_logs"
MAX_LOG_BYTES = 1 << 30  # a Security log set to its largest is 4 GB; beyond this is reported, not read
_WANTED = {7045, 4720, 4732, 4624, 1102, 104, 4104}
_REMOTE_SERVICES = re.compile(
    r"psexesvc|paexec|remcom|csexec|teamviewer|anydesk|screenconnect|connectwise|radmin|winvnc|tightvnc|"
    r"ultravnc|tvnserver|rustdesk|splashtop|ngrok|atera|meshagent|chisel|frpc|plink", re.I)
_INTERPRETERS = re.compile(r"(^|\\)(cmd|powershell|pwsh|mshta|rundll32|regsvr32|wscript|cscript)(\.exe)?(\s|$)|%comspec%", re.I)
_ADMINISTRATORS = "S-1-5-32-544"


@dataclass
class _Seen:
    """Events of one cause: how many, when first and last, where."""

    log: str
    first: str
    last: str
    count: int = 0
    record_ids: list[int] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)

    def add(self, record_id: int, when: str) -> None:
        self.count += 1
        self.first, self.last = min(self.first, when), max(self.last, when)
        if len(self.record_ids) < 10:
            self.record_ids.append(record_id)


def logs(win: WindowsTree) -> list[str]:
    """Image paths of the event logs: ``*.evtx`` anywhere in the tree."""
    return sorted(p for p, e in win.image.entries.items() if e.type == "file" and p.lower().endswith(".evtx"))


def check(win: WindowsTree) -> Iterator[Finding]:
    paths = logs(win)
    if not paths:
        return
    try:
        import evtx
    except ImportError as exc:
        win.problem(paths[0], f"{len(paths)} event log(s) not read: the evtx parser is missing ({exc}); install the "
                              "'windows' extra")
        return
    seen: dict[tuple[str, ...], _Seen] = {}
    for path in paths:
        size = win.image.entries[path].size
        if size > MAX_LOG_BYTES:
            win.problem(path, f"event log of {size} bytes is larger than {MAX_LOG_BYTES} and was not read")
            continue
        if size == 0:
            continue
        _read(win, evtx, path, seen)
    for key, item in seen.items():
        finding = _finding(win, key, item)
        if finding is not None:
            yield finding


def _read(win: WindowsTree, evtx: Any, path: str, seen: dict[tuple[str, ...], _Seen]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = evtx.PyEvtxParser(str(win.image.disk_path(path)), number_of_threads=1, skip_errors=True)
            for record in parser.records():
                _event(win, path, record, seen)
        except (RuntimeError, OSError, ValueError) as exc:
            win.problem(path, f"event log unreadable from here on ({' '.join(str(exc).split())[:200]})")
    damaged = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if damaged:
        win.problem(path, f"{len(damaged)} damaged record(s) or chunk(s) skipped, e.g. {' '.join(str(damaged[0].message).split())[:160]}")


def _event(win: WindowsTree, path: str, record: dict[str, Any], seen: dict[tuple[str, ...], _Seen]) -> None:
    xml = record.get("data") or ""
    match = re.search(r"<EventID[^>]*>(\d+)<", xml)
    if match is None or int(match.group(1)) not in _WANTED:
        return  # most events are of no interest: not parsed further
    try:
        root = parse_xml(xml.encode("utf-8"))
    except UnsafeXml as exc:
        win.problem(path, f"record {record.get('event_record_id')} not read ({exc})")
        return
    event_id = int(match.group(1))
    data = _data(root)
    channel = _text(root, "Channel")
    when = str(record.get("timestamp") or "").removesuffix(" UTC")  # the parser writes ISO 8601 with Z, then " UTC"
    record_id = int(record.get("event_record_id") or 0)
    key: tuple[str, ...] | None = None
    if event_id == 7045:
        key = ("service", data.get("ServiceName", "").lower(), data.get("ImagePath", "").lower())
    elif event_id == 4720:
        key = ("user", data.get("TargetUserName", "").lower())
    elif event_id == 4732 and data.get("TargetSid", "").upper() == _ADMINISTRATORS:
        member = data.get("MemberName", "")
        key = ("admin", member if member not in ("", "-") else data.get("MemberSid", ""))
    elif event_id == 4624 and data.get("LogonType") == "10":
        key = ("rdp", data.get("TargetUserName", "").lower(), data.get("IpAddress", ""))
    elif event_id in (1102, 104):
        key = ("cleared", channel or ("Security" if event_id == 1102 else ""), path)
    elif event_id == 4104:
        script = data.get("ScriptBlockText", "")
        cradle = cradle_in(script)
        if cradle:
            key = ("script", cradle, script[:2000])
    if key is None:
        return
    item = seen.setdefault(key, _Seen(path, when, when, data=data))
    item.add(record_id, when)


def _data(root: ElementTree.Element) -> dict[str, str]:
    """EventData's Data values by Name, and UserData's leaf elements by tag."""
    out: dict[str, str] = {}
    for element in root.iter():
        tag = local(element.tag)
        if tag == "Data" and element.get("Name"):
            out[element.get("Name", "")] = (element.text or "").strip()
    for user_data in (e for e in root if local(e.tag) == "UserData"):
        for element in user_data.iter():
            if len(element) == 0:
                out.setdefault(local(element.tag), (element.text or "").strip())
    return out


def _text(root: ElementTree.Element, tag: str) -> str:
    for element in root.iter():
        if local(element.tag) == tag:
            return (element.text or "").strip()
    return ""


def _rdp_source(address: str, win: WindowsTree) -> tuple[Severity, str]:
    """How a remote desktop logon's source address ranks: from the Internet, or through a tunnel
    (a loopback source: RDP forwarded by plink/ssh -R or ngrok on this PC), high."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return Severity.MEDIUM, ""
    if ip.is_loopback:
        return Severity.HIGH, " (loopback: tunnelled to this PC)"
    zone = classify_host(address, win.ctx.endpoints)
    if zone == "public":
        return Severity.HIGH, " (public)"
    return Severity.MEDIUM, f" ({zone})"


def _finding(win: WindowsTree, key: tuple[str, ...], item: _Seen) -> Finding | None:
    kind = key[0]
    data = item.data
    times = f"{item.count}× between {item.first} and {item.last}" if item.count > 1 else f"at {item.first}"
    values: dict[str, object] = {"log": item.log, "count": item.count, "first": item.first, "last": item.last,
                                 "record_ids": item.record_ids}
    excerpt = ""
    technique: tuple[str, ...] = ()
    if kind == "service":
        name, command = data.get("ServiceName", ""), data.get("ImagePath", "")
        program = program_of(command)
        cradle = cradle_in(command)
        if cradle or _INTERPRETERS.search(command):
            severity, why = Severity.CRITICAL, f"runs {cradle or 'a command interpreter'}"
        elif _REMOTE_SERVICES.search(f"{name} {command}"):
            severity, why = Severity.HIGH, "is a remote-control tool's service"
        elif place_of(program) == "user-writable":
            severity, why = Severity.HIGH, f"runs {program} from a folder any user can write"
        elif place_of(program) == "other":
            severity, why = Severity.MEDIUM, f"runs {program} outside Windows and Program Files"
        else:
            return None
        rule, category, technique = "windows.event-service-installed", "persistence", ("T1543.003", "T1569.002")
        title = f"service {name} installed {times} (event 7045): it {why}"
        excerpt = command
        values.update({"service": name, "image_path": command, "account": data.get("AccountName", ""),
                       "start_type": data.get("StartType", "")})
        remedy = (f"Find who installed service {name!r} (the Security log's logons around {item.first}) and whether it "
                  "is still present; a service installed remotely (PsExec-style) means someone ran programs on this PC.")
    elif kind == "user":
        name = data.get("TargetUserName", "")
        rule, category, severity, technique = "windows.event-new-user", "credential", Severity.MEDIUM, ("T1136.001",)
        title = f"local account {name} created {times} by {data.get('SubjectUserName', '?')} (event 4720)"
        values.update({"user": name, "by": data.get("SubjectUserName", "")})
        remedy = f"Check that account {name!r} belongs to someone named in the commissioning records; disable it if not."
    elif kind == "admin":
        member = key[1]
        rule, category, severity, technique = "windows.event-new-admin", "credential", Severity.HIGH, ("T1098",)
        title = f"{member} added to Administrators {times} by {data.get('SubjectUserName', '?')} (event 4732)"
        values.update({"member": member, "by": data.get("SubjectUserName", "")})
        remedy = f"Remove {member} from Administrators unless the change is documented, and find who made it."
    elif kind == "rdp":
        user, address = data.get("TargetUserName", ""), data.get("IpAddress", "")
        severity, zone = _rdp_source(address, win)
        rule, category, technique = "windows.event-rdp-logon", "remote-access", ("T0886", "T1021.001")
        title = f"remote desktop logon of {user} from {address or 'an unknown address'}{zone} {times} (event 4624, type 10)"
        values.update({"user": user, "address": address})
        remedy = ("Match each remote desktop session with the vendor's service log; a logon from the Internet means RDP "
                  "is reachable from outside: close it and route remote service through the port's jump host.")
    elif kind == "cleared":
        rule, category, severity, technique = "windows.event-log-cleared", "backdoor", Severity.HIGH, ("T1070.001",)
        title = f"the {key[1] or 'event'} log was cleared {times} by {data.get('SubjectUserName', '?')}"
        values.update({"channel": key[1], "by": data.get("SubjectUserName", "")})
        remedy = "Find out who cleared the log and why; collect the other logs and the forwarded copies (SIEM) of that time."
    elif kind == "script":
        rule, category, severity, technique = "windows.event-powershell", "backdoor", Severity.CRITICAL, ("T1059.001", "T1105")
        title = f"PowerShell ran a {key[1]} {times} (event 4104)"
        excerpt = next((ln for ln in data.get("ScriptBlockText", "").splitlines() if cradle_in(ln)), key[2][:200])
        values.update({"script_block_id": data.get("ScriptBlockId", ""), "script_path": data.get("Path", "")})
        remedy = "Find the script's origin (its path, the user's session) and what it downloaded; treat the PC as compromised."
    else:
        return None
    return win.ctx.finding(
        rule=rule, category=category, severity=severity, title=title, path=item.log, excerpt_text=excerpt or None,
        technique=technique, key=key, values=values, remedy=remedy,
    )
