"""95% confidence intervals over seeds: Student's t (scipy.stats), the same in tables and figures."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_ci(values: Iterable[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values; the interval is NaN with fewer than two values."""
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(x))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(LEVEL, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def t_interval(values: Iterable[float]) -> tuple[float, float]:
    """seaborn's `errorbar=` callable: the band of a line over seeds."""
    _, low, high = mean_ci(values)
    return low, high


def paired_delta(values: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, float]:
    """Mean and CI of values - baseline over the seeds both have: a seed's runs share their data order."""
    return mean_ci(values[s] - baseline[s] for s in sorted(values.keys() & baseline.keys()))
