"""Tiny environments whose every step is known, for exact tests of collection and learning."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode


class CounterEnv(gym.Env):
    """Observation = steps taken in the episode; reward = 1 per step.

    Terminates after ``terminate_at`` steps (never when None). Wrap it in a TimeLimit to
    get truncations.
    """

    observation_space = gym.spaces.Box(0.0, 1000.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_at=None):
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([self.t], np.float32), 1.0, terminated, False, {}


class BanditEnv(gym.Env):
    """One-step episodes with a constant observation; reward = reward_fn(action).

    ``bad_action`` records the first action outside the space, so a test can assert the
    policy never sent one.
    """

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def __init__(self, action_space, reward_fn):
        self.action_space = action_space
        self.reward_fn = reward_fn
        self.bad_action = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.5, -0.5, 1.0], np.float32), {}

    def step(self, action):
        if not self.action_space.contains(action) and self.bad_action is None:
            self.bad_action = action
        return (np.array([0.5, -0.5, 1.0], np.float32), float(self.reward_fn(action)), True,
                False, {})


def vector_env(make_fns):
    """A same-step-autoreset SyncVectorEnv over the given env constructors."""
    return gym.vector.SyncVectorEnv(make_fns, autoreset_mode=AutoresetMode.SAME_STEP)


class FaultyEnv(gym.Env):
    """CartPole-like 10-step episodes; every ``nan_every``-th one returns NaN at ``nan_step``.

    ``field`` chooses where the NaN goes: "reward" or "observation" (at step 10, the
    episode's last, an observation that same-step autoreset shows only in
    ``info["final_obs"]``). ``huge=True`` instead returns rewards near float32's maximum,
    so returns overflow to inf in the update.
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, field="reward", nan_every=3, huge=False, nan_step=3):
        self.field, self.nan_every, self.huge, self.nan_step = field, nan_every, huge, nan_step
        self.episode = 0
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self.np_random.normal(size=4).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.normal(size=4).astype(np.float32)
        reward = 3e38 if self.huge else 1.0
        if self.episode % self.nan_every == 0 and self.t == self.nan_step:
            if self.field == "reward":
                reward = float("nan")
            else:
                obs[1] = np.inf
        return obs, reward, self.t >= 10, False, {}


gym.register("PgkFaultyReward-v0", entry_point=FaultyEnv, kwargs={"field": "reward"})
gym.register("PgkFaultyObservation-v0", entry_point=FaultyEnv, kwargs={"field": "observation"})
gym.register("PgkHugeReward-v0", entry_point=FaultyEnv, kwargs={"huge": True, "nan_every": 10**9})


class DictActionEnv(CounterEnv):
    action_space = gym.spaces.Dict({"a": gym.spaces.Discrete(2)})


gym.register("PgkDictAction-v0", entry_point=DictActionEnv)


class CuePositionEnv(gym.Env):
    """A Dict observation only a policy reading both keys can use.

    Each step shows a fresh ``cue`` (0 or 1, a fair coin) and ``position`` (uniform on
    [-1, 1], independent of the cue); action ``cue XOR (position > 0)`` earns 1, the other
    0. Episodes last ``length`` steps. Either key alone says nothing about which action
    pays (the other key is a fair coin that flips it), so every policy blind to a key
    earns ``length / 2`` in expectation; reading both earns ``length``.
    """

    observation_space = gym.spaces.Dict({
        "cue": gym.spaces.Discrete(2),
        "position": gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
    })
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length=8):
        self.length = length
        self.t = 0
        self._observation = None

    @staticmethod
    def rewarded_action(cue, position) -> int:
        """The action that earns 1 for this observation."""
        return int(cue) ^ int(np.asarray(position).reshape(-1)[0] > 0)

    def _draw(self):
        self._observation = {
            "cue": np.int64(self.np_random.integers(2)),
            "position": self.np_random.uniform(-1.0, 1.0, (1,)).astype(np.float32)}
        return {"cue": self._observation["cue"], "position": self._observation["position"].copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(int(action) == self.rewarded_action(**self._observation))
        self.t += 1
        return self._draw(), reward, self.t >= self.length, False, {}


gym.register("PgkCuePosition-v0", entry_point=CuePositionEnv)


class MaskedChoiceEnv(gym.Env):
    """A Dict observation with PettingZoo's ``action_mask`` key: 4 actions, of which a
    random non-empty subset is legal at each step; a legal action earns 1, an illegal one
    -1. Episodes last 6 steps. ``illegal_taken`` counts the illegal actions received."""

    observation_space = gym.spaces.Dict({
        "observation": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        "action_mask": gym.spaces.MultiBinary(4),
    })
    action_space = gym.spaces.Discrete(4)

    def __init__(self):
        self.t = 0
        self.illegal_taken = 0
        self._mask = None

    def _draw(self):
        mask = self.np_random.integers(0, 2, 4).astype(np.int8)
        mask[self.np_random.integers(4)] = 1
        self._mask = mask
        return {"observation": self.np_random.uniform(-1, 1, 2).astype(np.float32),
                "action_mask": mask.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        legal = bool(self._mask[int(action)])
        self.illegal_taken += not legal
        self.t += 1
        return self._draw(), 1.0 if legal else -1.0, self.t >= 6, False, {}


gym.register("PgkMaskedChoice-v0", entry_point=MaskedChoiceEnv)
