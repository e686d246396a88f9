"""Evaluate the learned mode on BATADAL (C-Town water network SCADA, hourly readings).

Train on the attack-free dataset03, score dataset04 and the labelled test set. Labels are read
only to score: hour-level ``ATT_FLAG`` (1 = under attack) and the attack windows of
``attacks_transcribed_holland202.csv`` for time-to-detect. Reported: precision, recall, F1, the
BATADAL S score (S = γ·S_TTD + (1−γ)·S_CM, γ = 0.5, Taormina et al. 2018) and the
time-to-detect of each attack.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cranewatch.errors import InputError, Location
from cranewatch.process.learned import LearnedModel, fit

DATASET03 = "BATADAL_dataset03_from_training_dataset_1.csv"
DATASET04 = "BATADAL_dataset04.csv"
TEST = "test_dataset.csv"  # the test set with its ATT_FLAG column (the competition's labels)
ATTACKS = "attacks_transcribed_holland202.csv"
HOURS_PER_DAY = 24.0


@dataclass(frozen=True, slots=True)
class Table:
    times: np.ndarray  # epoch seconds (hourly)
    names: tuple[str, ...]
    values: np.ndarray  # (n, m)
    labels: np.ndarray | None  # ATT_FLAG == 1


def load(path: Path) -> Table:
    """One BATADAL CSV (``DD/MM/YY HH`` times; column names may carry spaces)."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", Location(file=str(path))) from exc
    header = [h.strip() for h in rows[0]]
    if header[0] != "DATETIME":
        raise InputError("not a BATADAL file (no DATETIME column)", Location(file=str(path), line=1))
    label_col = header.index("ATT_FLAG") if "ATT_FLAG" in header else None
    names = tuple(h for i, h in enumerate(header[1:], 1) if i != label_col)
    times, values, labels = [], [], []
    for line, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            stamp = datetime.strptime(row[0].strip(), "%d/%m/%y %H").replace(tzinfo=UTC)
            times.append(stamp.timestamp())
            values.append([float(row[i]) for i in range(1, len(header)) if i != label_col])
            if label_col is not None:
                labels.append(float(row[label_col]) == 1.0)
        except (ValueError, IndexError) as exc:
            raise InputError(f"bad row: {exc}", Location(file=str(path), line=line)) from exc
    return Table(np.array(times), names, np.array(values),
                 np.array(labels, dtype=bool) if label_col is not None else None)


@dataclass(frozen=True, slots=True)
class Attack:
    dataset: str
    number: int
    start: float
    end: float
    target: str


def load_attacks(path: Path) -> list[Attack]:
    out = []
    with path.open(newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    for row in csv.DictReader(lines):
        def when(text: str) -> float:
            return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()

        out.append(Attack(row["dataset"], int(row["attack_id"]), when(row["start"]),
                          when(row["end"]), row["target"]))
    return out


def scores(alarm: np.ndarray, truth: np.ndarray, times: np.ndarray,
           attacks: list[Attack]) -> dict[str, Any]:
    """Precision, recall, F1, S_CM, S_TTD, S and per-attack time-to-detect (hours)."""
    tp = int((alarm & truth).sum())
    fp = int((alarm & ~truth).sum())
    fn = int((~alarm & truth).sum())
    tn = int((~alarm & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tnr = tn / (tn + fp) if tn + fp else 0.0
    per_attack = []
    ttd_fractions = []
    for attack in attacks:
        inside = (times >= attack.start) & (times <= attack.end)
        if not inside.any():
            continue
        hits = np.flatnonzero(alarm & inside)
        duration_h = (attack.end - attack.start) / 3600.0
        ttd = None if len(hits) == 0 else (times[hits[0]] - attack.start) / 3600.0
        ttd_fractions.append(1.0 if ttd is None else ttd / duration_h)
        # An alarm already on in the hour before the attack says little about detecting it.
        before = np.flatnonzero(times < attack.start)
        already = bool(len(before) and alarm[before[-1]])
        per_attack.append({"attack": attack.number, "target": attack.target,
                           "duration_h": duration_h, "ttd_h": ttd, "alarm_before": already})
    s_cm = (recall + tnr) / 2
    s_ttd = 1.0 - float(np.mean(ttd_fractions)) if ttd_fractions else 0.0
    return {
        "precision": precision, "recall": recall, "f1": f1, "tpr": recall, "tnr": tnr,
        "s_cm": s_cm, "s_ttd": s_ttd, "s": 0.5 * s_ttd + 0.5 * s_cm,
        "alarms": int(alarm.sum()), "attack_hours": int(truth.sum()), "attacks": per_attack,
        "detected": sum(1 for a in per_attack if a["ttd_h"] is not None),
    }


# Chosen on the two development sets (dataset03 and the normal hours of dataset04), never on
# the test set: dataset03 is a full-precision simulation, the others are rounded to 0.01 and
# drift, so residuals finer than 0.3 σ of a signal and CUSUM drifts under 1 σ only measure that.
NOISE_FLOOR = 0.3
DRIFT = 1.0


def train(folder: Path, target_per_day: float = 0.1) -> LearnedModel:
    clean = load(folder / DATASET03)
    return fit(clean.values, clean.names, samples_per_day=HOURS_PER_DAY,
               target_per_day=target_per_day, noise_floor=NOISE_FLOOR, drift=DRIFT)


def evaluate(folder: Path, target_per_day: float = 0.1) -> dict[str, Any]:
    """Train on dataset03, score dataset04 and the test set; returns the result document."""
    model = train(folder, target_per_day)
    attacks = load_attacks(folder / ATTACKS)
    result: dict[str, Any] = {"target_false_alarms_per_day": target_per_day}
    for key, name, tag in (("dataset04", DATASET04, "dataset04"), ("test", TEST, "test")):
        table = load(folder / name)
        if table.names != model.names:
            raise InputError("columns differ from dataset03", Location(file=str(folder / name)))
        assert table.labels is not None
        alarm = model.alarms(table.values)
        mine = [a for a in attacks if a.dataset == tag]
        result[key] = scores(alarm, table.labels, table.times, mine)
        if key == "dataset04":
            # dataset04 labels only part of each attack (the rest were -999, "unknown", in the
            # original release and read 0 here): score also against the full attack windows.
            windows = np.zeros(len(table.times), dtype=bool)
            for a in mine:
                windows |= (table.times >= a.start) & (table.times <= a.end)
            result["dataset04_windows"] = scores(alarm, windows, table.times, mine)
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [f"learned mode, target {result['target_false_alarms_per_day']} false alarms/day"]
    for key in ("dataset04", "dataset04_windows", "test"):
        r = result[key]
        lines.append(
            f"{key}: precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f} "
            f"TNR {r['tnr']:.3f} S_TTD {r['s_ttd']:.3f} S_CM {r['s_cm']:.3f} S {r['s']:.3f} "
            f"({r['detected']}/{len(r['attacks'])} attacks detected)"
        )
        for a in r["attacks"]:
            ttd = "missed" if a["ttd_h"] is None else f"{a['ttd_h']:.0f} h"
            note = " (alarm already on the hour before)" if a["alarm_before"] else ""
            lines.append(f"  attack {a['attack']:2d} {a['target']:<5} "
                         f"{a['duration_h']:5.0f} h  time-to-detect {ttd}{note}")
    return "\n".join(lines)
