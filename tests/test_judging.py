"""Typed edges: the profile and the baseline are loaded once, at the edge (``cranewatch.judging``,
the command line, the console), into typed objects; building the sinks never reads a file nor
runs the pipeline; the garbage collector is tuned by the command line and the console's runs,
never by the library."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import cranewatch.commands.analyze as analyze_command
import cranewatch.parallel
import cranewatch.pipeline
from cranewatch.baseline import Baseline, learn_baseline, save_baseline
from cranewatch.cli import main
from cranewatch.detect.engine import DetectionSink, build_sink
from cranewatch.errors import ExitCode
from cranewatch.judging import load_judging
from cranewatch.process.engine import ProcessSink
from cranewatch.profile import load_profile
from cranewatch.runtime import GC_YOUNG_THRESHOLD
from cranewatch.sinks import build_sinks, judged_sinks

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "cranewatch" / "data"
PROFILE = DATA / "profiles" / "sts-07.toml"
NORMAL = DATA / "lab" / "normal" / "crane-lan.pcap"
FALSE_LOAD = DATA / "lab" / "false-load" / "crane-lan.pcap"


class _Read(AssertionError):
    """A capture was read or the pipeline ran where nothing may be."""


@pytest.fixture
def no_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, opening a capture, running an analysis or starting readers fails loudly."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Read(f"read or ran with {args!r}")

    monkeypatch.setattr(cranewatch.pipeline, "open_capture", refuse)
    monkeypatch.setattr(cranewatch.pipeline.Analysis, "run", refuse)
    monkeypatch.setattr(cranewatch.pipeline, "analyze", refuse)
    monkeypatch.setattr(analyze_command, "analyze", refuse)
    monkeypatch.setattr(cranewatch.parallel, "ReadAhead", refuse)


# -- building a detector never runs the pipeline ------------------------------------------------


def test_sinks_built_from_what_the_edge_loaded_read_nothing(tmp_path: Path, no_pipeline: None) -> None:
    # the baseline file was saved before; loading it and building every sink reads no capture
    saved = tmp_path / "sts-07.baseline.json"
    save_baseline(Baseline(hosts={"10.20.7.10": frozenset({"02:00:00:00:07:10"})}), saved)
    judging = load_judging(PROFILE, saved)
    sinks = judged_sinks(judging, "STS-07")
    assert [type(s) for s in sinks] == [DetectionSink, ProcessSink]
    detectors = sinks[0]
    assert isinstance(detectors, DetectionSink)
    assert detectors.ctx.baseline is judging.baseline and detectors.ctx.profile is judging.profile


def test_a_capture_path_is_refused_by_the_sinks_before_anything_is_read(no_pipeline: None) -> None:
    # before: build_sink(baseline=capture) learned a baseline from it, build_sinks(path, ...)
    # loaded the profile again in every layer
    with pytest.raises(TypeError, match="Baseline"):
        build_sink(None, NORMAL)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Baseline"):
        build_sink(None, [str(NORMAL)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CraneProfile"):
        build_sink(str(PROFILE), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_sinks(load_profile(PROFILE), str(NORMAL), "STS-07")  # type: ignore[arg-type]


def test_a_clean_capture_is_learned_once_by_the_explicit_step(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[list[str]] = []
    real = cranewatch.pipeline.analyze

    def counted(paths: Any, **kwargs: Any) -> Any:
        runs.append([str(p) for p in paths])
        return real(paths, **kwargs)

    monkeypatch.setattr(cranewatch.pipeline, "analyze", counted)
    judging = load_judging(PROFILE, NORMAL)
    # one pass for the communications and the envelopes together (before: one each)
    assert runs == [[str(NORMAL)]]
    assert judging.baseline is not None and judging.process_baseline is not None
    again = learn_baseline([NORMAL])  # what `cranewatch baseline` learns (a second later, maybe)
    assert replace(judging.baseline, created=again.created) == again
    runs.clear()
    judged_sinks(judging, "STS-07")
    assert runs == []


# -- a broken profile or baseline: one located error, before any capture is read ----------------


def _broken_profile(tmp_path: Path) -> tuple[Path, int]:
    lines = PROFILE.read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == 'ip = "10.20.7.10"')
    lines[line - 1] = 'ip = "10.20.7.300"'
    broken = tmp_path / "broken.toml"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return broken, line


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_broken_profile_is_one_located_error_before_any_capture_is_read(
        tmp_path: Path, jobs: str, no_pipeline: None, capsys: pytest.CaptureFixture[str]) -> None:
    broken, line = _broken_profile(tmp_path)
    code = main(["analyze", str(FALSE_LOAD), "--profile", str(broken), "--jobs", jobs,
                 "--format", "jsonl"])
    captured = capsys.readouterr()
    assert code == ExitCode.INPUT == 3  # README: a bad profile is an input that cannot be read
    assert captured.out == ""
    assert captured.err.count("cranewatch: error:") == 1
    assert f"{broken}:{line}:" in captured.err and "10.20.7.300" in captured.err
    assert "Traceback" not in captured.err and "internal error" not in captured.err


def test_a_broken_saved_baseline_is_one_located_error_before_any_capture_is_read(
        tmp_path: Path, no_pipeline: None, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": 1, "tool_version": "x", "created": ""}, indent=1)[:-2]
                      + ',\n "pairs": [["10.20.7.20", "10.20.7.10", "502"]]\n}\n', encoding="utf-8")
    pairs_line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if '"pairs"' in text)
    code = main(["analyze", str(FALSE_LOAD), "--profile", str(PROFILE), "--baseline", str(broken)])
    captured = capsys.readouterr()
    assert code == 3 and captured.out == ""
    assert captured.err.count("cranewatch: error:") == 1
    assert f"{broken}:{pairs_line}:" in captured.err and "pairs" in captured.err


def test_monitor_loads_them_before_it_starts_a_capture(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import cranewatch.commands.monitor as monitor_command

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Read("a live capture was started")

    monkeypatch.setattr(monitor_command, "LiveCapture", refuse)
    broken, line = _broken_profile(tmp_path)
    code = main(["monitor", "lo", "--profile", str(broken)])
    err = capsys.readouterr().err
    assert code == 3 and f"{broken}:{line}:" in err and "internal error" not in err


# -- the collector: the command line's and the console's choice, never the library's ------------


def test_the_library_leaves_the_collector_alone_on_import_and_in_analyze() -> None:
    script = f"""
import gc, json
gc.set_threshold(1234, 11, 12)
before = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count())
import cranewatch, cranewatch.pipeline, cranewatch.sinks, cranewatch.judging, cranewatch.runtime
from cranewatch.pipeline import analyze
from cranewatch.judging import load_judging
from cranewatch.sinks import judged_sinks
imported = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count())
seen = []
class Watch:
    def on_event(self, event):
        if not seen:
            seen.append((gc.get_threshold(), gc.isenabled()))
    def on_series(self, series): pass
    def on_flow_end(self, flow): pass
    def finish(self): return []
judging = load_judging({str(PROFILE)!r}, {str(NORMAL)!r})
result = analyze([{str(FALSE_LOAD)!r}], sinks=[*judged_sinks(judging, None), Watch()])
after = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count())
print(json.dumps([before, imported, seen[0], after, len(result.findings)]))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          check=True)
    before, imported, during, after, findings = json.loads(done.stdout)
    assert before == [[1234, 11, 12], True, 0]
    assert imported == before and after == before
    assert during == [[1234, 11, 12], True]
    assert findings > 0  # the analysis did run (the false load is found)


def _threshold_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """The collector's thresholds as the detectors see them during ``analyze``."""
    seen: list[tuple[int, int, int]] = []

    class Watch:
        def on_event(self, event: object) -> None:
            if not seen:
                seen.append(gc.get_threshold())

        def on_series(self, series: object) -> None:
            return None

        def on_flow_end(self, flow: object) -> None:
            return None

        def finish(self) -> list[Any]:
            return []

    monkeypatch.setattr(analyze_command, "detector_sinks", lambda *a: [Watch()])
    return seen


def test_the_command_line_runs_a_command_with_fewer_collections(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = _threshold_seen(monkeypatch)
    before = gc.get_threshold()
    assert main(["analyze", str(NORMAL)]) == 0
    capsys.readouterr()
    assert seen and seen[0][0] >= GC_YOUNG_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_serve_is_not_one_run_for_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import cranewatch.commands.serve as serve_command

    seen: list[tuple[int, int, int]] = []

    def fake_run(args: Any) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(serve_command, "run", fake_run)
    before = gc.get_threshold()
    assert main(["serve"]) == 0
    assert seen == [before]  # the server's lifetime keeps the process's settings


def test_the_console_runs_what_it_starts_with_fewer_collections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cranewatch.report.commissioning as commissioning
    from web_helpers import build_store, client, console

    real = commissioning.build_report
    seen: list[tuple[int, int, int]] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold())
        return real(*args, **kwargs)

    monkeypatch.setattr(commissioning, "build_report", watched)
    db = tmp_path / "cw.db"
    build_store(db, findings=3)
    before = gc.get_threshold()
    with console(db) as server, client(server, "viewer") as viewer:
        page = viewer.get("/api/cranes")  # an ordinary page: the settings as they are
        assert page.status_code == 200 and gc.get_threshold() == before
        report = viewer.get("/crane/STS-07/report")
        assert report.status_code == 200 and "STS-07" in report.text
    assert len(seen) == 1 and seen[0][0] >= GC_YOUNG_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
