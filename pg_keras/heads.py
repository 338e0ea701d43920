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

Action masks. The Discrete and MultiDiscrete heads take an optional ``mask``, [B, n] (or
[B, sum(nvec)] in the flat order of the logits), true (or nonzero) where an action is
legal. Illegal actions' logits become the dtype's lowest finite value, so the sample, the
greedy action, the log-probability and the entropy are those of the distribution
renormalized over the legal actions, without an infinity that could turn into NaN. A
row (or a MultiDiscrete sub-action) allowing no action is refused: eagerly with an
InputError naming the row (:func:`check_mask_shape`, :func:`refuse_rows_without_action`),
inside a graph by an assertion whose message says "action mask allows no action". The
env's own masks are read where the envs are stepped (pg_keras.collect.masks).

Sampling and the log-probability. The policy's training graphs draw with
``distribution(params).sample(seed=...)`` and train on ``distribution(params).log_prob``:
TensorFlow Probability's. The exported policy cannot: TFLite and ONNX have neither
TensorFlow's stateless random ops nor, in TFLite, the sparse softmax cross-entropy TFP's
categorical log-probability is made of. It draws with :meth:`ActionHead.portable_sample`
and reports :meth:`ActionHead.portable_log_prob`, the same law and the same log-density
in ops every runtime runs (see pg_keras.portable_random): the same seed gives the same
draw in every runtime, though not the draw of ``distribution(params).sample(seed=seed)``.
Every other runtime (the NumPy fast actor in pg_keras.collect.numpy_policy) derives its
sampling from the head's public attributes.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from pg_keras import portable_random, space_json
from pg_keras.config import InputError

tfd = tfp.distributions

SUPPORTED_SPACES = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")
NO_ACTION = "action mask allows no action"
# A state-dependent log-std is clipped to this range.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# The logit of a MultiDiscrete sub-action's padding past its size: probability 0.
_PADDING_LOGIT = -1e9


class ActionHead(keras.layers.Layer):
    """Base class: maps network outputs to a distribution and to env actions.

    As a Keras layer it maps the network's output to :meth:`parameters`, and its config
    holds the action space as JSON (``pg_keras.space_json``): ``Policy.keras_model`` ends
    with the head, and ``keras.models.load_model`` rebuilds it from the config.

    Args:
        space: The gymnasium action space, or its JSON form (what the config holds).

    Attributes:
        space: The gymnasium action space.
        param_size: Output units the policy network must produce.
        raw_shape: Shape of one raw action (without the batch dimension).
        raw_dtype: dtype of raw actions.
        mask_size: Width of an action mask, or None where the head takes none.
        env_shape: Shape of one env action (the space's).

    Every method taking ``params`` also takes ``mask``, an action mask (see the module
    docstring); None, the default, allows every action. Heads without masks refuse one.
    """

    param_size: int
    raw_shape: tuple
    raw_dtype: tf.DType
    mask_size: Optional[int] = None

    def __init__(self, space: gym.Space, **kwargs):
        super().__init__(**kwargs)
        self.space = space_json.space_from_json(space) if isinstance(space, dict) else space
        self.env_shape = tuple(self.space.shape)
        self._env_dtype = tf.as_dtype(self.space.dtype)

    def refuse_mask(self, mask) -> None:
        """Refuses an action mask given to a head that takes none (InputError)."""
        if mask is not None:
            raise InputError(f"action masks apply to Discrete and MultiDiscrete action "
                             f"spaces; received a mask for the action space {self.space}")

    def distribution(self, params, mask=None) -> tfd.Distribution:
        """A distribution with batch shape [B] over raw actions of ``raw_shape``."""
        raise NotImplementedError

    def greedy(self, params, mask=None) -> tf.Tensor:
        """The most likely raw action, [B, *raw_shape]."""
        raise NotImplementedError

    def to_env(self, raw_action) -> tf.Tensor:
        """The action ``env.step`` receives, batched: inside the space, its dtype."""
        raise NotImplementedError

    def parameters(self, params, mask=None) -> Dict[str, tf.Tensor]:
        """The distribution's parameters by name, for export and inspection."""
        raise NotImplementedError

    def portable_sample(self, params, seed, mask=None) -> tf.Tensor:
        """A raw action [B, *raw_shape] drawn from ``distribution(params)``, seeded by
        ``seed`` (int32 [2]), in ops that TFLite and ONNX run (see the module docstring)."""
        raise NotImplementedError

    def portable_log_prob(self, params, raw_action, mask=None) -> tf.Tensor:
        """``distribution(params).log_prob(raw_action)`` [B], in the same portable ops."""
        raise NotImplementedError

    def call(self, params):
        return self.parameters(tf.cast(params, tf.float32))

    def get_config(self):
        return {**super().get_config(), "space": space_json.space_to_json(self.space)}


class _LogitsHead(ActionHead):
    """A head whose distribution is categorical over ``_logits(params, mask)``: the greedy
    action, the parameters and the portable sampler are the same for one or several
    sub-actions (the logits' last axis is the choice).

    Attributes:
        start: The space's ``start``, added to a raw action to make the env's.
    """

    start: np.ndarray

    def _logits(self, params, mask=None) -> tf.Tensor:
        raise NotImplementedError

    def greedy(self, params, mask=None):
        return tf.argmax(self._logits(params, mask), axis=-1, output_type=tf.int32)

    def parameters(self, params, mask=None):
        return {"logits": self._logits(params, mask)}

    def portable_sample(self, params, seed, mask=None):
        return _gumbel_max(self._logits(params, mask), seed)

    def portable_log_prob(self, params, raw_action, mask=None):
        return _categorical_log_prob(self._logits(params, mask), raw_action)


@keras.saving.register_keras_serializable(package="pg_keras")
class CategoricalHead(_LogitsHead):
    """``Discrete(n, start)``: softmax over n logits."""

    def __init__(self, space: gym.spaces.Discrete, **kwargs):
        super().__init__(space, **kwargs)
        self.param_size = int(self.space.n)
        self.mask_size = self.param_size
        self.raw_shape = ()
        self.raw_dtype = tf.int32
        self.start = np.int32(self.space.start)

    def _logits(self, params, mask):
        if mask is None:
            return params
        mask = _checked_mask(mask, params, self.space)
        mask = _require_an_action(mask, tf.reduce_any(mask, axis=-1))
        return tf.where(mask, params, tf.constant(params.dtype.min, params.dtype))

    def distribution(self, params, mask=None):
        return tfd.Categorical(logits=self._logits(params, mask), dtype=tf.int32)

    def to_env(self, raw_action):
        return tf.cast(raw_action + self.start, self._env_dtype)


@keras.saving.register_keras_serializable(package="pg_keras")
class MultiCategoricalHead(_LogitsHead):
    """``MultiDiscrete(nvec, start)``: independent softmaxes of different sizes.

    The logits of the k sub-actions are gathered into a [B, k, max(nvec)] array; entries
    past a sub-action's size get a logit of -1e9 (probability 0, no gradient).

    Attributes:
        columns: [k, max(nvec)] int32, the index in ``params`` of each sub-action's
            choices (0 past its size).
        valid: [k, max(nvec)] bool, which entries of ``columns`` are choices.
    """

    def __init__(self, space: gym.spaces.MultiDiscrete, **kwargs):
        super().__init__(space, **kwargs)
        nvec = np.asarray(self.space.nvec).reshape(-1).astype(np.int64)
        self.param_size = int(nvec.sum())
        self.mask_size = self.param_size
        self.raw_shape = (len(nvec),)
        self.raw_dtype = tf.int32
        width = int(nvec.max())
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        self.valid = np.arange(width)[None, :] < nvec[:, None]
        columns = offsets[:, None] + np.arange(width)[None, :]
        self.columns = np.where(self.valid, columns, 0).astype(np.int32)
        self.start = np.asarray(self.space.start).reshape(-1).astype(np.int32)

    def _logits(self, params, mask=None):
        """[B, k, max(nvec)]: padding at -1e9, illegal actions at the lowest float."""
        logits = tf.where(self.valid, tf.gather(params, self.columns, axis=-1),
                          tf.constant(_PADDING_LOGIT, params.dtype))
        if mask is None:
            return logits
        legal = tf.gather(_checked_mask(mask, params, self.space), self.columns, axis=-1)
        legal = legal & self.valid
        legal = _require_an_action(legal, tf.reduce_any(legal, axis=-1))
        return tf.where(legal, logits, tf.constant(logits.dtype.min, logits.dtype))

    def distribution(self, params, mask=None):
        return tfd.Independent(
            tfd.Categorical(logits=self._logits(params, mask), dtype=tf.int32),
            reinterpreted_batch_ndims=1)

    def to_env(self, raw_action):
        action = tf.reshape(raw_action + self.start, (-1,) + self.env_shape)
        return tf.cast(action, self._env_dtype)


@keras.saving.register_keras_serializable(package="pg_keras")
class BernoulliHead(ActionHead):
    """``MultiBinary(n)``: independent Bernoulli per bit."""

    def __init__(self, space: gym.spaces.MultiBinary, **kwargs):
        super().__init__(space, **kwargs)
        self.param_size = int(np.prod(self.space.shape))
        self.raw_shape = (self.param_size,)
        self.raw_dtype = tf.int32

    def distribution(self, params, mask=None):
        self.refuse_mask(mask)
        return tfd.Independent(tfd.Bernoulli(logits=params, dtype=tf.int32),
                               reinterpreted_batch_ndims=1)

    def greedy(self, params, mask=None):
        self.refuse_mask(mask)
        return tf.cast(params > 0, tf.int32)

    def to_env(self, raw_action):
        return tf.cast(tf.reshape(raw_action, (-1,) + self.env_shape), self._env_dtype)

    def parameters(self, params, mask=None):
        self.refuse_mask(mask)
        return {"logits": params}

    def portable_sample(self, params, seed, mask=None):
        self.refuse_mask(mask)
        # P(u < sigmoid(logit)) = sigmoid(logit) for u uniform on (0, 1).
        uniform = portable_random.uniform(tf.shape(params), seed)
        return tf.cast(uniform < tf.sigmoid(params), tf.int32)

    def portable_log_prob(self, params, raw_action, mask=None):
        self.refuse_mask(mask)
        # log sigmoid(l) for a 1, log sigmoid(-l) for a 0: a * l - softplus(l).
        softplus = tf.maximum(params, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(params)))
        return tf.reduce_sum(tf.cast(raw_action, params.dtype) * params - softplus, axis=-1)


@keras.saving.register_keras_serializable(package="pg_keras")
class GaussianHead(ActionHead):
    """``Box``: diagonal Gaussian over the flattened action.

    Args:
        space: A float Box.
        state_dependent_std: The network outputs [mean, log_std] (2 * d units) instead of
            the head learning one log-std vector.
        init_log_std: Initial log-std (state-independent) or its offset (state-dependent).
        bounds: ``"clip"`` or ``"tanh"``; see the module docstring.

    Attributes:
        low, high: The bounds, float32 [d], where the squash maps.
        env_low, env_high: The bounds in the env's dtype [d], where the final clip
            happens: a float64 bound rounded to float32 (0.1 -> 0.10000000149) or the
            squash's own rounding can land one ulp outside the Box.
    """

    def __init__(self, space: gym.spaces.Box, state_dependent_std: bool = False,
                 init_log_std: float = 0.0, bounds: str = "clip", **kwargs):
        super().__init__(space, **kwargs)
        space = self.space
        self.action_size = int(np.prod(space.shape))
        self.state_dependent_std = bool(state_dependent_std)
        self.init_log_std = float(init_log_std)
        if bounds not in ("clip", "tanh"):
            raise InputError(f"bounds must be 'clip' or 'tanh'; received bounds={bounds!r}")
        self.bounds = bounds
        self.param_size = self.action_size * (2 if self.state_dependent_std else 1)
        self.raw_shape = (self.action_size,)
        self.raw_dtype = tf.float32
        self.low = np.asarray(space.low, np.float32).reshape(-1)
        self.high = np.asarray(space.high, np.float32).reshape(-1)
        bounded = bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))
        if bounds == "tanh" and not bounded:
            raise InputError(f"action_bounds='tanh' needs finite Box bounds; received {space}")
        self.env_low = np.asarray(space.low).reshape(-1)
        self.env_high = np.asarray(space.high).reshape(-1)
        if not self.state_dependent_std:
            self.log_std = self.add_weight(
                shape=(self.action_size,), name="log_std",
                initializer=keras.initializers.Constant(self.init_log_std))
        self.built = True

    def _mean_and_log_std(self, params):
        """Mean and log-std [B, d]: from ``params`` [B, 2d] (the log-std offset by
        ``init_log_std`` and clipped), or ``params`` [B, d] and the learned log-std."""
        if self.state_dependent_std:
            mean, offset = tf.split(params, 2, axis=-1)
            return mean, tf.clip_by_value(offset + self.init_log_std, LOG_STD_MIN, LOG_STD_MAX)
        return params, tf.broadcast_to(tf.cast(self.log_std, params.dtype), tf.shape(params))

    def distribution(self, params, mask=None):
        self.refuse_mask(mask)
        mean, log_std = self._mean_and_log_std(params)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(log_std))

    def greedy(self, params, mask=None):
        self.refuse_mask(mask)
        return self._mean_and_log_std(params)[0]

    def to_env(self, raw_action):
        action = tf.cast(raw_action, tf.float32)
        if self.bounds == "tanh":
            low, high = tf.constant(self.low), tf.constant(self.high)
            action = low + (tf.tanh(action) + 1.0) * 0.5 * (high - low)
        action = tf.clip_by_value(tf.cast(action, self._env_dtype),
                                  tf.constant(self.env_low, self._env_dtype),
                                  tf.constant(self.env_high, self._env_dtype))
        return tf.reshape(action, (-1,) + self.env_shape)

    def parameters(self, params, mask=None):
        self.refuse_mask(mask)
        mean, log_std = self._mean_and_log_std(params)
        return {"mean": mean, "std": tf.exp(log_std)}

    def portable_sample(self, params, seed, mask=None):
        self.refuse_mask(mask)
        mean, log_std = self._mean_and_log_std(params)
        return mean + tf.exp(log_std) * portable_random.normal(tf.shape(mean), seed)

    def portable_log_prob(self, params, raw_action, mask=None):
        self.refuse_mask(mask)
        mean, log_std = self._mean_and_log_std(params)
        z = (raw_action - mean) * tf.exp(-log_std)
        return (tf.reduce_sum(-0.5 * tf.square(z) - log_std, axis=-1)
                - 0.5 * self.action_size * float(np.log(2.0 * np.pi)))

    def get_config(self):
        return {**super().get_config(), "state_dependent_std": self.state_dependent_std,
                "init_log_std": self.init_log_std, "bounds": self.bounds}


def _gumbel_max(logits: tf.Tensor, seed) -> tf.Tensor:
    """A categorical sample per row of the last axis: argmax(logits + Gumbel noise)."""
    gumbel = -tf.math.log(-tf.math.log(portable_random.uniform(tf.shape(logits), seed)))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)


def _categorical_log_prob(logits: tf.Tensor, raw_action: tf.Tensor) -> tf.Tensor:
    """log-probability [B] of one choice per row of the last axis, summed over the rest."""
    picked = tf.one_hot(raw_action, int(logits.shape[-1])) * tf.nn.log_softmax(logits)
    return tf.reduce_sum(tf.reshape(picked, [tf.shape(logits)[0], -1]), axis=-1)


def check_mask_shape(mask_shape: Sequence[Optional[int]],
                     params_shape: Sequence[Optional[int]], space: gym.Space) -> None:
    """Refuses an action mask whose shape is not the logits' [B, n] (None matches any
    size: a graph's unknown batch).

    Raises:
        InputError: naming the shape expected, the action space and the shape received.
    """
    mask_shape, expected = list(mask_shape), list(params_shape)
    if len(mask_shape) == 2 and all(m is None or e is None or int(m) == int(e)
                                    for m, e in zip(mask_shape, expected)):
        return
    rows = "" if expected[0] is None else f" (B = {expected[0]})"
    raise InputError(f"action mask must have shape [B, {expected[-1]}]{rows} for the "
                     f"action space {space}; received shape {mask_shape}")


def refuse_rows_without_action(mask: np.ndarray, allowed: np.ndarray) -> None:
    """Refuses the first row (and sub-action) of ``allowed`` ([B] or [B, k] bool) that is
    false, showing that row of ``mask``.

    Raises:
        InputError: naming the row (and the sub-action) and its mask.
    """
    bad = np.argwhere(~np.asarray(allowed, bool))
    if len(bad):
        row = int(bad[0][0])
        part = f", sub-action {int(bad[0][1])}" if len(bad[0]) > 1 else ""
        legal = np.asarray(mask)[row].astype(int).tolist()
        raise InputError(f"{NO_ACTION} in row {row}{part}: every action is masked; "
                         f"received mask row {legal}")


def _checked_mask(mask, params, space) -> tf.Tensor:
    """``mask`` as bool [B, n], n the width of ``params``; a wrong shape is refused."""
    mask = tf.convert_to_tensor(mask)
    if mask.dtype != tf.bool:
        mask = tf.not_equal(mask, tf.zeros([], mask.dtype))  # 0/1 masks, as Taxi's int8
    if mask.shape.rank is not None:
        check_mask_shape(mask.shape.as_list(), params.shape.as_list(), space)
    if not tf.executing_eagerly():
        check = tf.debugging.assert_equal(
            tf.shape(mask), tf.shape(params),
            message=f"action mask must have shape [B, {params.shape[-1]}] as the logits")
        with tf.control_dependencies([check]):
            mask = tf.identity(mask)
    return mask


def _require_an_action(mask: tf.Tensor, allowed: tf.Tensor) -> tf.Tensor:
    """``mask``, once every entry of ``allowed`` ([B] or [B, k] bool) is known true."""
    if tf.executing_eagerly():
        refuse_rows_without_action(mask.numpy(), allowed.numpy())
        return mask
    rows = tf.reduce_all(tf.reshape(allowed, [tf.shape(allowed)[0], -1]), axis=-1)
    # The rows as a bool vector, not their indices: tf.where's dynamic shape would keep
    # the graph from compiling with XLA.
    check = tf.debugging.Assert(
        tf.reduce_all(rows), [f"{NO_ACTION} (every action is masked); rows without one:",
                              tf.logical_not(rows)], summarize=16)
    with tf.control_dependencies([check]):
        return tf.identity(mask)


def make_head(space: gym.Space, state_dependent_std: bool = False, init_log_std: float = 0.0,
              action_bounds: str = "clip") -> ActionHead:
    """The head for a gymnasium action space.

    Raises:
        InputError: for a space the library does not support, naming it and the supported ones.
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
