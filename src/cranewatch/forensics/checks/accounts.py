"""Accounts and credentials: who can log in, with what, and which secrets lie around.

From ``etc/passwd`` and ``etc/shadow``: UID 0 accounts besides root, empty password hashes and
hashes of known vendor defaults (``data/default-passwords.txt``, checked by hashing each
candidate with the account's own salt, never by cracking). From the files: SSH keys in
authorized_keys (a key in several accounts is a shared vendor key), private keys, and tokens
or passwords written into configs and scripts.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources

from cranewatch.forensics import crypt
from cranewatch.forensics.checks.base import FileView, ScanContext, active_lines
from cranewatch.forensics.image import Image
from cranewatch.model import Finding, Severity

NAME = "accounts"
_TECH = ("T0859", "T0812")

_AUTHORIZED_KEYS = re.compile(r"(^|/)(authorized_keys2?|authorized_keys\.d/[^/]+)$|^etc/ssh/authorized_keys/[^/]+$")
_KEY_LINE = re.compile(r"(?:^|\s)((?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-[\w@.-]+)\s+([A-Za-z0-9+/=]{40,}))(?:\s+(.*))?$")
_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----")
_SECRETS = (
    ("aws-key", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("slack-token", re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}")),
    # Linear time on hostile lines ("a.password.a.password..." cost n³ steps): the key, a run of
    # [\w.-] holding a keyword, is tried once per run (at its start, or after its first . or -
    # when a $, @ or % stands before it: the earliest start the old lookbehind allowed), its
    # keyword looked for ahead and the run taken whole (*+). The same matches as
    # (?<![$@%\w])[\w.\-]*(KEYWORD)[\w.\-]*: the key always ends where its run ends.
    ("password-assignment", re.compile(
        r"(?i)(?:(?<![$@%\w.\-])|(?<=[$@%])\w*+[.\-])"
        r"(?=[\w.\-]*?(password|passwd|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token))[\w.\-]*+"
        r"\s*(?:=|:(?=\s*[\"']))\s*[\"'](?!(?:define|undef|changeme|none|null|false|true)[\"'])([^\s\"'$%{<]{4,}+)[\"']|"
        r"^\s*+(?=[\w.\-]*?(password|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token))[\w.\-]*+\s*=\s*"
        r"(?!\$|%|<|\{|\*+$|changeme|none|null|false|true|yes|no\b)([^\s\"'#;,$]{4,})", re.M)),
    # a scheme is at most 32 characters: a start inside a long run of "a.a.a..." looks no further
    ("url-credentials", re.compile(r"\b[a-z][\w+.\-]{0,31}://[^\s:/@\"']++:([^\s@/\"']{3,}+)@[\w.\-]+")),
)


# Every line a _SECRETS pattern can match holds one of these (see FileView.lines_with).
_SECRET_TRIGGER = re.compile(
    r"AKIA|ASIA|gh[pousr]_|xox[abpr]-|passw|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token|"
    r"://[^\s:/@\"']+:", re.I
)


@cache
def default_passwords() -> tuple[tuple[str, str], ...]:
    """The shipped (user, password) pairs; user ``*`` applies to every account."""
    text = resources.files("cranewatch.forensics").joinpath("data/default-passwords.txt").read_text()
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and ":" in line:
            user, _, password = line.partition(":")
            pairs.append((user.strip(), password))
    return tuple(pairs)


def check_image(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    yield from _shared_keys(image, ctx)
    passwd_path = image.resolve("etc/passwd")
    passwd = image.read_text("etc/passwd") or ""
    shells: dict[str, str] = {}
    for number, line in enumerate(passwd.splitlines(), 1):
        fields = line.split(":")
        if len(fields) < 7 or line.startswith("#"):
            continue
        user, uid, shell = fields[0], fields[2], fields[6]
        shells[user] = shell
        if uid == "0" and user != "root":
            yield ctx.finding(
                rule="account.uid0", category="credential", severity=Severity.CRITICAL,
                title=f"account {user} has UID 0 (a second root)", path=passwd_path or "etc/passwd", line=number,
                excerpt_text=line, technique=_TECH, key=(user,),
                remedy=f"Delete {user} or give it its own UID; one root account, used through sudo.",
            )
        if fields[1] == "" :
            yield ctx.finding(
                rule="account.empty-password", category="credential", severity=Severity.CRITICAL,
                title=f"account {user} has an empty password field in passwd", path=passwd_path or "etc/passwd",
                line=number, excerpt_text=f"{user}::…", technique=_TECH, key=(user,),
                remedy=f"Lock {user} (passwd -l) or set a password the port controls.",
            )
    shadow_path = image.resolve("etc/shadow")
    shadow = image.read_text("etc/shadow") or ""
    defaults = default_passwords()
    for number, line in enumerate(shadow.splitlines(), 1):
        fields = line.split(":")
        if len(fields) < 2:
            continue
        user, hashed = fields[0], fields[1]
        login = not shells.get(user, "/bin/sh").endswith(("nologin", "false", "sync"))
        if hashed == "":
            yield ctx.finding(
                rule="account.empty-password", category="credential",
                severity=Severity.CRITICAL if login else Severity.MEDIUM,
                title=f"account {user} has no password", path=shadow_path or "etc/shadow", line=number,
                excerpt_text=f"{user}::…", technique=_TECH, key=(user,),
                remedy=f"Lock {user} (passwd -l) or set a password the port controls.",
            )
            continue
        if hashed.startswith(("!", "*")) or len(hashed) < 13:
            continue
        if not crypt.available():
            continue
        for candidate_user, password in defaults:
            if candidate_user not in ("*", user):
                continue
            if crypt.check_password(password, hashed):
                scheme = hashed.split("$")[1] if hashed.startswith("$") else "des"
                yield ctx.finding(
                    rule="account.default-password", category="credential", severity=Severity.CRITICAL,
                    title=f"account {user} uses a known default password",
                    path=shadow_path or "etc/shadow", line=number, excerpt_text=f"{user}:${scheme}$…",
                    technique=_TECH, key=(user,), values={"user": user, "scheme": scheme},
                    remedy=f"Set a unique password for {user} (or lock it) before the crane enters service.",
                )
                break


def _shared_keys(image: Image, ctx: ScanContext) -> Iterator[Finding]:
    """One key in several accounts' authorized_keys: one credential opens them all."""
    holders: dict[str, list[str]] = {}
    for entry in image.files():
        if not _AUTHORIZED_KEYS.search(entry.path) or entry.size > 1 << 20:
            continue
        for _, line in active_lines((image.read_text(entry.path) or "").splitlines()):
            match = _KEY_LINE.search(line)
            if match:
                holders.setdefault(_fingerprint(match.group(2)), []).append(entry.path)
    for fingerprint, paths in sorted(holders.items()):
        if len(set(paths)) > 1:
            files = sorted(set(paths))
            yield ctx.finding(
                rule="account.shared-key", category="credential", severity=Severity.HIGH,
                title=f"one SSH key opens {len(files)} accounts ({', '.join(files)})", path=files[0],
                technique=_TECH, key=(fingerprint,), values={"fingerprint": fingerprint, "files": files},
                remedy="Give every person and service its own key; remove the shared one.",
            )


def _fingerprint(blob: str) -> str:
    try:
        digest = hashlib.sha256(base64.b64decode(blob)).digest()
    except ValueError:
        return "invalid"
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_file(view: FileView, ctx: ScanContext) -> Iterator[Finding]:
    if view.kind != "text":
        return
    if _AUTHORIZED_KEYS.search(view.path):
        for number, line in active_lines(view.lines):
            match = _KEY_LINE.search(line)
            if not match:
                continue
            fingerprint = _fingerprint(match.group(2))
            comment = (match.group(3) or "").strip()
            yield ctx.finding(
                rule="account.authorized-key", category="credential", severity=Severity.HIGH,
                title=f"SSH key grants login ({comment or 'no comment'})", path=view.path, line=number,
                excerpt_text=f"{line.split()[0]} …{match.group(2)[-12:]} {comment}", technique=_TECH,
                key=(fingerprint,), values={"fingerprint": fingerprint, "comment": comment},
                remedy="Remove keys the port does not hold; vendor keys shared across cranes open every crane at once.",
            )
        return
    if not view.in_config_scope and view.owner is not None:
        return
    match = _PRIVATE_KEY.search(view.text)  # one scan of the text, not a loop over its lines
    if match is not None:
        number = view.line_at(match.start())
        if re.search(r"(^|/)etc/ssh/ssh_host_\w+_key$", view.path):
            yield ctx.finding(
                rule="credential.ssh-host-key", category="credential", severity=Severity.MEDIUM,
                title="SSH host key baked into the image (every crane built from it shares the key)",
                path=view.path, line=number, excerpt_text=match.group(0), technique=("T0859",),
                remedy="Delete the host keys from the image; let each crane generate its own on first boot.",
            )
            return
        encrypted = "ENCRYPTED" in match.group(1) or "Proc-Type: 4,ENCRYPTED" in view.text
        yield ctx.finding(
            rule="credential.private-key", category="credential",
            severity=Severity.MEDIUM if encrypted else Severity.HIGH,
            title=f"{'encrypted ' if encrypted else ''}private key ({match.group(1).strip()}) in the image",
            path=view.path, line=number, excerpt_text=match.group(0), technique=_TECH,
            remedy="Remove the key and revoke it everywhere it is trusted; keys are issued per crane by the port.",
        )
        return
    if not view.in_config_scope or view.distribution:
        return  # a distribution's default configs and examples hold placeholders, not secrets
    for number, line in view.lines_with(_SECRET_TRIGGER):
        for name, pattern in _SECRETS:
            match = pattern.search(line)
            if match:
                secret = next((g for g in reversed(match.groups()) if g), match.group(0))
                masked = line.replace(secret, secret[:2] + "…" if len(secret) > 2 else "…")
                yield ctx.finding(
                    rule=f"credential.{name}", category="credential", severity=Severity.MEDIUM,
                    title=f"secret in a {'script' if view.is_script else 'config file'} ({name})",
                    path=view.path, line=number, excerpt_text=masked, technique=("T0812",), key=(number,),
                    remedy="Move the secret to the port's secret store and rotate it.",
                )
                return
