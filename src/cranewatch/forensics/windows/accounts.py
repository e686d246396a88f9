"""Who a SID is: the account name behind the user SIDs Windows records (BAM keys ...).

Read once per image, from three places, the first that knows a SID wins:

- local accounts from the SAM hive (``sam.local_accounts``): the machine's account domain SID
  is the last 24 bytes of ``SAM\\Domains\\Account``'s ``V`` value (``S-1-5-21-a-b-c``), an
  account's SID that SID and its RID. Without a readable ``V`` the domain is taken from a
  ``ProfileList`` SID whose RID and user folder match a SAM account;
- well-known SIDs: ``S-1-5-18`` SYSTEM, ``-19`` LOCAL SERVICE, ``-20`` NETWORK SERVICE,
  ``S-1-5-90-0-N`` DWM-N, ``S-1-5-96-0-N`` UMFD-N;
- ``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\ProfileList\\<SID>``'s
  ``ProfileImagePath``: the user folder's name, for domain accounts that logged on here.

A SID none of them knows stays a SID. ``label`` gives ``ACCOUNT (SID)``; ``note`` says when the
account is the built-in Administrator (RID 500 of any domain) or a local account created on
the computer (RID 1000 on: by whoever installed it, on a crane the vendor or integrator).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from cranewatch.forensics.windows.sam import local_accounts
from cranewatch.forensics.windows.tree import WindowsTree

_PROFILES = "Microsoft\\Windows NT\\CurrentVersion\\ProfileList"
_DOMAIN = "SAM\\Domains\\Account"
_WELL_KNOWN = {"S-1-5-18": "NT AUTHORITY\\SYSTEM", "S-1-5-19": "NT AUTHORITY\\LOCAL SERVICE",
               "S-1-5-20": "NT AUTHORITY\\NETWORK SERVICE"}
_SESSION = re.compile(r"^S-1-5-(90|96)-0-(\d+)$")
_SESSION_NAMES = {"90": "Window Manager\\DWM-", "96": "Font Driver Host\\UMFD-"}
_DOMAIN_SID = re.compile(r"^(S-1-5-21-\d+-\d+-\d+)-(\d+)$")


def sid_text(raw: bytes) -> str:
    """A binary SID (revision, count, 6-byte big-endian authority, little-endian sub-authorities)."""
    revision, count = raw[0], raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack_from(f"<{count}I", raw, 8)
    return "-".join(["S", str(revision), str(authority), *map(str, subs)])


@dataclass
class Accounts:
    """The SIDs an image's SAM and ProfileList name."""

    domain: str | None = None  # the machine's account domain SID (S-1-5-21-a-b-c)
    local: dict[int, str] = field(default_factory=dict)  # RID -> name, from SAM
    profiles: dict[str, str] = field(default_factory=dict)  # SID (upper case) -> user folder name

    def name(self, sid: str) -> str | None:
        sid = sid.upper()
        match = _DOMAIN_SID.match(sid)
        if match is not None and match.group(1) == self.domain and int(match.group(2)) in self.local:
            return self.local[int(match.group(2))]
        if sid in _WELL_KNOWN:
            return _WELL_KNOWN[sid]
        if (session := _SESSION.match(sid)) is not None:
            return _SESSION_NAMES[session.group(1)] + session.group(2)
        return self.profiles.get(sid)

    def label(self, sid: str) -> str:
        """``ACCOUNT (SID)``, or the SID alone when no hive names it."""
        name = self.name(sid)
        return f"{name} ({sid})" if name else sid

    def note(self, sid: str) -> str | None:
        """What kind of account it is, when it matters to whoever reads the finding."""
        match = _DOMAIN_SID.match(sid.upper())
        if match is None:
            return None
        rid = int(match.group(2))
        if rid == 500:
            return "the built-in Administrator" + ("" if match.group(1) == self.domain else " of a domain")
        if match.group(1) == self.domain and rid >= 1000 and rid in self.local:
            return "a local account created on this computer (by the vendor or integrator who installed it)"
        return None


def read_accounts(win: WindowsTree) -> Accounts:
    """The accounts of ``win``'s SAM and SOFTWARE hives (either may be absent)."""
    found = Accounts()
    sam = win.machine_hive("SAM")
    if sam is not None:
        found.local = {rid: name for _where, rid, _flags, name, _hash in local_accounts(win, sam)}
        key = win.key(sam, _DOMAIN)
        v = win.values(sam, key, _DOMAIN).get("v") if key is not None else None
        if v is not None and isinstance(v.data, bytes) and len(v.data) >= 24 and v.data[-24:-12] == (
                b"\x01\x04" + bytes(5) + b"\x05\x15" + bytes(3)):
            found.domain = sid_text(v.data[-24:])
    software = win.machine_hive("SOFTWARE")
    key = win.key(software, _PROFILES) if software is not None else None
    if software is not None and key is not None:
        for profile in win.subkeys(software, key, _PROFILES):
            where = f"{_PROFILES}\\{profile.name}"
            path = win.values(software, profile, where).get("profileimagepath")
            if path is not None and isinstance(path.data, str) and path.data.strip("\\ \0"):
                found.profiles[str(profile.name).upper()] = path.data.strip("\\ \0").rsplit("\\", 1)[-1]
    if found.domain is None:
        lower = {name.lower(): rid for rid, name in found.local.items()}
        for sid, folder in found.profiles.items():
            match = _DOMAIN_SID.match(sid)
            if match is not None and lower.get(folder.lower()) == int(match.group(2)):
                found.domain = match.group(1)
                break
    return found
