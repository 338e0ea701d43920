"""Episode statistics of a vector env: each env's running episode and the finished ones."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np


class EpisodeStats:
    """The running undiscounted return and length of each env's episode, and the finished
    episodes' returns and lengths until they are popped.

    Args:
        num_envs: How many environments run side by side.
    """

    def __init__(self, num_envs: int):
        self.episode_return = np.zeros(num_envs, np.float64)
        self.episode_length = np.zeros(num_envs, np.int64)
        self.completed_returns: List[float] = []
        self.completed_lengths: List[int] = []

    def add(self, rewards: np.ndarray) -> None:
        """Counts one step with these rewards in every env's episode."""
        self.episode_return += rewards
        self.episode_length += 1

    def finish(self, finished: np.ndarray) -> None:
        """Records the episodes of the envs where ``finished`` ([num_envs] bool) and
        starts new ones there."""
        self.completed_returns.extend(self.episode_return[finished].tolist())
        self.completed_lengths.extend(self.episode_length[finished].tolist())
        self.episode_return[finished] = 0.0
        self.episode_length[finished] = 0

    def discard_current_step(self, envs: np.ndarray) -> None:
        """Forgets the episodes of ``envs`` ([num_envs] bool) unrecorded, before this step's
        :meth:`add`: after it, their new episodes stand at length 0."""
        self.episode_return[envs] = 0.0
        self.episode_length[envs] = -1

    def restart(self) -> None:
        """Every env starts a new episode (after a reset of all of them)."""
        self.episode_return[:] = 0
        self.episode_length[:] = 0

    def pop(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = (self.completed_returns, self.completed_lengths)
        self.completed_returns, self.completed_lengths = [], []
        return out
