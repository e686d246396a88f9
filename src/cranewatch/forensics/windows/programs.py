"""The programs that start by themselves, read as PE files with their Authenticode signature.

Every program a service or driver (``ImagePath``, ``ServiceDll``), a Run/RunOnce value of the
machine or a user, a scheduled task or a start-up folder starts, when the image holds it, is
read with pefile and signify (see ``authenticode``). One finding per program file, naming
everything that starts it:

- a broken signature (the file changed after signing) is critical;
- a program whose version resource claims Microsoft but that Microsoft did not sign, or a
  program in the Windows folder signed by someone else, is high (masquerading);
- unsigned, or signed under a root no one trusts, in a folder any user can write (ProgramData,
  Users, Temp) is high; elsewhere outside Windows and Program Files medium; in Program Files
  low (small vendors sign with their own CA, or not at all);
- a file named as a program that is not a PE is medium (a script or payload in disguise).

Windows' own programs are catalog-signed: a program without an embedded signature takes the
verdict of the image's catalog that lists its Authenticode digest (``catalogs``). An unsigned
program in the Windows folder that no catalog lists is high when the image holds catalogs (a
trojaned system binary), and not reported when it holds none (a collection without CatRoot).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cranewatch.forensics.windows import run_keys, tasks
from cranewatch.forensics.windows.authenticode import MAX_PE_BYTES, PeInfo, inspect
from cranewatch.forensics.windows.catalogs import Catalogs
from cranewatch.forensics.windows.commands import place_of, program_of
from cranewatch.forensics.windows.startup import _folders
from cranewatch.forensics.windows.tree import Hive, WindowsTree, int_of, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_program_signatures"
_TECH = ("T1036", "T1553.002")
_PROGRAM_SUFFIXES = (".exe", ".dll", ".sys", ".scr", ".com", ".cpl", ".ocx")


@dataclass
class _Started:
    """One program file and what starts it."""

    image_path: str
    program: str  # expanded, lower-case Windows path
    by: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    service: bool = False


def _image_path(win: WindowsTree, program: str, user: str = "") -> str | None:
    """The image path of a Windows program path (``c:\\programdata\\x.exe``), or None."""
    path = program.replace("%user%", user.lower()) if user else program
    if "%" in path or not path:
        return None
    if "\\" not in path:  # a bare name: searched in System32, then Windows
        names = [path] if "." in path else [path + ".exe"]
        candidates = [f"windows/system32/{n}" for n in names] + [f"windows/{n}" for n in names]
    elif path.startswith("c:\\"):
        candidates = [path[3:]]
    else:
        return None
    for candidate in candidates:
        found = win.find(candidate)
        if found is not None and win.image.entries[found].type == "file":
            return found
    return None


def _started(win: WindowsTree) -> dict[str, _Started]:
    found: dict[str, _Started] = {}

    def add(program: str, by: str, command: str, user: str = "", service: bool = False) -> None:
        where = _image_path(win, program, user)
        if where is None:
            return
        item = found.setdefault(where, _Started(where, program))
        if by not in item.by:
            item.by.append(by)
            item.commands.append(command)
        item.service = item.service or service

    for svc in win.services():
        if int_of(svc.values.get("start")) == 4:
            continue
        for command in (text_of(svc.values.get("imagepath")), svc.service_dll):
            if command:
                add(program_of(command), f"service {svc.name}", command, service=True)
    software = win.machine_hive("SOFTWARE")
    hives: list[tuple[str, Hive, str]] = [("", software, "")] if software is not None else []
    hives += [(user, hive, "Software\\") for user, hive in win.user_hives()]
    for user, hive, prefix in hives:
        for path in run_keys._KEYS:
            key = win.key(hive, prefix + path)
            if key is None:
                continue
            for value in win.values(hive, key, prefix + path).values():
                command = text_of(value)
                if command:
                    add(program_of(command), f"{hive.label}\\{prefix}{path}\\{value.name}", command, user)
    for _path, name, command, arguments in tasks.exec_actions(win):
        add(program_of(command), f"scheduled task {name}", f"{command} {arguments}".strip())
    for folder in _folders(win):
        for path in win.files_under(folder):
            if path.lower().endswith(_PROGRAM_SUFFIXES):
                item = found.setdefault(path, _Started(path, "c:\\" + path.replace("/", "\\").lower()))
                item.by.append("the start-up folder")
                item.commands.append(path.rsplit("/", 1)[-1])
    return found


def check(win: WindowsTree) -> Iterator[Finding]:
    catalogs = Catalogs(win)
    for item in _started(win).values():
        size = win.image.entries[item.image_path].size
        if size > MAX_PE_BYTES:
            win.problem(item.image_path, f"program of {size} bytes not read for its signature (limit {MAX_PE_BYTES})")
            continue
        data = win.read_bytes(item.image_path, limit=MAX_PE_BYTES)
        if data is None:
            continue
        try:
            info = inspect(data, catalogs)
        except Exception as exc:  # pefile/signify/asn1crypto on hostile bytes: one program, not the check
            win.problem(item.image_path, f"program not read as a PE with its signature ({type(exc).__name__}: {exc})")
            continue
        finding = _judge(win, item, info, catalogs)
        if finding is not None:
            yield finding


def _judge(win: WindowsTree, item: _Started, info: PeInfo, catalogs: Catalogs | None = None) -> Finding | None:
    place = place_of(item.program)
    name = item.image_path.rsplit("/", 1)[-1]
    claims_microsoft = info.company.lower().startswith("microsoft")
    category = "persistence"
    if info.status == "not-pe":
        if not item.program.endswith(_PROGRAM_SUFFIXES):
            return None  # scripts are judged by the checks that read them
        severity, why = Severity.MEDIUM, "is not a valid PE program (a script or payload named as a program, or damaged)"
    elif info.status == "broken":
        severity, why, category = Severity.CRITICAL, info.describe(), "backdoor"
    elif info.status == "untrusted" and info.signer.lower().startswith("microsoft"):
        # Microsoft's name on a chain that did not verify: an expired certificate without a
        # timestamp, a root missing from signify's store, or a forged certificate.
        severity, why = Severity.MEDIUM, f"is {info.describe()} (check the chain on Windows: signtool verify /pa /v)"
    elif claims_microsoft and not info.microsoft() and (info.signed or place != "system"):
        severity, category = Severity.HIGH, "backdoor"
        why = f"claims to be Microsoft's ({info.original_name or name}) but is {info.describe()}"
    elif place == "system" and info.signed and not info.microsoft():
        severity, why, category = Severity.HIGH, f"lies in the Windows folder but is {info.describe()}", "backdoor"
    elif info.status == "valid":
        return None
    elif info.status == "unsigned" and place == "system":
        count = catalogs.count if catalogs is not None else 0
        if not count:
            return None  # Windows' own files are catalog-signed, and the image holds no catalogs to look in
        severity, category = Severity.HIGH, "backdoor"
        why = (f"lies in the Windows folder but carries no signature and is listed in none of the image's {count} "
               "catalogs (CatRoot): not a file Windows installed, or one changed since")
    elif place == "user-writable":
        severity, why = Severity.HIGH, f"is {info.describe()} and lies in a folder any user can write"
    elif place == "other":
        severity, why = Severity.MEDIUM, f"is {info.describe()} and lies outside Windows and Program Files"
    else:
        severity, why = Severity.LOW, f"is {info.describe()}"
    started = ", ".join(item.by[:3]) + (f" and {len(item.by) - 3} more" if len(item.by) > 3 else "")
    return win.ctx.finding(
        rule="windows.program-signature", category=category, severity=severity,
        title=f"{name}, started by {started}, {why}", path=item.image_path, excerpt_text=item.commands[0],
        technique=_TECH, key=(item.image_path.lower(),),
        values={"status": info.status, "signer": info.signer, "issuer": info.issuer, "company": info.company,
                "original_name": info.original_name, "kind": info.kind, "started_by": list(item.by),
                "place": place, **({"detail": info.detail} if info.detail else {}),
                **({"catalog": info.catalog} if info.catalog else {})},
        remedy=(f"Compare {name} with the vendor's released, signed build (hash and signer); replace or remove it and "
                "whatever starts it if it is not, and ask the vendor to sign what it installs on the crane."),
    )
