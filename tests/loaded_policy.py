"""A loaded feed-forward SavedModel in the shape pg_keras.evaluate acts with (a Policy's
greedy graph function, its mask and state), for tests that evaluate an export in
gymnasium the way training evaluated the policy."""

import gymnasium as gym
import numpy as np


class LoadedPolicy:
    """``loaded.greedy`` behind Policy's ``greedy(observations, mask, state)``."""

    mask_width = 0

    def __init__(self, loaded, env_id: str):
        self._loaded = loaded
        self.observation_space = gym.make(env_id).observation_space

    def all_legal(self, batch_size: int) -> np.ndarray:
        return np.ones((batch_size, 0), bool)

    def initial_state(self, batch_size: int) -> dict:
        return {"reset": np.ones(batch_size, np.float32)}

    def greedy(self, observations, mask, state):
        return self._loaded.greedy(observations), state
