"""One module per CLI command; each exposes ``register(subparsers)`` (see ``cranewatch.cli``)."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from cranewatch.errors import (
    CranewatchError,
    EnvironmentProblem,
    InputError,
    Location,
    UsageError,
)
from cranewatch.model import Finding, Severity


def severity_option(text: str) -> Severity:
    """argparse ``type=`` for severity options (``--fail-on``, ``--min-severity``)."""
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_inputs(paths: Sequence[str], what: str = "capture") -> None:
    """Fail before any output when an input named on the command line cannot be read.

    Every problem is listed at once (exit 3, like any input that cannot be read). A directory
    is an input too (Zeek logs): it must be listable.
    """
    problems: list[CranewatchError] = []
    for path in paths:
        problem = _unreadable(path)
        if problem:
            problems.append(InputError(f"cannot read this {what}: {problem}",
                                       Location(file=path)))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputError(f"{len(problems)} of {len(paths)} inputs cannot be read:\n"
                         + "\n".join(f"  {p}" for p in problems))


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be read (None: it can). A pipe or device is not read ahead: the
    byte taken would be lost to the analysis."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            os.listdir(path)
        elif stat.S_ISREG(mode):
            with open(path, "rb") as handle:
                handle.read(1)
        elif not os.access(path, os.R_OK):
            return "Permission denied"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


STDOUT = "-"
OUT_HELP = "; - for standard output"


def out_file(out: str | None) -> str | None:
    """The file an ``--out`` names, or None for standard output (not given, or ``-``)."""
    return None if out is None or out == STDOUT else out


def write_out(text: str, out: str | None, errors: str = "strict") -> None:
    """Write a command's whole output to ``--out`` (a file, or standard output for None/``-``)."""
    path = out_file(out)
    if path is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8", errors))
        sys.stdout.buffer.flush()
        return
    try:
        Path(path).write_text(text, encoding="utf-8", errors=errors)
    except OSError as exc:
        problem = EnvironmentProblem if exc.errno == errno.ENOSPC else UsageError
        raise problem(f"cannot write: {exc.strerror}", Location(file=path)) from exc


FAIL_ON_SHOWN = 5


def fail_on_met(findings: Sequence[Finding], fail_on: Severity | None) -> bool:
    """Whether ``--fail-on`` is met; when it is, stderr says by which findings (worst first)."""
    if fail_on is None:
        return False
    met = sorted((f for f in findings if f.severity >= fail_on), key=lambda f: -f.severity)
    if not met:
        return False
    print(f"cranewatch: --fail-on {fail_on} met by {len(met)} finding{'s' if len(met) > 1 else ''}:",
          file=sys.stderr)
    for f in met[:FAIL_ON_SHOWN]:
        print(f"  {str(f.severity).upper():8} {f.id}  {f.title}", file=sys.stderr)
    if len(met) > FAIL_ON_SHOWN:
        print(f"  … {len(met) - FAIL_ON_SHOWN} more", file=sys.stderr)
    return True
