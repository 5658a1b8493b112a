"""Paired comparisons over seeds: the mean difference and its Student-t 95% confidence interval.

A seed fixes a run's initial weights, data order and crops for every method alike, so per-seed differences
between two methods are paired; their spread is far smaller than the spread of either method alone.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "t_quantile"]


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom.

    Found by bisection on the CDF, which is integrated from the density with Simpson's rule: exact to
    about 1e-6, with no dependency beyond numpy.
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 4001)
        dens = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        h = grid[1] - grid[0]
        return 0.5 + h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float | None  # the 95% interval; None with fewer than two pairs
    high: float | None
    n: int
    std: float | None = None  # sample std of the per-seed differences; None with fewer than two pairs

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` when the interval lies above / below 0, else ``tie`` (also with one pair)."""
        if self.low is not None and self.low > 0:
            return "better"
        return "worse" if self.high is not None and self.high < 0 else "tie"

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f} (n={self.n})"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (n={self.n})"


def paired_difference(a: dict[int, float], b: dict[int, float], *, level: float = 0.95) -> PairedDifference | None:
    """``a - b`` over the seeds both have (``{seed: value}``); None when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, None, None, 1)
    std = statistics.stdev(diffs)
    half = t_quantile(0.5 + level / 2, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, len(diffs), std)
