"""The REINFORCE surrogate, its clipped form, value and entropy losses: pure functions on
[T, B] tensors (any shape whose entries are steps; a minibatch is [1, n]).

The surrogate's gradient is the policy-gradient estimate: for one step,
grad[-log pi(a_t|s_t) * Psi_t] = -Psi_t * grad log pi(a_t|s_t), where Psi_t (the return, or
the return minus the baseline) is held constant with ``tf.stop_gradient``. Its value is not
the objective; only its gradient means something.

The clipped surrogate (PPO) reuses a batch for several steps: with the ratio
r_t = pi(a_t|s_t) / pi_old(a_t|s_t) to the policy that collected it, each step's term is
-min(r_t Psi_t, clip(r_t, 1 - eps, 1 + eps) Psi_t). At the collecting policy r_t = 1 and
grad r_t = grad log pi(a_t|s_t), so its first step is the REINFORCE step; the clip only
acts on later steps, zeroing the gradient of a step whose ratio has already moved past
the clip on the side its Psi_t pushes (docs/reinforce.md).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import tensorflow as tf

from pg_keras.returns import masked_mean


class LossInfo(NamedTuple):
    """A scalar loss and its named parts (all scalars).

    ``total = policy - entropy_coef * entropy + value``. The policy and value models share
    no weights, so the gradient of ``total`` with respect to each model's weights is the
    gradient of its own part.
    """

    total: tf.Tensor
    policy: tf.Tensor
    value: tf.Tensor
    entropy: tf.Tensor


def policy_gradient_loss(log_probs, weights, mask, step_weights: Optional[tf.Tensor] = None):
    """-mean[log pi(a_t|s_t) * stop_gradient(weights_t) * step_weights_t] over valid steps.

    Args:
        log_probs: [T, B] log pi(a_t|s_t), differentiable.
        weights: [T, B] the return G_t or the advantage G_t - b(s_t); not differentiated.
        mask: [T, B] 1 for steps to learn from, 0 for padding.
        step_weights: optional [T, B], e.g. gamma^t; not differentiated.

    Returns:
        Scalar loss.
    """
    weights = tf.stop_gradient(weights)
    if step_weights is not None:
        weights = weights * tf.stop_gradient(step_weights)
    # Zero the weights of padded steps: a NaN there would otherwise reach the gradient of
    # log pi as 0 * NaN even though masked_mean leaves it out of the value.
    weights = tf.where(tf.cast(mask, tf.bool), weights, tf.zeros_like(weights))
    return -masked_mean(log_probs * weights, mask)


def clipped_surrogate_loss(log_probs, old_log_probs, weights, mask, clip_ratio: float,
                           step_weights: Optional[tf.Tensor] = None):
    """-mean[min(r_t Psi_t, clip(r_t, 1 - clip_ratio, 1 + clip_ratio) Psi_t)] over valid
    steps, with r_t = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t)).

    Args:
        log_probs: [T, B] log pi(a_t|s_t), differentiable.
        old_log_probs: [T, B] log pi_old(a_t|s_t) of the collecting policy; not
            differentiated.
        weights: [T, B] Psi_t; not differentiated.
        mask: [T, B] 1 for steps to learn from.
        clip_ratio: eps; 0 leaves the ratio unclipped (r_t Psi_t, whose gradient at the
            collecting policy is REINFORCE's).
        step_weights: optional [T, B] factors such as gamma^t; not differentiated.

    Returns:
        Scalar loss.
    """
    weights = tf.stop_gradient(weights)
    if step_weights is not None:
        weights = weights * tf.stop_gradient(step_weights)
    valid = tf.cast(mask, tf.bool)
    weights = tf.where(valid, weights, tf.zeros_like(weights))
    # Padding may hold any log-probability: its ratio is set to 1 before the exp.
    log_ratio = tf.where(valid, log_probs - tf.stop_gradient(old_log_probs),
                         tf.zeros_like(log_probs))
    ratio = tf.exp(log_ratio)
    objective = ratio * weights
    if clip_ratio > 0:
        clipped = tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio) * weights
        objective = tf.minimum(objective, clipped)
    return -masked_mean(objective, mask)


def ratio_statistics(log_probs, old_log_probs, mask, clip_ratio: float):
    """(approximate KL(pi_old || pi), clip fraction) over valid steps.

    The KL estimate is mean[(r - 1) - log r], unbiased and never negative; the clip
    fraction is the share of steps with |r - 1| > clip_ratio (0 without a clip).
    """
    valid = tf.cast(mask, tf.bool)
    log_ratio = tf.where(valid, tf.stop_gradient(log_probs - old_log_probs),
                         tf.zeros_like(log_probs))
    ratio = tf.exp(log_ratio)
    kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    clipped = (tf.cast(tf.abs(ratio - 1.0) > clip_ratio, tf.float32) if clip_ratio > 0
               else tf.zeros_like(ratio))
    return kl, masked_mean(clipped, mask)


def clipped_value_loss(values, old_values, targets, mask, value_clip: float):
    """mean[max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2)] over valid steps: the
    value model moves at most ``value_clip`` from its prediction at collection where
    that moves it toward the target.

    Args:
        values: [T, B] V(s_t), differentiable.
        old_values: [T, B] V(s_t) before the update; not differentiated.
        targets: [T, B] returns; not differentiated.
        mask: [T, B].
        value_clip: c, in the value model's units (return-scale units).

    Returns:
        Scalar loss.
    """
    targets, old_values = tf.stop_gradient(targets), tf.stop_gradient(old_values)
    clipped = old_values + tf.clip_by_value(values - old_values, -value_clip, value_clip)
    # Selected before squaring: a non-finite target at a padded step stays out of the
    # gradient too (as in value_loss).
    valid, zeros = tf.cast(mask, tf.bool), tf.zeros_like(values)
    error = tf.where(valid, targets - values, zeros)
    clipped_error = tf.where(valid, targets - clipped, zeros)
    return masked_mean(tf.maximum(tf.square(error), tf.square(clipped_error)), mask)


def value_loss(values, targets, mask):
    """mean[(stop_gradient(targets_t) - V(s_t))^2] over valid steps.

    Args:
        values: [T, B] V(s_t), differentiable.
        targets: [T, B] returns; not differentiated.
        mask: [T, B].

    Returns:
        Scalar loss.
    """
    # The select keeps a non-finite target at a padded step out of the gradient too.
    errors = tf.stop_gradient(targets) - values
    errors = tf.where(tf.cast(mask, tf.bool), errors, tf.zeros_like(errors))
    return masked_mean(tf.square(errors), mask)


def reinforce_loss(log_probs, entropy, weights, mask, entropy_coef, values=None,
                   value_targets=None, step_weights=None, old_log_probs=None,
                   clip_ratio: float = 0.0, old_values=None,
                   value_clip: float = 0.0) -> LossInfo:
    """The whole loss of one gradient step.

    Args:
        log_probs: [T, B] log pi(a_t|s_t).
        entropy: [T, B] entropy of pi(.|s_t).
        weights: [T, B] the policy-gradient weight (return or advantage).
        mask: [T, B] valid steps.
        entropy_coef: beta, the entropy bonus weight.
        values: optional [T, B] V(s_t) (with a baseline).
        value_targets: optional [T, B] value targets (with a baseline).
        step_weights: optional [T, B] per-step factors such as gamma^t.
        old_log_probs: optional [T, B] log pi_old(a_t|s_t) of the collecting policy: the
            policy term is then the (clipped, with ``clip_ratio``) ratio surrogate of a
            reused batch; None is REINFORCE's surrogate.
        clip_ratio: eps of the clipped surrogate.
        old_values: optional [T, B] V(s_t) at collection, for ``value_clip``.
        value_clip: c of the clipped value loss; 0 is the plain squared error.

    Returns:
        LossInfo.
    """
    if old_log_probs is None:
        policy = policy_gradient_loss(log_probs, weights, mask, step_weights)
    else:
        policy = clipped_surrogate_loss(log_probs, old_log_probs, weights, mask, clip_ratio,
                                        step_weights)
    mean_entropy = masked_mean(entropy, mask)
    if values is None:
        value = tf.zeros([], tf.float32)
    elif value_clip > 0:
        value = clipped_value_loss(values, old_values, value_targets, mask, value_clip)
    else:
        value = value_loss(values, value_targets, mask)
    total = policy - tf.cast(entropy_coef, tf.float32) * mean_entropy + value
    return LossInfo(total=total, policy=policy, value=value, entropy=mean_entropy)
