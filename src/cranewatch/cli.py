"""Command-line front door: parse options, call the library, turn errors into exit codes.

Each command lives in ``cranewatch.commands.<name>`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Every command's help carries an
``Example:``. Errors raised as ``CranewatchError`` become one message on stderr and the exit
code of ``errors.ExitCode``; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from cranewatch import __version__
from cranewatch.errors import CranewatchError, ExitCode, exit_codes_help
from cranewatch.report.terminal import printable
from cranewatch.runtime import fewer_collections

# One line per command module; the order is the order in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "analyze",
    "baseline",
    "signals",
    "profile",
    "rules",
    "scan_image",
    "fleet",
    "quarantine",
    "policy",
    "gate",
    "triage",
    "runs",
    "supersede",
    "report",
    "evidence",
    "monitor",
    "serve",
    "users",
    "lab",
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors use our documented exit code, and whose help (every
    command's, the top level's) ends with the exit codes."""

    def format_help(self) -> str:
        return super().format_help().rstrip("\n") + "\n\n" + exit_codes_help() + "\n"

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with only the module ``only`` (start-up cost: each
    command module imports what its work needs, NumPy and the pipeline among them)."""
    parser = _Parser(
        prog="cranewatch",
        description="Protect ship-to-shore container cranes: isolate, examine, watch.",
    )
    parser.add_argument("--version", action="version", version=f"cranewatch {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and debug messages"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES if only is None else (only,):
        try:
            module = importlib.import_module(f"cranewatch.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cranewatch.commands.{name}":
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def _chosen_module(argv: Sequence[str]) -> str | None:
    """The command module the command line names, if it names one (else None: build all)."""
    for arg in argv:
        if arg.startswith("-"):
            if arg in ("-h", "--help", "--version"):
                return None
            continue
        name = arg.replace("-", "_")
        return name if name in COMMAND_MODULES else None
    return None


class _ClosedPipeGuard:
    """Standard output that outlives its reader: ``cranewatch analyze X | head -1``.

    When the reader goes away, writing raises ``BrokenPipeError``. Raised out of the command,
    it lost the command's exit code (an incomplete capture's 3 became 0) or ended in a
    traceback at the interpreter's last flush. Here the first broken write points the
    descriptor at /dev/null and every later write is dropped, so the command runs to its end
    and exits with its own code. ``buffer`` is guarded the same way (binary output).
    """

    def __init__(self, stream: Any, state: list[bool] | None = None) -> None:
        self._stream = stream
        self._broken = state if state is not None else [False]

    @property
    def buffer(self) -> _ClosedPipeGuard:
        return _ClosedPipeGuard(self._stream.buffer, self._broken)

    @property
    def reader_gone(self) -> bool:
        """The reader closed the pipe (a long-running command may take it as a stop)."""
        return self._broken[0]

    def write(self, data: Any) -> int:
        if not self._broken[0]:
            try:
                return int(self._stream.write(data))
            except BrokenPipeError:
                self._silence()
        return len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._broken[0]:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self._broken[0] = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real descriptor (a test's capture): dropping the writes is enough

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_module(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    stdout = sys.stdout
    sys.stdout = guard = _ClosedPipeGuard(stdout)
    # process-wide: the command line's choice, not the library's (a server makes it per run)
    collections = nullcontext() if getattr(args, "own_collections", False) else fewer_collections()
    try:
        with collections:
            return _run(args)
    finally:
        guard.flush()
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except CranewatchError as exc:
        if args.debug:
            raise
        print(f"cranewatch: error: {_escaped(exc)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("cranewatch: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"cranewatch: internal error: {type(exc).__name__}: {_escaped(exc)}\n"
            "  this is a bug in cranewatch; re-run with --debug and report the traceback",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)


def _escaped(exc: BaseException) -> str:
    """The message with control characters escaped (it may quote a file name or a field), its
    own line breaks kept: a profile error lists one problem per line."""
    return "\n".join(printable(line) for line in str(exc).split("\n"))
