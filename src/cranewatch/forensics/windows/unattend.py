"""Passwords left in Windows setup answer files (unattend.xml, autounattend.xml, sysprep).

Setup copies the answer file to ``Windows/Panther`` and may leave it in ``Windows/System32/
sysprep``; ``AdministratorPassword``, ``AutoLogon/Password`` and ``LocalAccount/Password``
hold the password in clear text or merely base64 (``PlainText`` false). ``sysprep.inf`` keeps
``AdminPassword=`` in clear. The evidence gives the element and the length, never the password.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from cranewatch.forensics.windows.safe_xml import local
from cranewatch.forensics.windows.tree import WindowsTree
from cranewatch.model import Finding, Severity

NAME = "windows_unattend"
_NAMES = ("unattend.xml", "autounattend.xml", "sysprep.xml", "unattended.xml")
_FOLDERS = ("", "windows/", "windows/panther/", "windows/panther/unattend/", "windows/system32/sysprep/",
            "windows/system32/sysprep/panther/", "sysprep/")
_INF_PASSWORD = re.compile(r"^\s*(AdminPassword|Password)\s*=\s*\"?([^\"\r\n]*)", re.I | re.M)
_REMEDY = ("Delete the answer file from the installed system, and change every password it held: setup left it "
           "readable by anyone with the disk or a backup.")


def check(win: WindowsTree) -> Iterator[Finding]:
    for folder in _FOLDERS:
        for name in _NAMES:
            path = win.find(folder + name)
            if path is not None:
                yield from _answer_file(win, path)
        inf = win.find(folder + "sysprep.inf")
        if inf is not None:
            yield from _sysprep_inf(win, inf)


def _answer_file(win: WindowsTree, path: str) -> Iterator[Finding]:
    root = win.read_xml(path, "answer file", limit=4 << 20)
    if root is None:
        return
    parents = {child: parent for parent in root.iter() for child in parent}
    for element in root.iter():
        if local(element.tag) not in ("Password", "AdministratorPassword"):
            continue
        fields = {local(c.tag): (c.text or "").strip() for c in element}
        value = fields.get("Value", (element.text or "").strip())
        if not value:
            continue
        parent = parents.get(element)
        owner = local(parent.tag) if parent is not None else ""
        account = ""
        if parent is not None:
            account = next(((c.text or "").strip() for c in parent if local(c.tag) in ("Name", "Username")), "")
        what = f"{owner}/{local(element.tag)}" if owner else local(element.tag)
        yield win.ctx.finding(
            rule="windows.unattend-password", category="credential", severity=Severity.HIGH,
            title=f"password in the setup answer file ({what}{' for ' + account if account else ''})",
            path=path, excerpt_text=f"<{what}> {len(value)} characters, PlainText={fields.get('PlainText', '?')}",
            technique=("T0859", "T1552.001"), key=(what, account), values={"element": what, "account": account},
            remedy=_REMEDY,
        )


def _sysprep_inf(win: WindowsTree, path: str) -> Iterator[Finding]:
    data = win.read_bytes(path, limit=1 << 20) or b""
    text = data.decode("utf-8", "replace")
    for match in _INF_PASSWORD.finditer(text):
        if match.group(2).strip() in ("", "*"):
            continue
        yield win.ctx.finding(
            rule="windows.unattend-password", category="credential", severity=Severity.HIGH,
            title=f"password in sysprep.inf ({match.group(1)})", path=path,
            line=text.count("\n", 0, match.start()) + 1, excerpt_text=f"{match.group(1)}=<{len(match.group(2))} characters>",
            technique=("T0859", "T1552.001"), key=(match.group(1).lower(),), remedy=_REMEDY,
        )
