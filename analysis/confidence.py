"""95% confidence intervals over seeds: Student's t (scipy.stats), the same in tables and figures;
paired t-tests, Holm's correction and the trend of a paired Δ along a size axis (statsmodels)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def paired_delta(values: dict[int, float],
                 baseline: dict[int, float]) -> tuple[float, float, float]:
    """Mean and CI of values - baseline over the seeds both have: a seed's runs share their data
    order."""
    return mean_ci(values[s] - baseline[s] for s in sorted(values.keys() & baseline.keys()))


def paired_p(values: dict[int, float], baseline: dict[int, float]) -> float:
    """Two-sided paired t-test (scipy.stats.ttest_rel) of values vs baseline over the seeds both
    have; NaN with fewer than two pairs or when every pair differs by the same amount (no variance
    to test)."""
    seeds = sorted(values.keys() & baseline.keys())
    a, b = np.array([values[s] for s in seeds]), np.array([baseline[s] for s in seeds])
    if len(seeds) < 2 or not np.isfinite(a - b).all() or np.ptp(a - b) == 0:
        return math.nan
    return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm–Bonferroni-adjusted p-values (statsmodels) over the tests of one table; a NaN (no test)
    stays NaN and does not count as a comparison."""
    from statsmodels.stats.multitest import multipletests

    p = np.array(list(p_values), dtype=float)
    adjusted = np.full(len(p), math.nan)
    tested = np.isfinite(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return [float(x) for x in adjusted]


@dataclass(frozen=True)
class Trend:
    """How a paired Δ moves along a size axis: the OLS fit of Δ on log2(size) over every (size,
    seed) pair."""

    slope: float  # per doubling of the size
    low: float  # the slope's 95% CI
    high: float
    p: float  # two-sided t-test of slope = 0
    smallest: tuple[float, float]  # 95% CI of the fitted Δ at the smallest size measured
    largest: tuple[float, float]  # ... and at the largest
    reading: str  # grows | shrinks | flat | flips sign; "" without a CI to read


def trend(log2_size: Sequence[float], delta: Sequence[float]) -> Trend:
    """The slope of Δ against log2(size) with its CI and p (statsmodels OLS), and a one-word reading
    that follows the CIs, never a point estimate: `flat` when the slope's CI holds 0; `flips sign`
    when the fitted Δ's CI is above 0 at one end of the sizes measured and below 0 at the other;
    `grows` when at the largest size it is clear of 0 on the side the slope points to (the effect
    moves away from 0); else `shrinks` (it moves towards 0). Needs three pairs at two sizes at
    least, and pairs off one line; NaN and "" otherwise."""
    import statsmodels.api as sm

    x, y = np.asarray(log2_size, dtype=float), np.asarray(delta, dtype=float)
    nan = (math.nan, math.nan)
    if len(x) < 3 or len(set(x)) < 2:
        return Trend(math.nan, *nan, math.nan, nan, nan, "")
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    if np.allclose(fit.resid, 0, rtol=0, atol=1e-12):  # on one line: no interval to read
        slope = float(fit.params[1])
        return Trend(slope, slope, slope, math.nan, nan, nan, "")
    low, high = (float(v) for v in fit.conf_int(1 - LEVEL)[1])
    ends = fit.get_prediction(sm.add_constant(np.array([x.min(), x.max()]), has_constant="add"))
    smallest, largest = (tuple(float(v) for v in row) for row in ends.conf_int(alpha=1 - LEVEL))
    return Trend(float(fit.params[1]), low, high, float(fit.pvalues[1]), smallest, largest,
                 reading(low, high, smallest, largest))


def reading(low: float, high: float, smallest: tuple[float, float],
            largest: tuple[float, float]) -> str:
    """The word for a slope's CI (low, high) and the fitted Δ's CIs at the smallest and the largest
    size (see `trend`)."""
    if low <= 0 <= high:
        return "flat"
    if (smallest[0] > 0 and largest[1] < 0) or (smallest[1] < 0 and largest[0] > 0):
        return "flips sign"
    if (low > 0 and largest[0] > 0) or (high < 0 and largest[1] < 0):
        return "grows"
    return "shrinks"
