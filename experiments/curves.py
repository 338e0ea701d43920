"""Learning curves over seeds: a mean line and a min-max band on a common grid of steps.

Shared by ``experiments.plot`` and ``experiments.suite``; defines no flags.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

Curve = Tuple[Sequence[float], Sequence[float]]


def mean_band(curves: List[Curve]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, low, high) of curves given as (steps, values), one per seed.

    Seeds are put on a common grid (the union of their steps, up to the end of the
    shortest curve) by linear interpolation.
    """
    grid = np.unique(np.concatenate([np.asarray(c[0], dtype=np.float64) for c in curves]))
    grid = grid[grid <= min(c[0][-1] for c in curves)]
    ys = np.array([np.interp(grid, c[0], c[1]) for c in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def draw_band(ax, curves: List[Curve], label: str, color: Optional[str] = None) -> None:
    """Draws the mean over seeds and, with several seeds, the min-max band, on ``ax``."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return
    grid, mean, low, high = mean_band(curves)
    (line,) = ax.plot(grid, mean, label=label, color=color)
    if len(curves) > 1:
        ax.fill_between(grid, low, high, alpha=0.2, color=line.get_color())
