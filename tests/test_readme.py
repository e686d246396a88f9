"""The README is the front door: its commands exist, are documented, and its first one works."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cranewatch.cli import COMMAND_MODULES, build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _command_names() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_command_module_is_built() -> None:
    assert len(_command_names()) == len(COMMAND_MODULES)


@pytest.mark.parametrize("name", _command_names())
def test_every_command_is_in_the_readme_and_has_an_example(name: str) -> None:
    assert f"cranewatch {name}" in README, f"README does not mention `cranewatch {name}`"
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    help_text = sub.choices[name].format_help()  # type: ignore[index]
    assert "Example" in help_text, f"`cranewatch {name} --help` has no Example"


def test_every_exit_code_is_documented() -> None:
    from cranewatch.errors import ExitCode

    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", README, re.M), f"exit code {int(code)} missing"


def test_the_two_commands_open_the_readme_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip() == "bash scripts/demo.sh"
    assert blocks[1].strip() == "bash scripts/test.sh"
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh$", ci, re.M)


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "cranewatch").exists(),
                    reason="the project's .venv is made by scripts/install-deps.sh")
def test_the_first_command_runs_the_demo(tmp_path: Path) -> None:
    """`bash scripts/demo.sh` as the README says, in a workspace of the test."""
    workspace = tmp_path / "ws"
    start = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "CRANEWATCH_HOME"}
    proc = subprocess.run(["bash", "scripts/demo.sh", "--workspace", str(workspace)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - start < 120
    assert "REJECTED" in proc.stdout
    for category in ("remote-access", "data-leak", "safety-override", "false-reading"):
        assert f"[{category}]" in proc.stdout
    assert (workspace / "sts-07-commissioning.html").stat().st_size > 10_000
    assert "Traceback" not in proc.stderr


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _all_parsers(child)


def test_the_readme_exit_code_table_is_what_every_help_ends_with() -> None:
    from cranewatch.errors import EXIT_CODE_MEANINGS, ExitCode

    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README.split("## Exit codes")[1], re.M))
    readme = {ExitCode(int(code)): text.replace("`", "") for code, text in rows.items()}
    assert readme == EXIT_CODE_MEANINGS
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > len(COMMAND_MODULES)  # the commands' own subcommands too (fleet add ...)
    for parser in parsers:
        help_text = " ".join(parser.format_help().split("Exit codes:\n")[-1].split())
        expected = " ".join(f"{int(code)} {text}" for code, text in sorted(readme.items()))
        assert help_text == expected, f"`{parser.prog} --help` does not end with the exit codes"
