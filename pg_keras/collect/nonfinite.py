"""The check of each env step for NaN or inf: rewards, observations, final observations."""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

from pg_keras import spaces


class NonFiniteError(RuntimeError):
    """An environment returned NaN or inf (with ``on_nonfinite="stop"``)."""


def _finite_rows(array, num: int) -> np.ndarray:
    """[num] bool: whether each row of a batched array is finite (integers always are);
    of every leaf, for the dict of a nested observation."""
    if isinstance(array, dict):
        rows = np.ones(num, bool)
        for leaf in array.values():
            rows &= _finite_rows(leaf, num)
        return rows
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return np.ones(num, bool)
    return np.isfinite(array.reshape(num, -1)).all(axis=1)


class NonFiniteGuard:
    """Finds the envs whose step returned NaN or inf, and stops or names them for dropping.

    The common case, every value finite, costs one cheap test per step; the slow path that
    says which env and which field runs only for a bad step.

    Args:
        observation_space: One env's observation space.
        num_envs: How many environments step together.
        env_id: Named in the error.
        drop: Return the bad envs (``on_nonfinite="drop"``) instead of raising.
    """

    def __init__(self, observation_space: gym.Space, num_envs: int, env_id: str, drop: bool):
        self._space = observation_space
        if spaces.is_nested(observation_space):
            self._finite_obs = lambda x: _finite_rows(
                spaces.flatten(observation_space, x), num_envs).all()
        elif np.issubdtype(observation_space.dtype, np.floating):
            self._finite_obs = lambda x: np.isfinite(x).all()
        else:
            self._finite_obs = lambda x: True
        self.num_envs, self.env_id, self.drop = num_envs, env_id, drop

    def check(self, next_obs, reward, done, any_done: bool, info,
              env_step: int) -> Optional[np.ndarray]:
        """The [num_envs] bool envs to drop, or None if the step is finite everywhere.

        Args:
            next_obs, reward, done, info: What the vector env's step returned
                (``done = terminated | truncated``; ``any_done = done.any()``).
            env_step: The env steps taken up to and including this one (for the message).

        Raises:
            NonFiniteError: naming the env step and the field, unless episodes are dropped.
        """
        if (np.isfinite(reward).all() and self._finite_obs(next_obs)
                and not (any_done and self._bad_final_obs(info, done).any())):
            return None
        num = self.num_envs
        fields = {"reward": ~np.isfinite(reward),
                  "observation": ~_finite_rows(spaces.flatten(self._space, next_obs), num)}
        fields["final observation"] = self._bad_final_obs(info, done)
        bad = np.zeros(num, bool)
        for field, rows in fields.items():
            if rows.any() and not self.drop:
                i = int(np.flatnonzero(rows)[0])
                value = reward[i] if field == "reward" else "non-finite entries"
                raise NonFiniteError(
                    f"env step {env_step}: environment {i} of {self.env_id} returned a "
                    f"non-finite {field} ({value})")
            bad |= rows
        return bad if bad.any() else None

    def _bad_final_obs(self, info, done) -> np.ndarray:
        """[num] bool: the envs that ended this step with a NaN or inf final observation."""
        bad = np.zeros(self.num_envs, bool)
        if "final_obs" in info:
            for i in np.flatnonzero(done):
                final = spaces.stack(self._space, [info["final_obs"][i]])
                bad[i] = not _finite_rows(final, 1)[0]
        return bad
