"""The one place that dispatches on gymnasium action spaces.

A head turns the policy network's output (``params``, [B, param_size]) into a
``tfp.distributions`` distribution over the *raw* action, a greedy raw action, and the
action the environment receives. Raw actions are what the batch stores and what the
log-probability is taken of; ``to_env`` is the environment-side post-processing.

Box actions. The head is a diagonal Gaussian over the unbounded raw action. With
``action_bounds="clip"`` (the default) the environment receives the sample clipped to the
bounds: the log-probability and entropy stay those of a plain Gaussian, the gradient is the
textbook (a - mu) / sigma^2, and clipping is treated as part of the environment. With
``"tanh"`` the sample is squashed into the bounds; the squash has no parameters, so the
log-probability's gradient is the same as the Gaussian's and we train on the pre-squash
sample (the entropy reported is the pre-squash Gaussian's). Clipping is the default
because squashing saturates: once the mean drifts far past a bound, almost every sample
lands on that bound, the return stops depending on the sample, and the signal that would
pull the mean back fades (clipping has the same failure, but only past the bound itself).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from pg_keras.config import InputError

tfd = tfp.distributions

SUPPORTED_SPACES = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")
NumpySampler = Callable[[np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray]]
_LOG_STD_MIN, _LOG_STD_MAX = -5.0, 2.0


class ActionHead(keras.layers.Layer):
    """Base class: maps network outputs to a distribution and to env actions.

    Attributes:
        space: The gymnasium action space.
        param_size: Output units the policy network must produce.
        raw_shape: Shape of one raw action (without the batch dimension).
        raw_dtype: dtype of raw actions.
    """

    param_size: int
    raw_shape: tuple
    raw_dtype: tf.DType

    def __init__(self, space: gym.Space, **kwargs):
        super().__init__(**kwargs)
        self.space = space

    def distribution(self, params) -> tfd.Distribution:
        """A distribution with batch shape [B] over raw actions of ``raw_shape``."""
        raise NotImplementedError

    def greedy(self, params) -> tf.Tensor:
        """The most likely raw action, [B, *raw_shape]."""
        raise NotImplementedError

    def to_env(self, raw_action) -> tf.Tensor:
        """The action ``env.step`` receives, batched: inside the space, its dtype."""
        raise NotImplementedError

    def parameters(self, params) -> Dict[str, tf.Tensor]:
        """The distribution's parameters by name, for export and inspection."""
        raise NotImplementedError

    def numpy_sampler(self) -> NumpySampler:
        """The head's sampling and ``to_env`` in NumPy, with the head's current weights.

        For the gymnasium collector, where one TensorFlow call per env step would cost more
        than the step. ``sampler(params, rng)`` draws from the same distribution as
        ``distribution(params).sample()`` and returns ``(raw action, env action)``.
        """
        raise NotImplementedError

    def call(self, params):
        return self.greedy(params)


class CategoricalHead(ActionHead):
    """``Discrete(n, start)``: softmax over n logits."""

    def __init__(self, space: gym.spaces.Discrete, **kwargs):
        super().__init__(space, **kwargs)
        self.param_size = int(space.n)
        self.raw_shape = ()
        self.raw_dtype = tf.int32
        self._start = int(space.start)
        self._env_dtype = tf.as_dtype(space.dtype)

    def distribution(self, params):
        return tfd.Categorical(logits=params, dtype=tf.int32)

    def greedy(self, params):
        return tf.argmax(params, axis=-1, output_type=tf.int32)

    def to_env(self, raw_action):
        return tf.cast(raw_action + self._start, self._env_dtype)

    def parameters(self, params):
        return {"logits": params}

    def numpy_sampler(self):
        start, dtype = self._start, self.space.dtype

        def sample(params, rng):
            raw = _gumbel_argmax(params, rng)
            return raw, (raw + start).astype(dtype)
        return sample


class MultiCategoricalHead(ActionHead):
    """``MultiDiscrete(nvec, start)``: independent softmaxes of different sizes.

    The logits of the k sub-actions are gathered into a [B, k, max(nvec)] array; entries
    past a sub-action's size get a logit of -1e9 (probability 0, no gradient).
    """

    def __init__(self, space: gym.spaces.MultiDiscrete, **kwargs):
        super().__init__(space, **kwargs)
        nvec = np.asarray(space.nvec).reshape(-1).astype(np.int64)
        self.param_size = int(nvec.sum())
        self.raw_shape = (len(nvec),)
        self.raw_dtype = tf.int32
        width = int(nvec.max())
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        columns = offsets[:, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < nvec[:, None]
        self._columns = tf.constant(np.where(valid, columns, 0), tf.int32)
        self._valid = tf.constant(valid)
        self._start = tf.constant(np.asarray(space.start).reshape(-1), tf.int32)
        self._env_shape = tuple(space.shape)
        self._env_dtype = tf.as_dtype(space.dtype)

    def _logits(self, params):
        gathered = tf.gather(params, self._columns, axis=-1)
        return tf.where(self._valid, gathered, tf.constant(-1e9, params.dtype))

    def distribution(self, params):
        return tfd.Independent(tfd.Categorical(logits=self._logits(params), dtype=tf.int32),
                               reinterpreted_batch_ndims=1)

    def greedy(self, params):
        return tf.argmax(self._logits(params), axis=-1, output_type=tf.int32)

    def to_env(self, raw_action):
        action = tf.reshape(raw_action + self._start, (-1,) + self._env_shape)
        return tf.cast(action, self._env_dtype)

    def parameters(self, params):
        return {"logits": self._logits(params)}

    def numpy_sampler(self):
        columns, valid = self._columns.numpy(), self._valid.numpy()
        start, shape, dtype = self._start.numpy(), self._env_shape, self.space.dtype

        def sample(params, rng):
            raw = _gumbel_argmax(np.where(valid, params[:, columns], -np.inf), rng)
            return raw, (raw + start).reshape((-1,) + shape).astype(dtype)
        return sample


class BernoulliHead(ActionHead):
    """``MultiBinary(n)``: independent Bernoulli per bit."""

    def __init__(self, space: gym.spaces.MultiBinary, **kwargs):
        super().__init__(space, **kwargs)
        self.param_size = int(np.prod(space.shape))
        self.raw_shape = (self.param_size,)
        self.raw_dtype = tf.int32
        self._env_shape = tuple(space.shape)
        self._env_dtype = tf.as_dtype(space.dtype)

    def distribution(self, params):
        return tfd.Independent(tfd.Bernoulli(logits=params, dtype=tf.int32),
                               reinterpreted_batch_ndims=1)

    def greedy(self, params):
        return tf.cast(params > 0, tf.int32)

    def to_env(self, raw_action):
        return tf.cast(tf.reshape(raw_action, (-1,) + self._env_shape), self._env_dtype)

    def parameters(self, params):
        return {"logits": params}

    def numpy_sampler(self):
        shape, dtype = self._env_shape, self.space.dtype

        def sample(params, rng):
            # P(logit + logistic noise > 0) = sigmoid(logit).
            raw = (params + rng.logistic(size=params.shape) > 0).astype(np.int32)
            return raw, raw.reshape((-1,) + shape).astype(dtype)
        return sample


class GaussianHead(ActionHead):
    """``Box``: diagonal Gaussian over the flattened action.

    Args:
        space: A float Box.
        state_dependent_std: The network outputs [mean, log_std] (2 * d units) instead of
            the head learning one log-std vector.
        init_log_std: Initial log-std (state-independent) or its offset (state-dependent).
        bounds: ``"clip"`` or ``"tanh"``; see the module docstring.
    """

    def __init__(self, space: gym.spaces.Box, state_dependent_std: bool = False,
                 init_log_std: float = 0.0, bounds: str = "clip", **kwargs):
        super().__init__(space, **kwargs)
        self.action_size = int(np.prod(space.shape))
        self.state_dependent_std = bool(state_dependent_std)
        self.init_log_std = float(init_log_std)
        if bounds not in ("clip", "tanh"):
            raise InputError(f"bounds must be 'clip' or 'tanh'; received bounds={bounds!r}")
        self.bounds = bounds
        self.param_size = self.action_size * (2 if self.state_dependent_std else 1)
        self.raw_shape = (self.action_size,)
        self.raw_dtype = tf.float32
        self._env_shape = tuple(space.shape)
        low = np.asarray(space.low, np.float32).reshape(-1)
        high = np.asarray(space.high, np.float32).reshape(-1)
        self._bounded = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)))
        if bounds == "tanh" and not self._bounded:
            raise InputError(f"action_bounds='tanh' needs finite Box bounds; received {space}")
        self._low = tf.constant(low)
        self._high = tf.constant(high)
        # The bounds again in the env's dtype: the final clip happens there, because a
        # float64 bound rounded to float32 (0.1 -> 0.10000000149) or the squash's own
        # rounding can land one ulp outside the Box.
        self._env_dtype = tf.as_dtype(space.dtype)
        self._env_low = tf.constant(np.asarray(space.low).reshape(-1), self._env_dtype)
        self._env_high = tf.constant(np.asarray(space.high).reshape(-1), self._env_dtype)
        if not self.state_dependent_std:
            self.log_std = self.add_weight(
                shape=(self.action_size,), name="log_std",
                initializer=keras.initializers.Constant(self.init_log_std))
        self.built = True

    def _mean_and_log_std(self, params):
        if self.state_dependent_std:
            mean, log_std = tf.split(params, 2, axis=-1)
            log_std = tf.clip_by_value(log_std + self.init_log_std, _LOG_STD_MIN, _LOG_STD_MAX)
        else:
            mean = params
            log_std = tf.broadcast_to(tf.cast(self.log_std, params.dtype), tf.shape(mean))
        return mean, log_std

    def distribution(self, params):
        mean, log_std = self._mean_and_log_std(params)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(log_std))

    def greedy(self, params):
        return self._mean_and_log_std(params)[0]

    def to_env(self, raw_action):
        action = tf.cast(raw_action, tf.float32)
        if self.bounds == "tanh":
            action = self._low + (tf.tanh(action) + 1.0) * 0.5 * (self._high - self._low)
        action = tf.clip_by_value(tf.cast(action, self._env_dtype), self._env_low, self._env_high)
        return tf.reshape(action, (-1,) + self._env_shape)

    def parameters(self, params):
        mean, log_std = self._mean_and_log_std(params)
        return {"mean": mean, "std": tf.exp(log_std)}

    def numpy_sampler(self):
        low, high = self._env_low.numpy(), self._env_high.numpy()
        f_low, f_high = self._low.numpy(), self._high.numpy()
        shape, dtype, tanh = self._env_shape, self.space.dtype, self.bounds == "tanh"
        fixed_std = None if self.state_dependent_std else np.exp(self.log_std.numpy())
        offset = self.init_log_std

        def sample(params, rng):
            if fixed_std is None:
                mean, log_std = np.split(params, 2, axis=-1)
                std = np.exp(np.clip(log_std + offset, _LOG_STD_MIN, _LOG_STD_MAX))
            else:
                mean, std = params, fixed_std
            raw = (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)
            action = f_low + (np.tanh(raw) + 1.0) * 0.5 * (f_high - f_low) if tanh else raw
            action = np.clip(action.astype(dtype), low, high)
            return raw, action.reshape((-1,) + shape)
        return sample


def _gumbel_argmax(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A categorical sample per row of the last axis: argmax(logits + Gumbel noise)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1).astype(np.int32)


def make_head(space: gym.Space, state_dependent_std: bool = False, init_log_std: float = 0.0,
              action_bounds: str = "clip") -> ActionHead:
    """The head for a gymnasium action space.

    Raises:
        ValueError: for a space the library does not support, naming it and the supported ones.
    """
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(space)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return MultiCategoricalHead(space)
    if isinstance(space, gym.spaces.MultiBinary):
        return BernoulliHead(space)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return GaussianHead(space, state_dependent_std=state_dependent_std,
                            init_log_std=init_log_std, bounds=action_bounds)
    raise InputError(
        f"unsupported action space {space!r}; supported: "
        + ", ".join(SUPPORTED_SPACES) + " (Box with a float dtype)")
