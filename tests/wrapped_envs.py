"""Wrappers and an env that the env-option tests name as ``module:name`` (``--env_wrappers``)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

NOT_A_WRAPPER = 3


class CountingWrapper(gym.Wrapper):
    """Counts the envs wrapped (``made``), per env id, across the process."""

    made: dict = {}

    def __init__(self, env: gym.Env):
        super().__init__(env)
        CountingWrapper.made[env.spec.id] = CountingWrapper.made.get(env.spec.id, 0) + 1


def _times_ten(reward):
    return 10.0 * reward


def scale_reward(env: gym.Env) -> gym.Env:
    """A factory (not a class): rewards times 10 (by a module-level function, so that
    the envs pickle with a checkpoint)."""
    return gym.wrappers.TransformReward(env, _times_ten)


def failing(env: gym.Env) -> gym.Env:
    raise RuntimeError("this wrapper refuses every env")


class TextKeyEnv(gym.Env):
    """A Dict observation with a text entry, as MiniGrid's mission: one step, reward 1 for
    the action equal to the ``cue`` bit."""

    observation_space = gym.spaces.Dict({
        "cue": gym.spaces.Discrete(2),
        "mission": gym.spaces.Text(max_length=32, charset="abcdefghijklmnopqrstuvwxyz "),
        "nested": gym.spaces.Dict({"note": gym.spaces.Text(max_length=8),
                                   "x": gym.spaces.Box(-1.0, 1.0, (1,), np.float32)}),
    })
    action_space = gym.spaces.Discrete(2)

    def _observation(self):
        self._cue = int(self.np_random.integers(2))
        return {"cue": self._cue, "mission": "copy the cue",
                "nested": {"note": "n", "x": np.zeros(1, np.float32)}}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._observation(), {}

    def step(self, action):
        reward = float(int(action) == self._cue)
        return self._observation(), reward, True, False, {}


gym.register("PgkTextKey-v0", entry_point=TextKeyEnv)
