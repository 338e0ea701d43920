"""The optional fast actor: the sampling policy and the value model run in NumPy.

For policies built of Dense (and Flatten) layers with built-in activations. A TensorFlow
call costs more than stepping a small vector env, however small the model; between env
steps the gymnasium collectors sample with this twin instead, reading the weights once
per update. The update itself still runs in TensorFlow on the stored raw actions, so the
algorithm does not change, only who draws the samples. The other half of the twin is the
action head's sampling, derived here from the head's attributes (:data:`_SAMPLERS`, keyed
by head type): each draws from the law of ``head.distribution(params, mask)`` and applies
``head.to_env``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from pg_keras import heads, spaces
from pg_keras.heads import LOG_STD_MAX, LOG_STD_MIN
from pg_keras.policy import Policy

# sampler(params, rng, mask=None) -> (raw action, env action), for the head's current
# weights; see _SAMPLERS.
Sampler = Callable[..., Tuple[np.ndarray, np.ndarray]]

_NUMPY_ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
}


def _numpy_activation(layer) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The NumPy twin of a Dense layer's activation, or None for one of the user's own."""
    name = layer.get_config()["activation"]  # a dict (its serialization) for a function
    if not isinstance(name, str) or name not in _NUMPY_ACTIVATIONS:
        return None
    # A function of the user's own that happens to bear a built-in's name is not that one.
    if layer.activation is not keras.activations.get(name):
        return None
    return _NUMPY_ACTIVATIONS[name]


class _NumpyNetwork:
    """A Keras ``Sequential`` of Dense and Flatten layers, run in NumPy."""

    def __init__(self, network: keras.Model):
        self.network = network
        self._plan = []  # (kernel variable, bias variable or None, activation) or None
        for layer in network.layers:
            if isinstance(layer, keras.layers.Flatten):
                self._plan.append(None)
            else:
                self._plan.append((layer.kernel, layer.bias if layer.use_bias else None,
                                   _numpy_activation(layer)))

    @staticmethod
    def supports(network) -> bool:
        """Whether ``network`` is a Sequential of Dense layers with built-in activations."""
        if not isinstance(network, keras.Sequential):
            return False
        for layer in network.layers:
            if isinstance(layer, keras.layers.Flatten):
                continue
            if type(layer) is not keras.layers.Dense:
                return False
            if _numpy_activation(layer) is None:
                return False
        return True

    def variables(self) -> list:
        """The variables :meth:`refresh` reads, in order."""
        return [v for step in self._plan if step is not None for v in step[:2] if v is not None]

    def refresh(self, values) -> None:
        """Takes the current values of :meth:`variables` (read together, in one call)."""
        values = iter(values)
        self._weights = [None if step is None else
                         (next(values), 0.0 if step[1] is None else next(values), step[2])
                         for step in self._plan]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for weights in self._weights:
            if weights is None:
                x = x.reshape(len(x), -1)
            else:
                kernel, bias, activation = weights
                x = activation(x @ kernel + bias)
        return x


def _gumbel_argmax(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A categorical sample per row of the last axis: argmax(logits + Gumbel noise)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1).astype(np.int32)


def _legal(head: heads.ActionHead, mask, params: np.ndarray) -> np.ndarray:
    """``mask`` as bool of the shape of ``params``, refused as the head refuses it."""
    mask = np.asarray(mask)
    heads.check_mask_shape(mask.shape, params.shape, head.space)
    return mask.astype(bool)


def _categorical_sampler(head: heads.CategoricalHead) -> Sampler:
    start, dtype = head.start, head.space.dtype

    def sample(params, rng, mask=None):
        if mask is not None:
            mask = _legal(head, mask, params)
            heads.refuse_rows_without_action(mask, mask.any(axis=-1))
            params = np.where(mask, params, np.finfo(params.dtype).min)
        raw = _gumbel_argmax(params, rng)
        return raw, (raw + start).astype(dtype)
    return sample


def _multi_categorical_sampler(head: heads.MultiCategoricalHead) -> Sampler:
    columns, valid, start = head.columns, head.valid, head.start
    shape, dtype = head.env_shape, head.space.dtype

    def sample(params, rng, mask=None):
        legal = valid
        if mask is not None:
            legal = _legal(head, mask, params)[:, columns] & valid
            heads.refuse_rows_without_action(legal, legal.any(axis=-1))
        raw = _gumbel_argmax(np.where(legal, params[:, columns], -np.inf), rng)
        return raw, (raw + start).reshape((-1,) + shape).astype(dtype)
    return sample


def _bernoulli_sampler(head: heads.BernoulliHead) -> Sampler:
    shape, dtype = head.env_shape, head.space.dtype

    def sample(params, rng, mask=None):
        head.refuse_mask(mask)
        # P(logit + logistic noise > 0) = sigmoid(logit).
        raw = (params + rng.logistic(size=params.shape) > 0).astype(np.int32)
        return raw, raw.reshape((-1,) + shape).astype(dtype)
    return sample


def _gaussian_sampler(head: heads.GaussianHead) -> Sampler:
    low, high, f_low, f_high = head.env_low, head.env_high, head.low, head.high
    shape, dtype, tanh = head.env_shape, head.space.dtype, head.bounds == "tanh"
    fixed_std = None if head.state_dependent_std else np.exp(head.log_std.numpy())
    offset = head.init_log_std

    def sample(params, rng, mask=None):
        head.refuse_mask(mask)
        if fixed_std is None:
            mean, log_std = np.split(params, 2, axis=-1)
            std = np.exp(np.clip(log_std + offset, LOG_STD_MIN, LOG_STD_MAX))
        else:
            mean, std = params, fixed_std
        raw = (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)
        action = f_low + (np.tanh(raw) + 1.0) * 0.5 * (f_high - f_low) if tanh else raw
        action = np.clip(action.astype(dtype), low, high)
        return raw, action.reshape((-1,) + shape)
    return sample


# Head type -> the NumPy sampler of such a head, built from its current weights.
_SAMPLERS = {heads.CategoricalHead: _categorical_sampler,
             heads.MultiCategoricalHead: _multi_categorical_sampler,
             heads.BernoulliHead: _bernoulli_sampler,
             heads.GaussianHead: _gaussian_sampler}


def head_sampler(head: heads.ActionHead) -> Sampler:
    """The NumPy sampler of ``head`` with its current weights: ``sampler(params, rng,
    mask=None)`` draws from the law of ``head.distribution(params, mask)`` and returns
    ``(raw action, env action)``, refusing a mask as the head does."""
    return _SAMPLERS[type(head)](head)


class NumpyPolicy:
    """The sampling policy (and the value model) in NumPy, for Dense-layer networks.

    It reads the weights once per update (:meth:`refresh`) and samples with the sampler
    :data:`_SAMPLERS` holds for the head's type.

    Args:
        policy: The policy to mirror; see :meth:`supports`.
        seed: Seeds the NumPy sampling stream.
    """

    def __init__(self, policy: Policy, seed: int):
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self._encode = spaces.numpy_encoder(policy.observation_space)
        self._network = _NumpyNetwork(policy.network)
        self._value_network = None
        if policy.value_network is not None and _NumpyNetwork.supports(policy.value_network):
            self._value_network = _NumpyNetwork(policy.value_network)
        # One call reads every variable: read one by one from Python they would cost more
        # than the network itself. The concrete function skips tf.function's dispatch.
        networks = [self._network] + ([self._value_network] if self.has_value else [])
        variables = [v for n in networks for v in n.variables()]
        normalizer = policy.normalizer
        if normalizer is not None:
            variables += [normalizer.mean, normalizer.variance]
        self._read = tf.function(lambda: ([tf.convert_to_tensor(v) for v in variables],
                                          policy.return_scale())).get_concrete_function()
        self.refresh()

    @staticmethod
    def supports(policy: Policy) -> bool:
        """Whether every layer of the policy network has a NumPy twin here, the head a
        sampler, and the observations an encoding in NumPy (``spaces.numpy_encoder``)."""
        return (type(policy.head) in _SAMPLERS and _NumpyNetwork.supports(policy.network)
                and spaces.numpy_encoder(policy.observation_space) is not None)

    @property
    def has_value(self) -> bool:
        """Whether the value network runs here too (else it runs in TensorFlow)."""
        return self._value_network is not None

    def refresh(self) -> None:
        """Reads the current weights, normalizer statistics and head state."""
        tensors, scale = self._read()
        values = [t.numpy() for t in tensors]
        count = len(self._network.variables())
        self._network.refresh(values[:count])
        if self._value_network is not None:
            value_count = len(self._value_network.variables())
            self._value_network.refresh(values[count:count + value_count])
            count += value_count
            self._value_scale = float(scale.numpy())
        normalizer = self.policy.normalizer
        self._normalizer = None
        if normalizer is not None:
            mean, variance = values[count:count + 2]
            self._normalizer = (mean, 1.0 / np.sqrt(variance + normalizer.epsilon),
                                normalizer.clip)
        self._sample = head_sampler(self.policy.head)

    def __call__(self, observations: np.ndarray,
                 mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(raw actions, env actions) sampled for a batch of observations, among the
        actions ``mask`` allows when given (see heads.py)."""
        if mask is None:
            return self._sample(self.params(observations), self.rng)
        return self._sample(self.params(observations), self.rng, mask)

    def _features(self, observations) -> np.ndarray:
        x = self._encode(observations)
        if self._normalizer is not None:
            mean, inv_std, clip = self._normalizer
            x = (x - mean) * inv_std
            if clip > 0:
                x = np.clip(x, -clip, clip)
        return x

    def params(self, observations: np.ndarray) -> np.ndarray:
        """The policy network's output, as ``Policy.params`` computes it in TensorFlow."""
        return self._network(self._features(observations))

    def values(self, observations: np.ndarray) -> np.ndarray:
        """V(s), as ``Policy.value`` computes it (needs :attr:`has_value`)."""
        return self._value_network(self._features(observations)).reshape(-1) * self._value_scale
