"""Returns, advantages and normalization: pure TensorFlow on time-major [T, B] tensors.

Episode boundaries are given by ``continues[t]``: 1 where step t+1 belongs to the same
episode and lies in the batch, 0 where the episode ended at step t (terminated or
truncated). The last row is always a cut: nothing after it is in the batch.
``bootstrap[t]`` is the value of what lies beyond a boundary at step t: 0 after a
termination, V(final observation) after a time-limit truncation, V(s_T) after the cut at
the end of the batch. It is read only where the episode does not continue.
"""

from __future__ import annotations

import tensorflow as tf


def _cut_last_row(continues: tf.Tensor) -> tf.Tensor:
    # tf.cast, not convert_to_tensor(..., tf.float32): the latter rejects a bool tensor,
    # and the learner's terminated/truncated flags are bool.
    continues = tf.cast(continues, tf.float32)
    return tf.concat([continues[:-1], tf.zeros_like(continues[-1:])], axis=0)


def discounted_returns(rewards, continues, bootstrap, gamma) -> tf.Tensor:
    """Return-to-go G_t = r_t + gamma * (G_{t+1} if the episode continues else bootstrap_t).

    Args:
        rewards: [T, B] float32, the reward received after the action at step t.
        continues: [T, B] float32 (or bool), 1 where step t+1 continues step t's episode.
        bootstrap: [T, B] float32, the value beyond step t where the episode stops.
        gamma: scalar discount.

    Returns:
        [T, B] float32 returns.
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    continues = _cut_last_row(continues)
    bootstrap = tf.convert_to_tensor(bootstrap, tf.float32)
    gamma = tf.cast(gamma, tf.float32)

    def step(next_return, inputs):
        reward, cont, boot = inputs
        return reward + gamma * (cont * next_return + (1.0 - cont) * boot)

    return tf.scan(step, (rewards, continues, bootstrap),
                   initializer=tf.zeros_like(rewards[0]), reverse=True)


def generalized_advantages(rewards, values, continues, bootstrap, gamma, lam):
    """GAE(lambda) advantages and the matching lambda-returns.

    delta_t = r_t + gamma * V'(t) - V(s_t), with V'(t) = V(s_{t+1}) inside an episode and
    bootstrap_t at its boundary; A_t = delta_t + gamma * lambda * A_{t+1} inside an episode.
    With lambda = 1, A_t = G_t - V(s_t) exactly (the REINFORCE-with-baseline weight).

    Args:
        rewards: [T, B] float32.
        values: [T, B] float32, V(s_t).
        continues: [T, B] float32 (or bool).
        bootstrap: [T, B] float32.
        gamma: scalar discount.
        lam: scalar lambda in [0, 1].

    Returns:
        (advantages, returns), both [T, B] float32, returns = advantages + values.
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    values = tf.convert_to_tensor(values, tf.float32)
    continues = _cut_last_row(continues)
    bootstrap = tf.convert_to_tensor(bootstrap, tf.float32)
    gamma = tf.cast(gamma, tf.float32)
    lam = tf.cast(lam, tf.float32)

    next_values = tf.concat([values[1:], tf.zeros_like(values[-1:])], axis=0)
    next_values = continues * next_values + (1.0 - continues) * bootstrap
    deltas = rewards + gamma * next_values - values

    def step(next_advantage, inputs):
        delta, cont = inputs
        return delta + gamma * lam * cont * next_advantage

    advantages = tf.scan(step, (deltas, continues),
                         initializer=tf.zeros_like(rewards[0]), reverse=True)
    return advantages, advantages + values


def first_episode_mask(dones) -> tf.Tensor:
    """1 for every step up to and including each column's first episode end, else 0.

    Args:
        dones: [T, B] bool or float, terminated or truncated.

    Returns:
        [T, B] float32 mask.
    """
    dones = tf.cast(dones, tf.float32)
    ended_before = tf.math.cumsum(dones, axis=0, exclusive=True)
    return tf.cast(ended_before < 0.5, tf.float32)


def masked_mean(x, mask) -> tf.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (0 if there are none)."""
    x = tf.convert_to_tensor(x)
    mask = tf.cast(mask, x.dtype)
    # Select, not only multiply: padding may hold inf or NaN, and NaN * 0 is NaN. The
    # select's gradient is also 0 at the left-out entries.
    masked = tf.where(mask != 0, x * mask, tf.zeros_like(x))
    return tf.math.divide_no_nan(tf.reduce_sum(masked), tf.reduce_sum(mask))


def normalize(x, mask=None, epsilon: float = 1e-8) -> tf.Tensor:
    """Standardize ``x`` to zero mean and unit variance over the masked entries.

    Args:
        x: float32 tensor of any shape.
        mask: optional tensor of ``x``'s shape; entries where it is 0 are ignored in the
            statistics (their output is still standardized with them).
        epsilon: added to the variance.

    Returns:
        A tensor of ``x``'s shape.
    """
    if mask is None:
        mask = tf.ones_like(x)
    mean = masked_mean(x, mask)
    variance = masked_mean(tf.square(x - mean), mask)
    return (x - mean) * tf.math.rsqrt(variance + epsilon)


def step_discounts(episode_steps, gamma) -> tf.Tensor:
    """gamma^t for each step, t counted from its episode's first step.

    Args:
        episode_steps: [T, B] int, the step's index within its episode.
        gamma: scalar discount.

    Returns:
        [T, B] float32.
    """
    return tf.pow(tf.cast(gamma, tf.float32), tf.cast(episode_steps, tf.float32))
