"""Keras layers that put a policy's own pieces into one saveable ``keras.Model``.

:meth:`pg_keras.Policy.keras_model` chains them around the policy network: the
observation encoding, the normalizer, the network, and the action head's parameters.
Each is registered with Keras, so ``keras.models.load_model`` rebuilds them (with pg_keras
imported) from their config alone; the heads compute their parameters with the same
functions, so the model and the policy cannot drift apart.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from pg_keras import space_json, spaces

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_MASKED_LOGIT = -1e9


def logit_table(nvec: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Where each sub-action's logits sit in a flat ``[sum(nvec)]`` output.

    Returns:
        ``columns`` [k, max(nvec)] int32, the flat index of each sub-action's choice (0
        past its size), and ``valid`` [k, max(nvec)] bool, which entries are choices.
    """
    nvec = np.asarray(nvec, np.int64).reshape(-1)
    width = int(nvec.max())
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    columns = offsets[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < nvec[:, None]
    return np.where(valid, columns, 0).astype(np.int32), valid


def masked_logits(params, columns, valid) -> tf.Tensor:
    """[B, sum(nvec)] -> [B, k, max(nvec)]; entries past a sub-action's size get -1e9."""
    gathered = tf.gather(params, columns, axis=-1)
    return tf.where(valid, gathered, tf.constant(_MASKED_LOGIT, params.dtype))


def gaussian_mean_and_log_std(params, log_std: Optional[tf.Tensor],
                              init_log_std: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Mean and log-std [B, d] of a diagonal Gaussian head.

    Args:
        params: [B, d] means, or [B, 2d] means and log-std offsets when ``log_std`` is None.
        log_std: [d] the learned state-independent log-std, or None (state-dependent).
        init_log_std: Added to the network's log-std before clipping (state-dependent).
    """
    if log_std is None:
        mean, offset = tf.split(params, 2, axis=-1)
        return mean, tf.clip_by_value(offset + init_log_std, LOG_STD_MIN, LOG_STD_MAX)
    return params, tf.broadcast_to(tf.cast(log_std, params.dtype), tf.shape(params))


@keras.saving.register_keras_serializable(package="pg_keras")
class EncodeObservations(keras.layers.Layer):
    """Raw observations of ``space`` -> float32 features: ``pg_keras.spaces.encode``.

    For a Dict or Tuple space it takes and gives the flat dict ``{leaf name: batch}``.

    Args:
        space: The observation space, or its JSON form (``pg_keras.space_json``), which
            is what the layer's config holds.
    """

    def __init__(self, space, **kwargs):
        super().__init__(**kwargs)
        self.space = space_json.space_from_json(space) if isinstance(space, dict) else space

    def call(self, inputs):
        return spaces.encode(self.space, inputs)

    def compute_output_shape(self, input_shape):
        batch = tf.nest.flatten(input_shape)[0]
        return spaces.nest_map(lambda shape: (batch,) + tuple(shape),
                               spaces.encoded_shape(self.space))

    def get_config(self):
        return {**super().get_config(), "space": space_json.space_to_json(self.space)}


@keras.saving.register_keras_serializable(package="pg_keras")
class MaskedLogits(keras.layers.Layer):
    """A ``MultiDiscrete(nvec)`` head's logits: [B, sum(nvec)] -> [B, k, max(nvec)]."""

    def __init__(self, nvec: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.nvec = [int(n) for n in np.asarray(nvec).reshape(-1)]
        self._columns, self._valid = logit_table(self.nvec)

    def call(self, params):
        return masked_logits(tf.cast(params, tf.float32), self._columns, self._valid)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._columns.shape

    def get_config(self):
        return {**super().get_config(), "nvec": self.nvec}


@keras.saving.register_keras_serializable(package="pg_keras")
class GaussianParameters(keras.layers.Layer):
    """A Box head's parameters: [B, d] (or [B, 2d]) -> (mean [B, d], std [B, d]).

    Args:
        action_size: d.
        state_dependent_std: The input holds [mean, log-std offset]; no weight here.
        init_log_std: The log-std offset (state-dependent) or initial log-std.
        log_std: A variable to share as the state-independent log-std (the head's own);
            a new weight when None. Not part of the config: a loaded model gets its own
            weight, filled from the saved one.
    """

    def __init__(self, action_size: int, state_dependent_std: bool = False,
                 init_log_std: float = 0.0, log_std=None, **kwargs):
        super().__init__(**kwargs)
        self.action_size = int(action_size)
        self.state_dependent_std = bool(state_dependent_std)
        self.init_log_std = float(init_log_std)
        self.log_std = None
        if not self.state_dependent_std:
            self.log_std = log_std if log_std is not None else self.add_weight(
                shape=(self.action_size,), name="log_std",
                initializer=keras.initializers.Constant(self.init_log_std))
        self.built = True

    def call(self, params):
        mean, log_std = gaussian_mean_and_log_std(tf.cast(params, tf.float32), self.log_std,
                                                  self.init_log_std)
        return mean, tf.exp(log_std)

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.action_size)
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "action_size": self.action_size,
                "state_dependent_std": self.state_dependent_std,
                "init_log_std": self.init_log_std}
