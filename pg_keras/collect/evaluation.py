"""Evaluation: a policy's undiscounted returns over whole episodes of a gymnasium env."""

from __future__ import annotations

from typing import Union

import numpy as np
import tensorflow as tf

from pg_keras import spaces
from pg_keras.collect.gym_envs import EnvOptions, make_vector_env
from pg_keras.collect.masks import env_action_mask
from pg_keras.config import Config
from pg_keras.policy import Policy


def evaluate(policy: Policy, env: Union[str, Config, EnvOptions], episodes: int, seed: int,
             max_steps: int = 100_000, greedy: bool = True) -> np.ndarray:
    """Runs ``episodes`` episodes in parallel, one per environment, and returns their returns.

    Where the env gives an action mask (and the options use it), the policy acts among the
    legal actions, as it did in training.

    Args:
        policy: The policy to act with.
        env: Gymnasium env id, or the options (or Config) of a run: its wrappers, env
            kwargs and use of action masks.
        episodes: Number of episodes (and of environments).
        seed: Seeds the environments' resets (and the sampling when not greedy).
        max_steps: Give up on episodes still running after this many steps.
        greedy: Act with the most likely action instead of a sample.

    Returns:
        [episodes] float64 undiscounted returns.
    """
    envs = make_vector_env(env, episodes)
    try:
        obs, info = envs.reset(seed=seed)
        totals = np.zeros(episodes, np.float64)
        running = np.ones(episodes, bool)
        # A recurrent policy carries its state; each env runs one episode, so it never resets.
        state = policy.initial_state(episodes)
        for t in range(max_steps):
            mask = _action_mask(policy, obs, info, episodes)
            obs = spaces.as_tensors(policy.observation_space, _without_mask(obs))
            if greedy:
                action, state = policy.greedy(obs, mask, state)
            else:
                _, action, state = policy.sample(obs, tf.constant([seed, t], tf.int32), mask,
                                                 state)
            obs, reward, terminated, truncated, info = envs.step(action.numpy())
            totals += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
        return totals
    finally:
        envs.close()


def _without_mask(observations):
    if isinstance(observations, dict) and spaces.ACTION_MASK_KEY in observations:
        return {key: value for key, value in observations.items()
                if key != spaces.ACTION_MASK_KEY}
    return observations


def _action_mask(policy: Policy, observations, info: dict, num: int) -> np.ndarray:
    """The [num, W] mask of the legal actions the env gave (a Dict observation's
    ``action_mask`` key, or ``info["action_mask"]``); all legal where it gave none."""
    mask = None
    if policy.mask_width:
        mask = env_action_mask(observations, info, num, policy.mask_width)
    return policy.all_legal(num) if mask is None else mask
