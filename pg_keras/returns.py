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
    # G_t = x_t + gamma * c_t * G_{t+1}, with what lies past a boundary folded into x_t.
    beyond = tf.where(continues > 0, tf.zeros_like(bootstrap), bootstrap)
    return discounted_reverse_cumsum(rewards + gamma * beyond, continues, gamma)


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

    advantages = discounted_reverse_cumsum(deltas, continues, gamma * lam)
    return advantages, advantages + values


# Up to this many [T, T, B] entries, the sum is one masked product; past it, a scan: the
# product's cost grows with T*T*B, the scan's with T sequential steps and barely with B.
_MATRIX_MAX_ELEMENTS = 1 << 15


def discounted_reverse_cumsum(x, continues, factor) -> tf.Tensor:
    """y_t = x_t + factor * continues_t * y_{t+1}, with y_T = 0, along the time axis.

    Both returns and GAE are this sum. For small batches (T * T * B up to 32k entries, e.g.
    32 steps x 32 envs) it is computed as one product with the [T, T, B] matrix of weights
    factor^(k-t) over the steps k >= t of the same episode: a scan runs T dependent graph
    steps, whose fixed cost exceeds the arithmetic there. Larger batches use the scan.

    Args:
        x: [T, B] float32.
        continues: [T, B] float32 of 0s and 1s.
        factor: scalar.

    Returns:
        [T, B] float32.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    continues = tf.cast(continues, tf.float32)
    factor = tf.cast(factor, tf.float32)
    steps, batch = x.shape[0], x.shape[1]
    if steps is None or batch is None or steps * steps * batch > _MATRIX_MAX_ELEMENTS:
        def step(following, inputs):
            value, cont = inputs
            return value + factor * cont * following

        return tf.scan(step, (x, continues), initializer=tf.zeros_like(x[0]), reverse=True)
    # Steps t and k (k >= t) are in the same episode when no boundary lies in t..k-1,
    # i.e. when they have the same count of boundaries before them.
    episode = tf.math.cumsum(1.0 - continues, axis=0, exclusive=True)  # [T, B]
    same = tf.equal(episode[:, None, :], episode[None, :, :])  # [t, k, B]
    lag = tf.range(steps, dtype=tf.float32)
    lag = lag[None, :] - lag[:, None]  # k - t
    # factor ** lag, with 0 ** 0 = 1 (factor may be 0: gamma = 0 or lambda = 0).
    powers = tf.where(lag > 0, tf.pow(factor, tf.maximum(lag, 1.0)), tf.ones_like(lag))
    weights = tf.where(same & (lag >= 0)[:, :, None], powers[:, :, None], 0.0)
    # A broadcast product and sum: einsum's batched matmul over B costs more at these sizes.
    return tf.reduce_sum(weights * x[None, :, :], axis=1)


def masked_mean(x, mask) -> tf.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (0 if there are none)."""
    x = tf.convert_to_tensor(x)
    mask = tf.cast(mask, x.dtype)
    # Select, not only multiply: padding may hold inf or NaN, and NaN * 0 is NaN. The
    # select's gradient is also 0 at the left-out entries.
    masked = tf.where(mask != 0, x * mask, tf.zeros_like(x))
    return tf.math.divide_no_nan(tf.reduce_sum(masked), tf.reduce_sum(mask))


def normalize(x, mask=None, epsilon: float = 1e-8, std_floor: float = 0.0) -> tf.Tensor:
    """Standardize ``x`` to zero mean and unit variance over the masked entries.

    Args:
        x: float32 tensor of any shape.
        mask: optional tensor of ``x``'s shape; entries where it is 0 are ignored in the
            statistics (their output is still standardized with them).
        epsilon: added to the variance.
        std_floor: ``x`` is divided by its standard deviation or by this, whichever is
            larger: a batch that varies less than the floor is centred but not scaled up.

    Returns:
        A tensor of ``x``'s shape.
    """
    if mask is None:
        mask = tf.ones_like(x)
    mean = masked_mean(x, mask)
    variance = masked_mean(tf.square(x - mean), mask)
    return standardize(x, mean, variance, epsilon, std_floor)


def standardize(x, mean, variance, epsilon: float = 1e-8, std_floor: float = 0.0) -> tf.Tensor:
    """(x - mean) / max(sqrt(variance + epsilon), std_floor), with given moments (the
    learner's span all replicas' valid steps)."""
    return (x - mean) * inverse_std(variance, epsilon, std_floor)


def inverse_std(variance, epsilon: float = 1e-8, std_floor: float = 0.0) -> tf.Tensor:
    """1 / max(sqrt(variance + epsilon), std_floor): the factor :func:`standardize` applies."""
    if std_floor > 0:
        return 1.0 / tf.maximum(tf.sqrt(variance + epsilon), tf.cast(std_floor, variance.dtype))
    return tf.math.rsqrt(variance + epsilon)


def step_discounts(episode_steps, gamma) -> tf.Tensor:
    """gamma^t for each step, t counted from its episode's first step.

    Args:
        episode_steps: [T, B] int, the step's index within its episode.
        gamma: scalar discount.

    Returns:
        [T, B] float32.
    """
    return tf.pow(tf.cast(gamma, tf.float32), tf.cast(episode_steps, tf.float32))
