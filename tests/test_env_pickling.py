"""A checkpoint keeps the environments' running state only where pickling keeps it."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

import pg_keras
from pg_keras.collect import gymnasium as collectors
from pg_keras.collect.gym_envs import make_vector_env


class _Counter(gym.Env, EzPickle):
    """Observes its step count; pickles, as Box2D and MuJoCo envs do, its arguments only."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length=5):
        EzPickle.__init__(self, length)
        self.length, self.t = length, None  # None until reset, like LunarLander's lander

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1  # fails on an env that was never reset
        return np.array([self.t], np.float32), 1.0, self.t >= self.length, False, {}


gym.register("PgkEzCounter-v0", entry_point=_Counter)


def _collector(config):
    learner = pg_keras.build_learner(config, gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
                                     gym.spaces.Discrete(2))
    return collectors.Collector(make_vector_env("PgkEzCounter-v0", 2), learner.policy, config)


def test_an_ezpickle_env_is_reset_on_restore_instead_of_continued_unreset():
    config = pg_keras.Config(env_id="PgkEzCounter-v0", num_envs=2, steps_per_update=3)
    collector = _collector(config)
    collector.collect()
    state = pickle.loads(pickle.dumps(collector.state()))
    assert state["envs"] is None  # nothing that would come back as a never-reset env
    restored = _collector(config)
    assert not restored.restore(state)  # reset: the caller is told it is not exact
    batch, steps = restored.collect()
    assert steps == 6 and np.asarray(batch.observations)[0].ravel().tolist() == [0.0, 0.0]


def test_an_old_checkpoint_holding_ezpickled_envs_resets_them():
    config = pg_keras.Config(env_id="PgkEzCounter-v0", num_envs=2, steps_per_update=3)
    collector = _collector(config)
    collector.collect()
    state = collector.state()
    state["envs"] = pickle.dumps(collector.envs.envs)  # as written before the check
    restored = _collector(config)
    assert not restored.restore(state)
    restored.collect()  # the never-reset envs would fail here
