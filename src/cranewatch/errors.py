"""One exception root for cranewatch; every error says where it happened.

The CLI alone turns these into one-line messages and exit codes (see ``ExitCode``);
library code raises them and never prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README (contract)."""

    OK = 0
    FINDINGS = 1  # analysis completed and --fail-on was met
    USAGE = 2  # bad command line (argparse also uses 2)
    INPUT = 3  # an input could not be read whole: corrupt/truncated capture, bad profile, bad image
    ENVIRONMENT = 4  # a needed tool, privilege or service is missing (e.g. not root for the lab)
    INTERRUPTED = 130  # Ctrl-C
    INTERNAL = 70  # a bug in cranewatch: please report with --debug output


# What each exit code means: the README's table says the same (tests/test_readme.py checks),
# and every command's --help ends with it (``exit_codes_help``).
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "the command completed (an analysis with findings still exits 0 unless "
    "--fail-on is met)",
    ExitCode.FINDINGS: "--fail-on SEVERITY was met: a finding of that severity or above "
    "(gate --exit-code: the crane was not cleared)",
    ExitCode.USAGE: "usage error: bad option or argument, unknown crane, no store at --db (none "
    "is created), refused action (e.g. a life-cycle transition, a remediation its evidence does "
    "not show)",
    ExitCode.INPUT: "bad input: an input that is missing or cannot be read, or is a device, "
    "FIFO or directory that is not a log directory (then nothing is reported), or a corrupt, truncated or unknown capture, profile, log or image (what could "
    "be read was still analysed and reported, with file and frame, or line, or path)",
    ExitCode.ENVIRONMENT: "environment: a needed tool, privilege (root) or service is missing; "
    "the store cannot be written (read-only file or mount, disk full, I/O error: the cause is "
    "named)",
    ExitCode.INTERNAL: "internal error (a bug): re-run with --debug and report the traceback",
    ExitCode.INTERRUPTED: "interrupted",
}


def exit_codes_help(width: int = 92) -> str:
    """The exit-code table as the end of a command's --help."""
    import textwrap

    lines = ["Exit codes:"]
    for code in sorted(EXIT_CODE_MEANINGS):
        lines += textwrap.wrap(EXIT_CODE_MEANINGS[code], width, initial_indent=f"  {int(code):<4} ",
                               subsequent_indent=" " * 7)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem is: a capture frame, a file line, a path inside an image."""

    file: str | None = None
    frame: int | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None  # path inside an image or archive
    offset: int | None = None  # byte offset in the file

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file)
        if self.path:
            parts.append(self.path)
        where = ":".join(parts)
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        if self.frame is not None:
            where += f" frame {self.frame}"
        if self.offset is not None:
            where += f" (byte {self.offset})"
        return where.strip() or "<unknown>"


class CranewatchError(Exception):
    """Root of every error cranewatch raises on purpose."""

    exit_code: ExitCode = ExitCode.INPUT

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"


class UsageError(CranewatchError):
    """The command line or a request asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class InputError(CranewatchError):
    """An input file is unreadable, corrupt, truncated or of an unknown kind."""

    exit_code = ExitCode.INPUT


class CaptureError(InputError):
    """A packet capture is not a capture, is truncated or has a corrupt block."""


class DecodeError(InputError):
    """A protocol decoder met bytes that do not follow the protocol.

    Decoders raise it for one PDU; the pipeline records it as a warning with the
    frame number and goes on with the next PDU.
    """


class ProfileError(InputError):
    """A crane profile or baseline is invalid. ``problems`` holds every problem found."""

    def __init__(
        self, message: str, location: Location | None = None, problems: list[CranewatchError] | None = None
    ) -> None:
        super().__init__(message, location)
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return "\n".join([super().__str__(), *(f"  {p}" for p in self.problems)])


class ImageError(InputError):
    """A filesystem image or archive cannot be read safely (or a safety limit was hit)."""


class EnvironmentProblem(CranewatchError):
    """A needed tool, privilege or service is missing on this machine."""

    exit_code = ExitCode.ENVIRONMENT


class StoreUnreachable(EnvironmentProblem):
    """The central store cannot be reached now (network, server down): a run is spooled
    locally and recorded at the next contact (``store.spool``)."""


class StateError(CranewatchError):
    """A refused action: e.g. a life-cycle transition that the rules do not allow."""

    exit_code = ExitCode.USAGE
