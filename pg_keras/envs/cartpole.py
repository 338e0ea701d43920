"""CartPole-v1: a pole hinged on a cart that is pushed left or right (Barto et al. 1983)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pg_keras.envs.core import Env, uniform

GRAVITY = 9.8
CART_MASS = 1.0
POLE_MASS = 0.1
POLE_HALF_LENGTH = 0.5
FORCE = 10.0
DT = 0.02
X_LIMIT = 2.4
THETA_LIMIT = 12 * 2 * math.pi / 360  # 12 degrees
RESET_BOUND = 0.05


class CartPole(Env):
    """Batched CartPole-v1 with gymnasium's Euler integrator and rewards.

    physics columns: [x, x_dot, theta, theta_dot]; the observation is the physics itself.
    Action 1 pushes right with 10 N, any other value pushes left. Reward 1 on every step,
    the terminating one included; the episode terminates once |x| > 2.4 or
    |theta| > 12 degrees, and is truncated after 500 steps.
    """

    id = "CartPole-v1"
    max_episode_steps = 500
    observation_space = gym.spaces.Box(
        -np.array([2 * X_LIMIT, np.inf, 2 * THETA_LIMIT, np.inf], np.float32),
        np.array([2 * X_LIMIT, np.inf, 2 * THETA_LIMIT, np.inf], np.float32),
        dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def _initial_physics(self, num_envs, seed):
        return uniform(num_envs, seed, [-RESET_BOUND] * 4, [RESET_BOUND] * 4)

    def _observe(self, physics):
        return tf.identity(physics)

    def _transition(self, physics, action):
        x, x_dot, theta, theta_dot = tf.unstack(physics, axis=1)
        force = tf.where(tf.equal(action, 1), FORCE, -FORCE)
        sin, cos = tf.sin(theta), tf.cos(theta)
        total_mass = CART_MASS + POLE_MASS
        pole_moment = POLE_MASS * POLE_HALF_LENGTH
        # The cart's acceleration without the pole's reaction, per unit of total mass;
        # the pole's angular acceleration follows from it, then the reaction is subtracted.
        push = (force + pole_moment * tf.square(theta_dot) * sin) / total_mass
        theta_acc = (GRAVITY * sin - cos * push) / (
            POLE_HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * tf.square(cos) / total_mass))
        x_acc = push - pole_moment * theta_acc * cos / total_mass
        # Explicit Euler: positions advance with the velocities from before the step.
        next_physics = tf.stack([x + DT * x_dot, x_dot + DT * x_acc,
                                 theta + DT * theta_dot, theta_dot + DT * theta_acc], axis=1)
        new_x, new_theta = next_physics[:, 0], next_physics[:, 2]
        terminated = tf.logical_or(tf.abs(new_x) > X_LIMIT, tf.abs(new_theta) > THETA_LIMIT)
        reward = tf.ones_like(new_x)
        return next_physics, reward, terminated
