"""Amcache: what Windows saw on the computer, even if removed since.

``Windows/AppCompat/Programs/Amcache.hve`` records programs Windows saw run or installed
(``Root\\InventoryApplicationFile\\*``: ``LowerCaseLongPath``, and in ``FileId`` "0000" and the
SHA-1 of the file's first 31,457,280 bytes). Three rules, one finding per tool or file:

- ``windows.amcache-tool``: a TeamViewer, AnyDesk, VNC, ScreenConnect, ngrok, frp or plink
  program is high: the tool was present, and the record outlives its uninstallation;
- ``windows.amcache-attack-tool``: an attacker's tool by its file name — credential theft
  (Mimikatz, LaZagne, pwdump/WCE/gsecdump, Impacket's secretsdump and friends, Rubeus,
  SharpHound) and tunnels or shells (netcat, chisel, ligolo, socat) high; tools admins use too
  (PsExec/PAExec, ProcDump, rclone) medium;
- ``windows.amcache-changed``: a program still in the image whose content is no longer what
  Amcache hashed, and that no Amcache entry hashed as it is now — replaced after Windows
  inventoried it: high in the Windows folder (a swapped system binary), medium elsewhere (an
  update not run since looks the same).

The older ``Root\\File`` layout (Windows 8, early Windows 10) is not read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from cranewatch.forensics.windows.commands import place_of
from cranewatch.forensics.windows.remote_tools import tool_named
from cranewatch.forensics.windows.tree import WindowsTree, registry_finding, text_of
from cranewatch.model import Finding, Severity

NAME = "windows_amcache"
_FILES = "Root\\InventoryApplicationFile"
HASHED_BYTES = 31_457_280  # Amcache's SHA-1 covers at most the first 30 MiB of a file
_NAME = r"(?:^|\\)"
_ATTACK: tuple[tuple[str, re.Pattern[str], Severity, str], ...] = (
    ("Mimikatz", re.compile(r"mimikatz|mimilib\.dll|mimidrv\.sys", re.I), Severity.HIGH, "credential"),
    ("LaZagne", re.compile(_NAME + r"lazagne[^\\]*\.exe$", re.I), Severity.HIGH, "credential"),
    ("password dumper", re.compile(_NAME + r"(pwdump\d*|fgdump|gsecdump|wce(32|64)?)\.exe$", re.I), Severity.HIGH,
     "credential"),
    ("Impacket", re.compile(_NAME + r"(secretsdump|wmiexec|smbexec|atexec|dcomexec|psexec_?py)(\.py)?\.exe$", re.I),
     Severity.HIGH, "credential"),
    ("Rubeus/SharpHound", re.compile(_NAME + r"(rubeus|sharphound|seatbelt|certify|sharpup)\.exe$", re.I),
     Severity.HIGH, "credential"),
    ("netcat", re.compile(_NAME + r"(nc|nc64|ncat|netcat)\.exe$", re.I), Severity.HIGH, "backdoor"),
    ("tunnel (chisel, ligolo, socat)", re.compile(_NAME + r"(chisel|ligolo[^\\]*|socat)\.exe$", re.I), Severity.HIGH,
     "backdoor"),
    ("PsExec", re.compile(_NAME + r"(psexec(64)?|psexesvc|paexec)\.exe$", re.I), Severity.MEDIUM, "remote-access-tool"),
    ("ProcDump", re.compile(_NAME + r"procdump(64)?\.exe$", re.I), Severity.MEDIUM, "credential"),
    ("rclone", re.compile(_NAME + r"rclone\.exe$", re.I), Severity.MEDIUM, "remote-access-tool"),
)
_SHA1 = re.compile(r"[0-9a-f]{40}")


def attack_tool(path: str) -> tuple[str, Severity, str] | None:
    """(tool, severity, category) of an attacker's tool named by ``path``, or None."""
    for tool, pattern, severity, category in _ATTACK:
        if pattern.search(path):
            return tool, severity, category
    return None


def check(win: WindowsTree) -> Iterator[Finding]:
    amcache = win.hive_at("Windows/AppCompat/Programs/Amcache.hve", "Amcache")
    files = win.key(amcache, _FILES) if amcache is not None else None
    if amcache is None or files is None:
        return
    seen: set[str] = set()
    hashed: dict[str, set[str]] = {}  # image path -> the SHA-1s Amcache recorded for it
    first: dict[str, tuple[str, str, str]] = {}  # image path -> (key, recorded path, SHA-1)
    for entry in win.subkeys(amcache, files, _FILES):
        where = f"{_FILES}\\{entry.name}"
        values = win.values(amcache, entry, where)
        path = text_of(values.get("lowercaselongpath"))
        if not path:
            continue
        sha1 = text_of(values.get("fileid")).lower()[4:]  # "0000" + SHA-1
        sha1 = sha1 if _SHA1.fullmatch(sha1) else ""
        name = path.rsplit("\\", 1)[-1]
        tool = tool_named(path)
        if tool is not None and tool not in seen:
            seen.add(tool)
            yield registry_finding(
                win, amcache, where, "LowerCaseLongPath", path,
                rule="windows.amcache-tool", category="remote-access-tool", severity=Severity.HIGH,
                title=f"{tool} recorded by Amcache ({name})", technique=("T0822", "T1219"),
                remedy=(f"Find when and by whom {tool} was used (event logs, the tool's own logs); remove it if it is "
                        "still present and change the passwords of accounts used while it was."),
                extra={"sha1": sha1}, id_key=(tool,),
            )
        attack = attack_tool(path)
        if attack is not None and attack[0] not in seen:
            seen.add(attack[0])
            yield registry_finding(
                win, amcache, where, "LowerCaseLongPath", path,
                rule="windows.amcache-attack-tool", category=attack[2], severity=attack[1],
                title=f"{attack[0]} recorded by Amcache ({name}): an attacker's tool was on this computer",
                technique=("T1003", "T1572", "T1570") if attack[2] != "remote-access-tool" else ("T1570", "T1219"),
                remedy=(f"Find when and by whom {name} was run (Security and Sysmon logs around the Amcache record); "
                        "treat the accounts used on this computer as compromised and change their passwords; "
                        "remove the tool and whatever brought it."),
                extra={"sha1": sha1, "tool": attack[0]}, id_key=("attack", attack[0]),
            )
        if sha1 and path.startswith("c:\\"):
            image_path = win.find(path[3:])
            if image_path is not None and win.image.entries[image_path].type == "file":
                hashed.setdefault(image_path, set()).add(sha1)
                first.setdefault(image_path, (where, path, sha1))
    for image_path, recorded in hashed.items():
        try:
            with win.image.open(image_path) as fh:
                now = hashlib.sha1(fh.read(HASHED_BYTES)).hexdigest()
        except OSError as exc:
            win.problem(image_path, f"not read to compare with Amcache ({exc.strerror or exc})")
            continue
        if now in recorded:
            continue
        where, path, sha1 = first[image_path]
        system = place_of(path) == "system"
        name = path.rsplit("\\", 1)[-1]
        yield registry_finding(
            win, amcache, where, "FileId", f"0000{sha1}",
            rule="windows.amcache-changed", category="backdoor",
            severity=Severity.HIGH if system else Severity.MEDIUM,
            title=(f"{name} is not the file Windows inventoried (Amcache SHA-1 {sha1[:12]}…, now {now[:12]}…)"
                   + (": a program in the Windows folder replaced since" if system else ": replaced or updated since")),
            technique=("T1036", "T1554"),
            remedy=(f"Compare {image_path} with the genuine file (vendor's or Microsoft's release, or a golden image); "
                    "if nobody updated it, treat it as trojaned: restore it and look for what replaced it."),
            extra={"path": image_path, "sha1_recorded": sorted(recorded), "sha1_now": now}, id_key=("changed", image_path.lower()),
        )
