"""Local accounts from the SAM hive: enabled built-in accounts, accounts without a password.

``SAM\\Domains\\Account\\Users\\<RID>``: the ``F`` value holds the account-control flags
(offset 0x38: disabled 0x1, password not required 0x4), the ``V`` value the user name and the
stored NT hash's length (4 or 0x18 bytes: no hash, a blank password). An enabled account that
needs no password or has none is high; the built-in Administrator (RID 500) or Guest (501)
enabled is medium. Hashes are never copied into the report.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cranewatch.forensics.windows.tree import Hive, WindowsTree, registry_finding
from cranewatch.model import Finding, Severity

NAME = "windows_sam"
_USERS = "SAM\\Domains\\Account\\Users"
_DISABLED, _NO_PASSWORD_NEEDED = 0x0001, 0x0004
_EMPTY_HASH_LENGTHS = (4, 0x18)  # RC4 (before 1607) and AES forms without a hash
_BUILT_IN = {500: "built-in Administrator", 501: "Guest"}


def _account(f: bytes, v: bytes) -> tuple[int, str, bool]:
    """(flags, user name, has an NT hash) from the F and V values."""
    flags = struct.unpack_from("<H", f, 0x38)[0]
    offset, length = struct.unpack_from("<II", v, 0x0C)
    name = v[offset + 0xCC: offset + 0xCC + length].decode("utf-16-le", "replace")
    nt_length = struct.unpack_from("<I", v, 0xAC)[0]
    return flags, name, nt_length not in _EMPTY_HASH_LENGTHS


def local_accounts(win: WindowsTree, sam: Hive) -> Iterator[tuple[str, int, int, str, bool]]:
    """(key path, RID, flags, user name, has an NT hash) of each account SAM lists."""
    users = win.key(sam, _USERS)
    for user in win.subkeys(sam, users, _USERS) if users is not None else ():
        try:
            rid = int(user.name, 16)
        except ValueError:
            continue  # the Names key
        where = f"{_USERS}\\{user.name}"
        values = win.values(sam, user, where)
        f, v = values.get("f"), values.get("v")
        if f is None or v is None or not isinstance(f.data, bytes) or not isinstance(v.data, bytes):
            continue
        try:
            flags, name, has_hash = _account(f.data, v.data)
        except (struct.error, IndexError) as exc:
            win.problem(sam.path, f"account {where} unreadable ({exc})")
            continue
        yield where, rid, flags, name, has_hash


def check(win: WindowsTree) -> Iterator[Finding]:
    sam = win.machine_hive("SAM")
    if sam is None:
        return
    for where, rid, flags, name, has_hash in local_accounts(win, sam):
        if flags & _DISABLED:
            continue
        if flags & _NO_PASSWORD_NEEDED or not has_hash:
            why = "needs no password" if flags & _NO_PASSWORD_NEEDED else "has a blank password"
            severity = Severity.HIGH
        elif rid in _BUILT_IN:
            why, severity = f"is the {_BUILT_IN[rid]}, enabled", Severity.MEDIUM
        else:
            continue
        yield registry_finding(
            win, sam, where, "F", f"flags 0x{flags:04x}",
            rule="windows.local-account", category="credential", severity=severity,
            title=f"local account {name} (RID {rid}) {why}", technique=("T0859", "T1078.003"),
            remedy=(f"Disable {name} (net user {name} /active:no) or give it a strong password held by the port; "
                    "vendor service accounts are named, personal and expire."),
            extra={"user": name, "rid": rid, "flags": flags, "nt_hash_stored": has_hash},
        )
