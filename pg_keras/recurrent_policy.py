"""How a policy with recurrent models acts one step at a time and replays a segment.

A policy whose policy or value network declares ``state_sizes`` (the contract is in
pg_keras.recurrent) carries a state from one env step to the next: collection steps it
with :meth:`RecurrentSteps.sample_step` (or ``greedy_step``), the update replays the
whole segment from the state collection started it with (:meth:`RecurrentSteps.replay`),
and the two compute the same thing. :class:`pg_keras.policy.Policy` mixes this in; a
feed-forward policy never calls it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class RecurrentSteps:
    """The recurrent half of :class:`pg_keras.policy.Policy`.

    It reads the policy's ``network``, ``value_network``, ``head``, ``state_sizes``,
    ``features`` and ``return_scale``.
    """

    def _trace_recurrent(self, obs_spec) -> None:
        """The recurrent policy's graph functions (see Policy's docstring)."""
        state, seed = self.state_spec(), tf.TensorSpec([2], tf.int32)
        self.greedy_step = tf.function(self._greedy_step, input_signature=[obs_spec, state],
                                       autograph=False)
        self.sample_step = tf.function(self._sample_step, input_signature=[
            obs_spec, seed, state], autograph=False)
        if self.value_network is not None:
            self.value_step = tf.function(self._value_step, input_signature=[obs_spec, state],
                                          autograph=False)
        if self.head.mask_size:
            mask = tf.TensorSpec([None, self.head.mask_size], tf.bool)
            self.greedy_step_masked = tf.function(self._greedy_step, input_signature=[
                obs_spec, state, mask], autograph=False)
            self.sample_step_masked = tf.function(self._sample_step, input_signature=[
                obs_spec, seed, state, mask], autograph=False)

    def state_spec(self, batch_shape=(None,)) -> dict:
        """The recurrent state's ``tf.TensorSpec``: ``{"policy": (...), "value": (...),
        "reset": [*batch_shape]}``, each model's state tensors ``[*batch_shape, n]`` (an
        empty tuple for a feed-forward model); ``reset`` is 1.0 where an episode starts at
        the next step (the models zero their state there first)."""
        batch_shape = tuple(batch_shape)
        return {**{role: tuple(tf.TensorSpec(batch_shape + (n,), tf.float32) for n in sizes)
                   for role, sizes in self.state_sizes.items()},
                "reset": tf.TensorSpec(batch_shape, tf.float32)}

    def initial_state(self, batch_size: int) -> dict:
        """The state of ``batch_size`` environments whose episodes start now: zeros, reset 1."""
        return {**{role: tuple(np.zeros((batch_size, n), np.float32) for n in sizes)
                   for role, sizes in self.state_sizes.items()},
                "reset": np.ones(batch_size, np.float32)}

    def _step_outputs(self, observations, state, value: bool):
        """One step of each model: (params [B, P], V(s) [B] normalized or None, the next
        ``{"policy", "value"}`` states); the value model runs only if ``value``."""
        features = self.features(observations)
        params, policy_state = _one_step(self.network, self.state_sizes["policy"], features,
                                         state["policy"], state["reset"])
        values, value_state = None, tuple(state["value"])
        if value:
            values, value_state = _one_step(self.value_network, self.state_sizes["value"],
                                            features, state["value"], state["reset"])
            values = tf.reshape(tf.cast(values, tf.float32), [-1])
        return tf.cast(params, tf.float32), values, {"policy": policy_state, "value": value_state}

    def _greedy_step(self, observations, state, mask=None):
        params, _, next_state = self._step_outputs(observations, state, value=False)
        return self.head.to_env(self.head.greedy(params, mask)), next_state

    def _sample_step(self, observations, seed, state, mask=None):
        # The value model steps too when it carries a state of its own.
        params, _, next_state = self._step_outputs(
            observations, state, value=bool(self.state_sizes["value"]))
        raw = self.head.distribution(params, mask).sample(seed=seed)
        return raw, self.head.to_env(raw), next_state

    def _value_step(self, observations, state):
        _, values, _ = self._step_outputs(observations, state, value=True)
        return values * self.return_scale()

    def replay(self, observations, initial_state: dict, done):
        """Both models over a time-major segment, from the state collection started it with.

        Args:
            observations: [T, B, *obs_shape] (or the dict of them).
            initial_state: The state entering row 0, each tensor with a leading axis of 1
                (``[1, B, n]``, ``reset`` [1, B]), as :class:`~pg_keras.batch.Batch` holds it.
            done: [T, B] bool, an episode ended at this step (the state resets after it).

        Returns:
            (the policy network's output [T * B, P], V(s) [T * B] in units of
            :meth:`return_scale`, or None without a value network), rows time-major.
        """
        steps, envs = done.shape
        features = self.features(tf.nest.map_structure(_merge_time, observations))
        reset = tf.transpose(tf.concat([initial_state["reset"],
                                        tf.cast(done[:-1], tf.float32)], axis=0))
        params = _replay(self.network, features, initial_state["policy"], reset, steps, envs)
        values = None
        if self.value_network is not None:
            values = tf.reshape(_replay(self.value_network, features, initial_state["value"],
                                        reset, steps, envs), [-1])
        return params, values


def _one_step(model, sizes, features, state, reset):
    """``model`` on one step of B envs: (output [B, ...], next state; () if feed-forward)."""
    if not sizes:
        return model(features), ()
    sequence = tf.nest.map_structure(lambda x: x[:, None], features)
    outputs, final = model((sequence, tuple(state), reset[:, None]))
    return outputs[:, 0], tuple(final)


def _replay(model, features, state, reset, steps: int, envs: int) -> tf.Tensor:
    """``model`` on [T * B] time-major feature rows -> its output, [T * B, ...] float32;
    a recurrent model runs over each env's T steps from ``state`` ([1, B, n] each)."""
    if not state:
        return tf.cast(model(features), tf.float32)
    sequence = tf.nest.map_structure(
        lambda x: _swap(tf.reshape(x, [steps, envs] + x.shape[1:])), features)
    outputs, _ = model((sequence, tuple(s[0] for s in state), reset))
    outputs = _swap(tf.cast(outputs, tf.float32))
    return tf.reshape(outputs, [steps * envs] + outputs.shape[2:])


def _merge_time(x):
    """[T, B, ...] -> [T * B, ...]."""
    return tf.reshape(x, [x.shape[0] * x.shape[1]] + x.shape[2:])


def _swap(x):
    """Swaps the two leading axes ([T, B, ...] <-> [B, T, ...])."""
    return tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))
