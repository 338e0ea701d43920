"""A task only a policy with memory can solve, for the recurrent policies' tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class RecallEnv(gym.Env):
    """A cue shown once; every later step pays for naming it.

    Step 0 shows the cue, ``[+1]`` or ``[-1]`` (a fair coin); the ``delay`` steps after it
    show ``[0]``. Each of those steps earns 1 if the action equals the cue (action 1 for
    +1, 0 for -1), else 0; the action at step 0 earns nothing. Episodes last ``delay + 1``
    steps. A policy that remembers the cue earns ``delay``; one that sees only the current
    observation is right half the time at best, ``delay / 2`` in expectation.
    """

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, delay: int = 3, nan_at: int = 0):
        self.delay = delay
        self.nan_at = nan_at  # > 0: the first episode's step nan_at pays NaN
        self.episodes = 0
        self.t = 0
        self.cue = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episodes += 1
        self.t = 0
        self.cue = int(self.np_random.integers(2))
        return np.array([2.0 * self.cue - 1.0], np.float32), {}

    def step(self, action):
        reward = float(self.t > 0 and int(action) == self.cue)
        self.t += 1
        if self.episodes == 1 and self.t == self.nan_at:
            reward = float("nan")
        return np.zeros(1, np.float32), reward, self.t > self.delay, False, {}


if "PgkRecall-v0" not in gym.registry:
    gym.register("PgkRecall-v0", entry_point=RecallEnv)
