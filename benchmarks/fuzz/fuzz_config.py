"""Long fuzz run of the configuration loaders: mutated profiles, fleet files and baselines.

    PYTHONPATH=src .venv/bin/python benchmarks/fuzz/fuzz_config.py                 # 2,000 each
    PYTHONPATH=src .venv/bin/python benchmarks/fuzz/fuzz_config.py --cases 200 --seed 7

Each case is one file written to a temporary directory and loaded the way the commands load
it, then used the way they use it:

- profile: ``load_profile``; what loads makes its in-service ruleset (one in 20 is parsed by
  ``nft -c`` when this machine can);
- fleet file: ``load_fleet``; every crane with a zone gets its quarantine ruleset;
- baseline: ``read_baseline`` of a baseline learned from ``data/lab/normal`` with the STS-07
  profile (plus a learned model, so that part is fuzzed too); what loads makes the in-service
  ruleset with the STS-07 profile (``policy --baseline``), has its process envelopes built and
  the process checks run against ``data/lab/normal-2``.

A case ends ``ok``, ``error`` (a cranewatch error: exit 3 on the command line; each is
checked to carry a file and a line or byte offset), ``crash`` (any other exception: exit 70)
or ``hang`` (over ``--timeout`` seconds). The counts, the error classes, the slowest case and
the peak RSS are printed as the Markdown of ``benchmarks/fuzz/config.md``. Mutations:
``tests/config_mutations.py`` (the suite's bounded fuzz tests use the same ones).
"""

from __future__ import annotations

import argparse
import random
import resource
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from config_mutations import located, mutate_json, mutate_toml, outcome  # noqa: E402
from cranewatch.baseline import learn_baseline, read_baseline, save_baseline, to_json  # noqa: E402
from cranewatch.errors import EnvironmentProblem  # noqa: E402
from cranewatch.fleet.fleetfile import load_fleet  # noqa: E402
from cranewatch.policy import check_ruleset, inservice_ruleset, quarantine_ruleset  # noqa: E402
from cranewatch.process.engine import read_captures, run_checks  # noqa: E402
from cranewatch.process.envelope import ProcessBaseline  # noqa: E402
from cranewatch.profile import load_profile  # noqa: E402

LAB = REPO / "src" / "cranewatch" / "data" / "lab"
PROFILE = REPO / "profiles" / "sts-07.toml"
FLEET = REPO / "profiles" / "fleet-example.toml"


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


@dataclass
class Family:
    name: str
    cases: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    unlocated: list[str] = field(default_factory=list)
    hangs: int = 0
    slowest: float = 0.0
    seconds: float = 0.0
    nft_checked: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    peak_rss_mb: float = 0.0


def run_case(family: Family, load: Callable[[], Any], use: Callable[[Any], None], timeout: int, label: str) -> None:
    family.cases += 1
    signal.alarm(timeout)
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            kind, result = outcome(load)
            if kind == "ok":
                follow, detail = outcome(lambda: use(result))
                if follow.startswith("crash"):
                    kind, result = f"{follow} (after loading)", detail
        except Hang:
            kind, result = "hang", None
        finally:
            signal.alarm(0)
    for warning in caught:
        family.warnings[f"{warning.category.__name__}: {warning.message}"[:120]] += 1
    took = time.perf_counter() - started
    family.seconds += took
    family.slowest = max(family.slowest, took)
    top = kind.split(":")[0]
    family.kinds[top] += 1
    if top == "error":
        family.errors[kind.split(": ", 1)[1]] += 1
        if not located(result):
            family.unlocated.append(f"{label}: {result}")
    elif top == "crash":
        family.crashes.append(f"{label}: {kind}: {result!r}"[:300])
    elif top == "hang":
        family.hangs += 1


def fuzz_profiles(n: int, seed: int, tmp: Path, timeout: int, nft: bool) -> Family:
    family = Family("profiles")
    rng = random.Random(seed)
    source = PROFILE.read_text()
    for i in range(n):
        path = tmp / f"profile-{i}.toml"
        path.write_text(mutate_toml(source, rng), encoding="utf-8", errors="surrogateescape")

        def use(profile: Any, i: int = i) -> None:
            try:
                text = inservice_ruleset(profile)
            except Exception as exc:
                from cranewatch.errors import CranewatchError
                if isinstance(exc, CranewatchError):
                    return
                raise
            if nft and i % 20 == 0:
                check_ruleset(text)
                family.nft_checked += 1

        run_case(family, lambda path=path: load_profile(path), use, timeout, f"profiles seed {seed} case {i}")
        path.unlink()
    return family


def fuzz_fleets(n: int, seed: int, tmp: Path, timeout: int) -> Family:
    family = Family("fleet files")
    rng = random.Random(seed)
    source = FLEET.read_text()
    for i in range(n):
        path = tmp / f"fleet-{i}.toml"
        path.write_text(mutate_toml(source, rng), encoding="utf-8", errors="surrogateescape")

        def use(cranes: Any) -> None:
            from cranewatch.errors import CranewatchError
            for crane in cranes:
                if crane.zone:
                    try:
                        quarantine_ruleset(crane, "10.20.0.100")
                    except CranewatchError:
                        pass

        run_case(family, lambda path=path: load_fleet(path), use, timeout, f"fleet seed {seed} case {i}")
        path.unlink()
    return family


def base_baseline(tmp: Path) -> dict[str, Any]:
    import numpy as np

    from cranewatch.process.learned import LearnedModel

    profile = load_profile(PROFILE)
    learned = learn_baseline([LAB / "normal" / "crane-lan.pcap"], profile)
    assert learned.process is not None, "the lab capture teaches process envelopes"
    names = tuple(sorted(learned.process["value_range"]))[:3]
    m = len(names)
    model = LearnedModel(names, np.zeros(m), np.ones(m), np.zeros((2 * m + 1, m)), np.ones(m), np.ones(m),
                         0.5, 1.0, 86400.0, np.ones(m))
    with_model = replace(learned, process={**learned.process, "learned": model.to_json()})
    path = tmp / "base.json"
    save_baseline(with_model, path)
    read_baseline(path)  # the unmutated file loads
    return to_json(with_model)


def fuzz_baselines(n: int, seed: int, tmp: Path, timeout: int) -> Family:
    family = Family("baselines")
    rng = random.Random(seed)
    document = base_baseline(tmp)
    profile = load_profile(PROFILE)
    sink = read_captures([LAB / "normal-2" / "crane-lan.pcap"], profile)
    signals = sink.signals()
    frame = sink.frame()
    config = sink.resolved(frame)
    for i in range(n):
        path = tmp / f"baseline-{i}.json"
        path.write_text(mutate_json(document, rng), encoding="utf-8", errors="surrogateescape")

        def use(baseline: Any) -> None:
            inservice_ruleset(profile, baseline)  # `policy --baseline`
            if baseline.process is not None:
                envelopes = ProcessBaseline.from_json(baseline.process)
                run_checks(frame, config, envelopes, with_plots=False, signals=signals)

        run_case(family, lambda path=path: read_baseline(path), use, timeout, f"baselines seed {seed} case {i}")
        path.unlink()
    return family


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def nft_available() -> bool:
    try:
        check_ruleset("table inet cw_probe {\n}\n")
    except EnvironmentProblem:
        return False
    return True


def markdown(families: list[Family], args: argparse.Namespace, wall: float) -> str:
    out = [
        f"Run: `benchmarks/fuzz/fuzz_config.py --cases {args.cases} --seed {args.seed} --timeout {args.timeout}`"
        f" ({wall:.0f} s wall).",
        "",
        f"| family | cases | ok | error (exit 3) | crash (exit 70) | hang (> {args.timeout} s) "
        "| unlocated errors | slowest case | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in families:
        out.append(f"| {f.name} | {f.cases} | {f.kinds['ok']} | {f.kinds['error']} | {f.kinds['crash']} | "
                   f"{f.hangs} | {len(f.unlocated)} | {f.slowest * 1000:.0f} ms | {f.peak_rss_mb:.0f} MB |")
    for f in families:
        out += ["", f"**{f.name}**: {len(f.errors)} error classes; the most frequent:", ""]
        out += [f"- {count} × {kind}" for kind, count in f.errors.most_common(12)]
        if f.nft_checked:
            out.append(f"- rulesets of loaded profiles parsed by `nft -c`: {f.nft_checked}, all accepted")
        for text, count in f.warnings.most_common(5):
            out.append(f"- warning in {count} cases: {text}")
        for crash in f.crashes[:10]:
            out.append(f"- CRASH {crash}")
        for where in f.unlocated[:5]:
            out.append(f"- UNLOCATED {where}")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="mutated files per family (default 2000)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--timeout", type=int, default=20, help="seconds before a case counts as a hang")
    parser.add_argument("--only", choices=["profiles", "fleets", "baselines"], action="append")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    started = time.perf_counter()
    families: list[Family] = []
    nft = nft_available()
    with tempfile.TemporaryDirectory(prefix="cw-fuzz-config-") as tmp_name:
        tmp = Path(tmp_name)
        for name, run in (("profiles", lambda: fuzz_profiles(args.cases, args.seed, tmp, args.timeout, nft)),
                          ("fleets", lambda: fuzz_fleets(args.cases, args.seed, tmp, args.timeout)),
                          ("baselines", lambda: fuzz_baselines(args.cases, args.seed, tmp, args.timeout))):
            if args.only and name not in args.only:
                continue
            family = run()
            family.peak_rss_mb = peak_rss_mb()
            families.append(family)
            print(f"{family.name}: {family.cases} cases, {dict(family.kinds)}", file=sys.stderr)
    print(markdown(families, args, time.perf_counter() - started))
    return 1 if any(f.crashes or f.hangs for f in families) else 0


if __name__ == "__main__":
    raise SystemExit(main())
