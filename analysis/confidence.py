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


def paired_p(values: dict[int, float], baseline: dict[int, float]) -> float:
    """Two-sided paired t-test (scipy.stats.ttest_rel) of values vs baseline over the seeds both have;
    NaN with fewer than two pairs or when every pair differs by the same amount (no variance to test)."""
    seeds = sorted(values.keys() & baseline.keys())
    a, b = np.array([values[s] for s in seeds]), np.array([baseline[s] for s in seeds])
    if len(seeds) < 2 or not np.isfinite(a - b).all() or np.ptp(a - b) == 0:
        return math.nan
    return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm–Bonferroni-adjusted p-values (statsmodels) over the tests of one table; a NaN (no test) stays
    NaN and does not count as a comparison."""
    from statsmodels.stats.multitest import multipletests

    p = np.array(list(p_values), dtype=float)
    adjusted = np.full(len(p), math.nan)
    tested = np.isfinite(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return [float(x) for x in adjusted]
