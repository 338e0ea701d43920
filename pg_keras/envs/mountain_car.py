"""MountainCar-v0 and MountainCarContinuous-v0: an underpowered car in a valley."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pg_keras.envs.core import Env, uniform

MIN_POSITION = -1.2
MAX_POSITION = 0.6
MAX_SPEED = 0.07
HILL_GRAVITY = 0.0025  # the slope term's scale: the hill is sin(3 x), its pull cos(3 x)
RESET_LOW, RESET_HIGH = -0.6, -0.4


def _move(position, velocity, push):
    """One step of the shared car dynamics, [N] float32 each, -> (position, velocity).

    The speed is clipped, the position clipped to the track, and the car stops dead when
    it hits the left wall while moving left.
    """
    velocity = tf.clip_by_value(velocity + push - HILL_GRAVITY * tf.cos(3.0 * position),
                                -MAX_SPEED, MAX_SPEED)
    position = tf.clip_by_value(position + velocity, MIN_POSITION, MAX_POSITION)
    at_wall = tf.logical_and(position <= MIN_POSITION, velocity < 0.0)
    return position, tf.where(at_wall, 0.0, velocity)


def _observation_space():
    return gym.spaces.Box(np.array([MIN_POSITION, -MAX_SPEED], np.float32),
                          np.array([MAX_POSITION, MAX_SPEED], np.float32), dtype=np.float32)


class _MountainCarBase(Env):
    """physics columns: [position, velocity]; the observation is the physics itself."""

    observation_space = _observation_space()

    def _initial_physics(self, num_envs, seed):
        return uniform(num_envs, seed, [RESET_LOW, 0.0], [RESET_HIGH, 0.0])

    def _observe(self, physics):
        return tf.identity(physics)


class MountainCar(_MountainCarBase):
    """Batched MountainCar-v0: actions 0, 1, 2 push left, not at all, right (0.001 each).

    Reward -1 per step; terminates at position >= 0.5 with velocity >= 0; truncated after
    200 steps.
    """

    id = "MountainCar-v0"
    max_episode_steps = 200
    action_space = gym.spaces.Discrete(3)
    GOAL_POSITION = 0.5
    FORCE = 0.001

    def _transition(self, physics, action):
        position, velocity = tf.unstack(physics, axis=1)
        push = tf.cast(action - 1, tf.float32) * self.FORCE
        position, velocity = _move(position, velocity, push)
        terminated = tf.logical_and(position >= self.GOAL_POSITION, velocity >= 0.0)
        return tf.stack([position, velocity], axis=1), -tf.ones_like(position), terminated


class MountainCarContinuous(_MountainCarBase):
    """Batched MountainCarContinuous-v0: a force in [-1, 1] (clipped) times 0.0015.

    Reward 100 on reaching position >= 0.45 with velocity >= 0 (which terminates), minus
    0.1 action^2 on every step, where, as in gymnasium, the action is the one received,
    before clipping; truncated after 999 steps.
    """

    id = "MountainCarContinuous-v0"
    max_episode_steps = 999
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    GOAL_POSITION = 0.45
    POWER = 0.0015

    def _transition(self, physics, action):
        position, velocity = tf.unstack(physics, axis=1)
        force = tf.clip_by_value(action[:, 0], -1.0, 1.0)
        position, velocity = _move(position, velocity, force * self.POWER)
        terminated = tf.logical_and(position >= self.GOAL_POSITION, velocity >= 0.0)
        reward = tf.where(terminated, 100.0, 0.0) - 0.1 * tf.square(action[:, 0])
        return tf.stack([position, velocity], axis=1), reward, terminated
