"""Ask the real nftables whether it accepts a ruleset (``nft -c -f``), without loading it.

``verify_ruleset`` is what runs before any ruleset is written: always when nft can check
(installed, and root or CAP_NET_ADMIN), and required when the user asked for ``--check``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from cranewatch.errors import EnvironmentProblem, InputError, Location


def check_ruleset(text: str) -> None:
    """Raise ``InputError`` with nft's message if ``nft -c`` refuses ``text``.

    ``nft -c`` needs CAP_NET_ADMIN (it asks the kernel); without it an ``EnvironmentProblem``.
    """
    nft = shutil.which("nft")
    if nft is None:
        raise EnvironmentProblem("nft is not installed (Debian package nftables)")
    with tempfile.TemporaryDirectory(prefix="cw-nft-") as tmp:
        path = Path(tmp) / "ruleset.nft"
        path.write_text(text)
        done = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return
    message = done.stderr.strip() or done.stdout.strip()
    if "Operation not permitted" in message:
        raise EnvironmentProblem("nft -c needs root or CAP_NET_ADMIN to check a ruleset")
    raise InputError(f"nft refuses the ruleset:\n{message}", Location(file="<generated ruleset>"))


def verify_ruleset(text: str, *, required: bool = False) -> bool:
    """``nft -c`` the ruleset when this machine can; True when nft accepted it.

    A refusal is always an error. Without nft (or the privilege to run ``nft -c``) the
    ruleset is not checked: False, or an ``EnvironmentProblem`` when ``required``.
    """
    try:
        check_ruleset(text)
    except EnvironmentProblem:
        if required:
            raise
        return False
    return True
