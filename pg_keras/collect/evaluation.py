"""Evaluation: a policy's undiscounted returns over whole episodes of a gymnasium env."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pg_keras.collect.gym_envs import make_vector_env
from pg_keras import spaces
from pg_keras.policy import Policy


def evaluate(policy: Policy, env_id: str, episodes: int, seed: int,
             max_steps: int = 100_000, greedy: bool = True) -> np.ndarray:
    """Runs ``episodes`` episodes in parallel, one per environment, and returns their returns.

    Args:
        policy: The policy to act with.
        env_id: Gymnasium env id.
        episodes: Number of episodes (and of environments).
        seed: Seeds the environments' resets (and the sampling when not greedy).
        max_steps: Give up on episodes still running after this many steps.
        greedy: Act with the most likely action instead of a sample.

    Returns:
        [episodes] float64 undiscounted returns.
    """
    envs = make_vector_env(env_id, episodes)
    try:
        obs, _ = envs.reset(seed=seed)
        totals = np.zeros(episodes, np.float64)
        running = np.ones(episodes, bool)
        # A recurrent policy carries its state; each env runs one episode, so it never resets.
        state = policy.initial_state(episodes) if policy.recurrent else None
        for t in range(max_steps):
            obs = spaces.as_tensors(envs.single_observation_space, obs)
            if state is not None:
                action, state = (policy.greedy_step(obs, state) if greedy else
                                 policy.sample_step(obs, tf.constant([seed, t], tf.int32),
                                                    state)[1:])
                state = {**state, "reset": np.zeros(episodes, np.float32)}
            elif greedy:
                action = policy.greedy(obs)
            else:
                action = policy.sample(obs, tf.constant([seed, t], tf.int32))[1]
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            totals += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
        return totals
    finally:
        envs.close()
