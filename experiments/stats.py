"""Statistics of results over seeds: interquartile mean and stratified-bootstrap intervals.

The definitions follow rliable (Agarwal et al., 2021, "Deep Reinforcement Learning at the
Edge of the Statistical Precipice"), whose IQM is ``scipy.stats.trim_mean(x, 0.25)``: sort
the n scores, drop ``floor(n / 4)`` from each end, average the rest (whole scores only; for
n = 5 it is the mean of the middle three). The confidence interval is the percentile
bootstrap over runs, resampled with replacement within each task (the strata).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import numpy as np


def iqm(scores: Sequence[float], axis: int = -1) -> np.ndarray:
    """Interquartile mean along ``axis``: the mean after trimming 25% from each end.

    Args:
        scores: Array of scores; trimmed along ``axis``.
        axis: The axis of runs.

    Returns:
        The IQM; a scalar array for 1-D input.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of no scores")
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_ci(
        strata: Sequence[Sequence[float]],
        statistic: Callable[..., np.ndarray] = iqm,
        confidence: float = 0.95, reps: int = 10_000,
        seed: int = 0) -> Tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` over runs.

    Each replicate resamples, with replacement, the runs of every stratum (a task) apart,
    so every task keeps its number of runs; ``statistic`` is applied to the replicate's
    runs of all strata together.

    Args:
        strata: One sequence of scores per stratum (one per task; one stratum for the
            runs of a single task).
        statistic: Maps an array [reps, runs] to [reps] along its last axis (``iqm``,
            ``np.mean`` with ``axis``).
        confidence: Coverage of the interval, in (0, 1).
        reps: Bootstrap replicates.
        seed: Seed of the resampling (the interval is reproducible).

    Returns:
        (low, high).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); received {confidence}")
    arrays = [np.asarray(s, dtype=np.float64) for s in strata]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every stratum needs at least one score")
    rng = np.random.default_rng(seed)
    samples = np.concatenate(
        [a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays], axis=1)
    values = statistic(samples, axis=-1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def median_steps(solved_at: Sequence[float | None]) -> float | None:
    """Median env steps to a first solve, counting unsolved runs as never (infinitely late).

    Returns None when half or more of the runs never solved (the median is then infinite).
    """
    steps = sorted(math.inf if s is None else float(s) for s in solved_at)
    if not steps:
        return None
    mid = len(steps) // 2
    median = steps[mid] if len(steps) % 2 else (steps[mid - 1] + steps[mid]) / 2
    return None if math.isinf(median) else median
