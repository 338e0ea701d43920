"""Acrobot-v1: a two-link pendulum, actuated at the elbow, to be swung above a line."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pg_keras.envs.core import Env, uniform, wrap_angle

DT = 0.2
GRAVITY = 9.8
LINK_LENGTH_1 = 1.0
MASS_1 = 1.0
MASS_2 = 1.0
COM_1 = 0.5  # distance from each link's joint to its centre of mass
COM_2 = 0.5
INERTIA_1 = 1.0  # moments of inertia of the links about their centres
INERTIA_2 = 1.0
MAX_VEL_1 = 4 * math.pi
MAX_VEL_2 = 9 * math.pi
RESET_BOUND = 0.1


def _derivatives(theta1, theta2, dtheta1, dtheta2, torque):
    """Time derivatives of (theta1, theta2, dtheta1, dtheta2), all [N] float32.

    The equations of motion of Sutton & Barto's book version (gymnasium's default,
    ``book_or_nips="book"``), which keeps the centripetal term in the elbow equation.
    The angles are measured from hanging straight down, so the gravity terms that
    gymnasium writes as cos(angle - pi/2) are sin(angle) here (and exact in float32).
    """
    cos2, sin2 = tf.cos(theta2), tf.sin(theta2)
    coupling = MASS_2 * LINK_LENGTH_1 * COM_2  # the m2 l1 lc2 products
    # d1: the shoulder's effective inertia; d2: the inertia coupling the two joints.
    d1 = (MASS_1 * COM_1 ** 2 + MASS_2 * (LINK_LENGTH_1 ** 2 + COM_2 ** 2) + INERTIA_1 + INERTIA_2
          + 2.0 * coupling * cos2)
    d2 = MASS_2 * COM_2 ** 2 + INERTIA_2 + coupling * cos2
    # Gravity on the second link, and everything acting on the shoulder except inertia.
    phi2 = MASS_2 * COM_2 * GRAVITY * tf.sin(theta1 + theta2)
    phi1 = (-coupling * sin2 * dtheta2 * (dtheta2 + 2.0 * dtheta1)
            + (MASS_1 * COM_1 + MASS_2 * LINK_LENGTH_1) * GRAVITY * tf.sin(theta1)
            + phi2)
    ddtheta2 = ((torque + d2 / d1 * phi1 - coupling * tf.square(dtheta1) * sin2 - phi2)
                / (MASS_2 * COM_2 ** 2 + INERTIA_2 - tf.square(d2) / d1))
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return tf.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], axis=1)


class Acrobot(Env):
    """Batched Acrobot-v1: book dynamics, no torque noise, one RK4 step of 0.2 s.

    physics columns: [theta1, theta2, dtheta1, dtheta2], angles wrapped to [-pi, pi] and
    speeds clipped to 4 pi and 9 pi after each step; observation
    [cos theta1, sin theta1, cos theta2, sin theta2, dtheta1, dtheta2]. Actions 0, 1, 2
    apply torques -1, 0, +1. The episode terminates when the free end rises more than
    one link length above the pivot (-cos theta1 - cos(theta1 + theta2) > 1); reward -1
    per step and 0 on the terminating one; truncated after 500 steps.
    """

    id = "Acrobot-v1"
    max_episode_steps = 500
    observation_space = gym.spaces.Box(
        -np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], np.float32),
        np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], np.float32), dtype=np.float32)
    action_space = gym.spaces.Discrete(3)

    def _initial_physics(self, num_envs, seed):
        return uniform(num_envs, seed, [-RESET_BOUND] * 4, [RESET_BOUND] * 4)

    def _observe(self, physics):
        theta1, theta2, dtheta1, dtheta2 = tf.unstack(physics, axis=1)
        return tf.stack([tf.cos(theta1), tf.sin(theta1), tf.cos(theta2), tf.sin(theta2),
                         dtheta1, dtheta2], axis=1)

    def _transition(self, physics, action):
        torque = tf.cast(action, tf.float32) - 1.0

        def f(y):
            return _derivatives(*tf.unstack(y, axis=1), torque)

        # Classic fourth-order Runge-Kutta over one step of DT; the torque is held fixed.
        k1 = f(physics)
        k2 = f(physics + 0.5 * DT * k1)
        k3 = f(physics + 0.5 * DT * k2)
        k4 = f(physics + DT * k3)
        y = physics + DT / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

        theta1, theta2, dtheta1, dtheta2 = tf.unstack(y, axis=1)
        theta1, theta2 = wrap_angle(theta1), wrap_angle(theta2)
        dtheta1 = tf.clip_by_value(dtheta1, -MAX_VEL_1, MAX_VEL_1)
        dtheta2 = tf.clip_by_value(dtheta2, -MAX_VEL_2, MAX_VEL_2)
        terminated = -tf.cos(theta1) - tf.cos(theta1 + theta2) > 1.0
        reward = tf.where(terminated, 0.0, -1.0)
        return tf.stack([theta1, theta2, dtheta1, dtheta2], axis=1), reward, terminated
