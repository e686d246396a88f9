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
import sys
from collections.abc import Sequence

from cranewatch import __version__
from cranewatch.errors import CranewatchError, ExitCode, exit_codes_help

# One line per command module; the order is the order in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "analyze",
    "baseline",
    "signals",
    "profile",
    "scan_image",
    "fleet",
    "quarantine",
    "policy",
    "gate",
    "triage",
    "runs",
    "supersede",
    "report",
    "monitor",
    "serve",
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_module(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    try:
        return int(args.func(args))
    except CranewatchError as exc:
        if args.debug:
            raise
        print(f"cranewatch: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("cranewatch: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.OK)
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"cranewatch: internal error: {type(exc).__name__}: {exc}\n"
            "  this is a bug in cranewatch; re-run with --debug and report the traceback",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)
