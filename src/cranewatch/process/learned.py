"""Learned mode: relations between signals learned from a clean period, for plants without a
physics model.

Each signal is predicted by ridge regression from every other signal at the same instant and
every signal (itself included) one step earlier; what the regression cannot explain is the
residual. Standardised residuals feed a two-sided CUSUM per signal (drift ``k`` in residual
σ), vectorised with the Lindley form ``S_t = C_t − min_{j≤t} C_j``. Thresholds come from a
held-out tail of the clean period: for a target number of false alarms per day (per crane-day
on a crane), each signal's threshold is set above all but that many CUSUM excursions seen in
the held-out clean data. No attack label is ever used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class LearnedModel:
    names: tuple[str, ...]
    mean: np.ndarray  # per signal
    std: np.ndarray  # per signal (1 where the clean period never moved)
    coef: np.ndarray  # (2m+1, m): [now (self zeroed), previous step, 1] → each signal
    resid_std: np.ndarray  # per signal, on the held-out clean data
    threshold: np.ndarray  # CUSUM alarm level per signal
    drift: float
    target_per_day: float
    samples_per_day: float
    # Noise that grows with the level (an anemometer's 2 % of reading): residual σ is
    # resid_std × (1 + level_gain × |predicted value|) in the signal's own units; 0 = constant.
    level_gain: np.ndarray | None = None

    def residuals(self, values: np.ndarray) -> np.ndarray:
        """Standardised residuals (n, m); the first row has no previous step and reads 0."""
        z = (np.asarray(values, dtype=np.float64) - self.mean) / self.std
        design = _design(z)
        predicted = _predict(design, self.coef)
        r = (z - predicted) / (self.resid_std * self._level_factor(predicted))
        r[0] = 0.0
        return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)

    def _level_factor(self, predicted: np.ndarray) -> np.ndarray:
        if self.level_gain is None:
            return np.ones(predicted.shape[1])
        level = np.abs(np.nan_to_num(predicted, nan=0.0) * self.std + self.mean)
        return 1.0 + self.level_gain * level

    def statistic(self, values: np.ndarray) -> np.ndarray:
        """Two-sided CUSUM statistic per signal (n, m)."""
        return cusum(self.residuals(values), self.drift)

    def alarms(self, values: np.ndarray) -> np.ndarray:
        """Per instant: does any signal's CUSUM exceed its threshold?"""
        return np.asarray((self.statistic(values) > self.threshold).any(axis=1))

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "resid_std": self.resid_std.tolist(),
            "threshold": self.threshold.tolist(),
            "drift": self.drift,
            "target_per_day": self.target_per_day,
            "samples_per_day": self.samples_per_day,
            "level_gain": None if self.level_gain is None else self.level_gain.tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LearnedModel:
        return cls(
            names=tuple(obj["names"]),
            mean=np.asarray(obj["mean"], dtype=np.float64),
            std=np.asarray(obj["std"], dtype=np.float64),
            coef=np.asarray(obj["coef"], dtype=np.float64),
            resid_std=np.asarray(obj["resid_std"], dtype=np.float64),
            threshold=np.asarray(obj["threshold"], dtype=np.float64),
            drift=float(obj["drift"]),
            target_per_day=float(obj["target_per_day"]),
            samples_per_day=float(obj["samples_per_day"]),
            level_gain=None if obj.get("level_gain") is None
            else np.asarray(obj["level_gain"], dtype=np.float64),
        )


def _design(z: np.ndarray) -> np.ndarray:
    previous = np.vstack((z[:1], z[:-1]))
    return np.hstack((z, previous, np.ones((len(z), 1))))


def _predict(design: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return np.nan_to_num(design, nan=0.0) @ coef


def cusum(r: np.ndarray, drift: float) -> np.ndarray:
    """max of the upper and lower CUSUM of each column, S_0 = 0, reset at 0 (Lindley)."""
    up = np.cumsum(r - drift, axis=0)
    down = np.cumsum(-r - drift, axis=0)
    zero = np.zeros((1, r.shape[1]))
    s_up = up - np.minimum.accumulate(np.vstack((zero, up)), axis=0)[1:]
    s_down = down - np.minimum.accumulate(np.vstack((zero, down)), axis=0)[1:]
    return np.maximum(np.maximum(s_up, s_down), 0.0)


def excursion_peaks(stat: np.ndarray) -> np.ndarray:
    """Peak of every excursion of one CUSUM column above zero."""
    positive = stat > 0
    if not positive.any():
        return np.zeros(0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], positive.astype(np.int8), [0]))))
    starts, ends = edges[0::2], edges[1::2]
    return np.maximum.reduceat(stat, starts)[: len(ends)]


def tail_threshold(peaks: np.ndarray, days: float, per_day: float) -> float:
    """The CUSUM level that excursions exceed ``per_day`` times a day.

    Peaks over a threshold: excursion peaks above their median are taken as exponential
    (CUSUM excursions of light-tailed residuals are), their mean excess gives the decay, and
    the level is extrapolated to the target rate, which is usually far rarer than anything the
    held-out period shows. With few excursions, a margin over the largest one stands in.
    """
    peaks = np.sort(np.asarray(peaks, dtype=np.float64))
    if len(peaks) < 10:
        return max(1.0, 1.5 * float(peaks[-1])) if len(peaks) else 5.0
    u = float(np.median(peaks))
    excess = peaks[peaks > u] - u
    beta = float(np.mean(excess)) if len(excess) else 1.0
    rate_over_u = len(excess) / days
    level = u + beta * np.log(max(rate_over_u / per_day, 1.0))
    # Rarer than once in the held-out period: never below the largest excursion seen there.
    seen_max = float(peaks[-1]) if per_day * days < 1.0 else 0.0
    return max(1.0, float(level), seen_max)


def fit(clean: np.ndarray, names: tuple[str, ...], *, samples_per_day: float,
        target_per_day: float = 0.1, drift: float = 1.0, ridge: float = 1.0,
        holdout: float = 0.3, noise_floor: float = 0.0,
        level_noise: bool = False) -> LearnedModel:
    """Learn the relations on the first part of ``clean`` and the thresholds on its tail."""
    x = np.asarray(clean, dtype=np.float64)
    n, m = x.shape
    cut = int(n * (1.0 - holdout))
    if cut < 3 * m or n - cut < 10:
        raise ValueError(f"a clean period of {n} samples is too short to learn {m} signals")
    train = x[:cut]
    mean = np.nanmean(train, axis=0)
    std = np.nanstd(train, axis=0)
    # A signal that barely moved in the clean period is judged on a scale no finer than 1 %
    # of its level (sensor resolution), not on its clean-period wobble.
    std = np.maximum(std, 0.01 * np.abs(mean))
    std = np.where(std > 1e-9, std, 1.0)
    z = (x - mean) / std
    design = np.nan_to_num(_design(z), nan=0.0)
    coef = np.zeros((2 * m + 1, m))
    for j in range(m):
        use = np.ones(2 * m + 1, dtype=bool)
        use[j] = False  # a signal may not explain itself at the same instant
        a = design[:cut, use]
        b = np.nan_to_num(z[:cut, j], nan=0.0)
        gram = a.T @ a + ridge * np.eye(a.shape[1])
        coef[use, j] = np.linalg.solve(gram, a.T @ b)
    level_gain = None
    if level_noise:
        # |residual| ≈ a + b·level on the training part; the gain is b / a (never negative).
        fitted = design[:cut] @ coef
        level = np.abs(fitted * std + mean)
        gains = np.zeros(m)
        for j in range(m):
            absres = np.abs(np.nan_to_num(z[:cut, j] - fitted[:, j], nan=0.0))
            slope, intercept = np.polyfit(level[:, j], absres, 1) if np.ptp(level[:, j]) > 0 \
                else (0.0, float(absres.mean()))
            gains[j] = max(0.0, slope) / intercept if intercept > 1e-12 else 0.0
        level_gain = gains
    held = z[cut:]
    predicted_held = design[cut:] @ coef
    resid = np.nan_to_num(held - predicted_held, nan=0.0)
    if level_gain is not None:
        resid = resid / (1.0 + level_gain * np.abs(predicted_held * std + mean))
    resid_std = resid.std(axis=0)
    # A simulated clean period explains some signals almost exactly; real readings carry
    # rounding and drift, so no residual is trusted finer than ``noise_floor`` σ (0 = trust
    # the clean period).
    resid_std = np.maximum(resid_std, max(noise_floor, 1e-9))
    stat = cusum(resid / resid_std, drift)
    days = (n - cut) / samples_per_day
    per_signal = target_per_day / m
    threshold = np.array([tail_threshold(excursion_peaks(stat[:, j]), days, per_signal)
                          for j in range(m)])
    return LearnedModel(names, mean, std, coef, resid_std, threshold, drift, target_per_day,
                        samples_per_day, level_gain)
