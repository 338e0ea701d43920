"""Pendulum-v1: swing a torque-limited pendulum up and hold it upright."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pg_keras.envs.core import Env, uniform

GRAVITY = 10.0  # gymnasium's default g for Pendulum-v1 (not 9.8)
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0


def angle_normalize(x: tf.Tensor) -> tf.Tensor:
    """Maps angles to [-pi, pi): the distance from upright that the cost penalises."""
    return tf.math.floormod(x + math.pi, 2.0 * math.pi) - math.pi


class Pendulum(Env):
    """Batched Pendulum-v1 (never terminates; truncated after 200 steps).

    physics columns: [theta, theta_dot], theta unwrapped as in gymnasium (0 is upright);
    observation [cos(theta), sin(theta), theta_dot]. The torque is clipped to [-2, 2] and
    the reward is -(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 torque^2), read
    from the state before the step.
    """

    id = "Pendulum-v1"
    max_episode_steps = 200
    observation_space = gym.spaces.Box(
        -np.array([1.0, 1.0, MAX_SPEED], np.float32),
        np.array([1.0, 1.0, MAX_SPEED], np.float32), dtype=np.float32)
    action_space = gym.spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32)

    def _initial_physics(self, num_envs, seed):
        return uniform(num_envs, seed, [-math.pi, -1.0], [math.pi, 1.0])

    def _observe(self, physics):
        theta, theta_dot = tf.unstack(physics, axis=1)
        return tf.stack([tf.cos(theta), tf.sin(theta), theta_dot], axis=1)

    def _transition(self, physics, action):
        theta, theta_dot = tf.unstack(physics, axis=1)
        torque = tf.clip_by_value(action[:, 0], -MAX_TORQUE, MAX_TORQUE)
        cost = (tf.square(angle_normalize(theta)) + 0.1 * tf.square(theta_dot)
                + 0.001 * tf.square(torque))
        # Semi-implicit Euler: the new speed (clipped) moves the angle.
        angular_acc = (3.0 * GRAVITY / (2.0 * LENGTH) * tf.sin(theta)
                       + 3.0 / (MASS * LENGTH ** 2) * torque)
        new_theta_dot = tf.clip_by_value(theta_dot + DT * angular_acc, -MAX_SPEED, MAX_SPEED)
        new_theta = theta + DT * new_theta_dot
        terminated = tf.zeros_like(theta, tf.bool)
        return tf.stack([new_theta, new_theta_dot], axis=1), -cost, terminated
