"""Gymnasium wrappers of pg_keras: ones a launcher names, and the one ``use_action_mask`` adds.

    --env_wrappers=pg_keras.wrappers:DropTextKeys    (a Dict observation without its text)

Imports gymnasium and NumPy alone, so naming a wrapper here costs no TensorFlow import.
"""

from __future__ import annotations

from typing import Any, Tuple

import gymnasium as gym

ACTION_MASK_KEY = "action_mask"

_NUMERIC = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete,
            gym.spaces.MultiBinary, gym.spaces.Dict, gym.spaces.Tuple)


def is_text_space(space: gym.Space) -> bool:
    """Whether the observations of ``space`` are strings: a ``Text`` space, or a space of
    another package whose samples are strings (minigrid's ``MissionSpace``)."""
    if isinstance(space, gym.spaces.Text):
        return True
    if isinstance(space, _NUMERIC):
        return False
    try:
        return isinstance(space.sample(), str)
    except Exception:  # a space that cannot sample is not text we know how to drop
        return False


def _without_text(space: gym.spaces.Dict) -> gym.spaces.Dict:
    kept = {}
    for key, child in space.spaces.items():
        if isinstance(child, gym.spaces.Dict):
            kept[key] = _without_text(child)
        elif not is_text_space(child):
            kept[key] = child
    return gym.spaces.Dict(kept)


def _select(observation: Any, space: gym.spaces.Dict) -> dict:
    return {key: _select(observation[key], child) if isinstance(child, gym.spaces.Dict)
            else observation[key] for key, child in space.spaces.items()}


class DropTextKeys(gym.ObservationWrapper):
    """Drops the entries of a Dict observation (at any depth of Dicts) that hold text.

    A policy reads numbers: a text entry (MiniGrid's ``mission``) is refused by the
    observation dispatch, which names this wrapper. Drop text only when it carries nothing
    the task needs (MiniGrid-Empty's mission is always the same sentence).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise TypeError("DropTextKeys needs a Dict observation space; received "
                            f"{env.observation_space}")
        self.observation_space = _without_text(env.observation_space)

    def observation(self, observation):
        return _select(observation, self.observation_space)


def _hide_mask(space: gym.Space) -> Tuple[gym.Space, bool]:
    if isinstance(space, gym.spaces.Dict) and ACTION_MASK_KEY in space.spaces:
        return gym.spaces.Dict({key: child for key, child in space.spaces.items()
                                if key != ACTION_MASK_KEY}), True
    return space, False


class WithoutActionMask(gym.Wrapper):
    """Hides the env's action mask: ``info["action_mask"]`` (Taxi's) and a Dict
    observation's top-level ``action_mask`` key (PettingZoo's), so every action is legal
    to the policy. What ``Config(use_action_mask=False)`` adds to every env of a run."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space, self._in_observation = _hide_mask(env.observation_space)

    def _hidden(self, observation, info: dict):
        if self._in_observation:
            observation = {key: value for key, value in observation.items()
                           if key != ACTION_MASK_KEY}
        return observation, {key: value for key, value in info.items()
                             if key != ACTION_MASK_KEY}

    def reset(self, **kwargs):
        return self._hidden(*self.env.reset(**kwargs))

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        observation, info = self._hidden(observation, info)
        return observation, reward, terminated, truncated, info
