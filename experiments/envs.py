"""Environments the experiments add to gymnasium's registry (importing this module
registers them; name one as ``--env_id=experiments.envs:ID``).

``CartPoleNoVelocity-v1``: CartPole-v1 whose observation keeps the cart's position and the
pole's angle, ``[x, theta]``, and hides both velocities. A policy that sees one
observation cannot tell which way the pole is falling; one with memory can estimate the
velocities from successive observations. Same dynamics, rewards, termination and
500-step time limit as CartPole-v1.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

# The observation entries kept: cart position and pole angle.
VISIBLE = (0, 2)


class HideVelocities(gym.ObservationWrapper):
    """Keeps CartPole's position and angle, ``[x, theta]``; drops both velocities."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        index = list(VISIBLE)
        self.observation_space = gym.spaces.Box(space.low[index], space.high[index],
                                                dtype=np.float32)

    def observation(self, observation):
        return np.asarray(observation, np.float32)[list(VISIBLE)]


def cartpole_no_velocity(**kwargs) -> gym.Env:
    """CartPole with the velocities hidden (the registry adds the time limit)."""
    return HideVelocities(CartPoleEnv(**kwargs))


if "CartPoleNoVelocity-v1" not in gym.registry:
    gym.register("CartPoleNoVelocity-v1", entry_point=cartpole_no_velocity,
                 max_episode_steps=500, reward_threshold=475.0)
