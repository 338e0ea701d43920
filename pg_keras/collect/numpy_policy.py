"""The optional fast actor: the sampling policy and the value model run in NumPy.

For policies built of Dense (and Flatten) layers with built-in activations. A TensorFlow
call costs more than stepping a small vector env, however small the model; between env
steps the gymnasium collectors sample with this twin instead, reading the weights once
per update. The update itself still runs in TensorFlow on the stored raw actions, so the
algorithm does not change, only who draws the samples. The action heads' NumPy samplers
(``ActionHead.numpy_sampler``) are the other half of the twin.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras.policy import Policy

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


class NumpyPolicy:
    """The sampling policy (and the value model) in NumPy, for Dense-layer networks.

    It reads the weights once per update (:meth:`refresh`) and samples with the head's
    :meth:`~pg_keras.heads.ActionHead.numpy_sampler`.

    Args:
        policy: The policy to mirror; see :meth:`supports`.
        seed: Seeds the NumPy sampling stream.
    """

    def __init__(self, policy: Policy, seed: int):
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        space = policy.observation_space
        self._one_hot = (np.eye(space.n, dtype=np.float32), space.start) if isinstance(
            space, gym.spaces.Discrete) else None
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
        """Whether every layer of the policy network has a NumPy twin here, and the
        observations are a Box's or a Discrete space's, the two it encodes."""
        encodes = isinstance(policy.observation_space, (gym.spaces.Box, gym.spaces.Discrete))
        return encodes and _NumpyNetwork.supports(policy.network)

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
        self._sample = self.policy.head.numpy_sampler()

    def __call__(self, observations: np.ndarray,
                 mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(raw actions, env actions) sampled for a batch of observations, among the
        actions ``mask`` allows when given (see heads.py)."""
        if mask is None:
            return self._sample(self.params(observations), self.rng)
        return self._sample(self.params(observations), self.rng, mask)

    def _features(self, observations) -> np.ndarray:
        if self._one_hot is not None:
            eye, start = self._one_hot
            x = eye[np.asarray(observations) - start]
        else:
            x = np.asarray(observations, np.float32)
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
