"""The REINFORCE surrogate, value and entropy losses: pure functions on [T, B] tensors.

The surrogate's gradient is the policy-gradient estimate: for one step,
grad[-log pi(a_t|s_t) * Psi_t] = -Psi_t * grad log pi(a_t|s_t), where Psi_t (the return, or
the return minus the baseline) is held constant with ``tf.stop_gradient``. Its value is not
the objective; only its gradient means something.
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
                   value_targets=None, step_weights=None) -> LossInfo:
    """The whole loss of one update.

    Args:
        log_probs: [T, B] log pi(a_t|s_t).
        entropy: [T, B] entropy of pi(.|s_t).
        weights: [T, B] the policy-gradient weight (return or advantage).
        mask: [T, B] valid steps.
        entropy_coef: beta, the entropy bonus weight.
        values: optional [T, B] V(s_t) (with a baseline).
        value_targets: optional [T, B] value targets (with a baseline).
        step_weights: optional [T, B] per-step factors such as gamma^t.

    Returns:
        LossInfo.
    """
    policy = policy_gradient_loss(log_probs, weights, mask, step_weights)
    mean_entropy = masked_mean(entropy, mask)
    value = tf.zeros([], tf.float32) if values is None else value_loss(values, value_targets, mask)
    total = policy - tf.cast(entropy_coef, tf.float32) * mean_entropy + value
    return LossInfo(total=total, policy=policy, value=value, entropy=mean_entropy)
