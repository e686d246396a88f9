"""The CLI front door: help, version and documented exit codes."""

from __future__ import annotations

import subprocess
import sys

from cranewatch.cli import main


def test_no_command_prints_help_and_exits_usage(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([]) == 2
    assert "cranewatch" in capsys.readouterr().err


def test_unknown_option_exits_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "cranewatch", "--no-such-option"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
