"""Bounded archive fuzzing in the suite: hostile tars, zips and cpios never end the scan.

The families and the generator are those of the long run (``benchmarks/fuzz/fuzz_archives.py``,
counts in ``benchmarks/fuzz/archives.md``), at a small scale and a fixed seed: huge member
counts, deep nesting, path traversal, symlink loops, long names, decompression bombs, odd zips
and mutated images of every format. Each case is scanned in this process; the properties:
only a located ``CranewatchError`` may come out (nothing else), each case takes seconds, no
temporary file is left behind, nothing is written outside, and a reverse shell planted in
``etc/rc.local`` before the hostile part is still found.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cranewatch.errors import CranewatchError
from cranewatch.forensics import scan_image

REPO = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_archives", REPO / "benchmarks/fuzz/fuzz_archives.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_archives"] = module
    spec.loader.exec_module(module)
    return module


FUZZ = _generator()
# Families whose cases put the reverse shell first and a hostile part after it.
SHELL_FIRST = {"many-members", "deep", "links", "long-names", "traversal"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("fuzz")
    victim = work / "victim"
    victim.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("FUZZ_VICTIM", str(victim))
    yield work, victim
    mp.undo()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _cases(work: Path) -> list[tuple[int, str, Path]]:
    # 48 cases: every family at least twice (the first len(WEIGHTS) cases go round the families).
    return list(FUZZ.cases(seed=19, count=48, work=work, scale=0.05))


@pytest.fixture(scope="module")
def cases(workspace: tuple[Path, Path]) -> list[tuple[int, str, Path]]:
    return _cases(workspace[0])


def test_every_family_is_covered(cases: list[tuple[int, str, Path]]) -> None:
    assert {family for _n, family, _p in cases} == set(FUZZ.FAMILIES)


def test_hostile_archives_never_end_the_scan(
    cases: list[tuple[int, str, Path]], workspace: tuple[Path, Path], private_tmp: Path
) -> None:
    victim = workspace[1]
    started = time.perf_counter()
    slowest = 0.0
    for number, family, path in cases:
        began = time.perf_counter()
        try:
            result = scan_image(path, workers=1)
        except CranewatchError as exc:  # nothing readable at all: a located error, exit 3
            assert exc.location is not None and str(path) in str(exc), (number, family, exc)
        except Exception as exc:
            pytest.fail(f"case {number} ({family}, {path.name}): {type(exc).__name__}: {exc}")
        else:
            if family in SHELL_FIRST:
                assert any(f.evidence[0].path == "etc/rc.local" and f.category == "backdoor" for f in result.findings), (
                    f"case {number} ({family}): the reverse shell before the hostile part was not found: {result.problems}"
                )
            assert all("\n" not in p and "\x1b" not in p for p in result.problems)  # names escaped in messages
        slowest = max(slowest, time.perf_counter() - began)
        assert list(private_tmp.iterdir()) == [], f"case {number} ({family}) left temporary files"
        assert list(victim.iterdir()) == [], f"case {number} ({family}) wrote outside the image"
    assert slowest < 15, f"slowest case {slowest:.1f} s"
    assert time.perf_counter() - started < 60
