"""The policy: observations in, actions (and values) out. Encoding, normalization, the
policy and value networks, and the action head, put together; nothing here learns."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras import networks, recurrent, spaces
from pg_keras.config import InputError
from pg_keras.heads import ActionHead, check_mask_shape
from pg_keras.normalization import RunningNormalization


class StepOutputs(NamedTuple):
    """One step of both models: the policy network's output [B, P], V(s) [B] in units of
    the return scale (None where the value model did not run), and the next state."""
    params: tf.Tensor
    values: Optional[tf.Tensor]
    state: dict


class Policy(tf.Module):
    """Observations in, actions out: encoding, normalization, network and head.

    Every method takes a batch of raw observations ``[B, *obs_shape]`` (numpy or tensor);
    for a Dict or Tuple observation space, the dict ``{leaf name: [B, *shape]}`` (see
    pg_keras.spaces), which :meth:`predict` also accepts in the env's own nested form.

    Args:
        observation_space: The env's single observation space.
        head: The action head.
        network: The policy network (see networks.py for the contract).
        normalizer: Observation normalizer, or None.
        value_network: The value network, or None.
        return_scale: A function returning the scalar the value network's output is
            multiplied by (the running return std when returns are normalized), or None.

    Graph functions (fixed input signatures: cheap to call eagerly, and callable from
    inside another ``tf.function``), the same for every policy:

        greedy(observations, mask, state) -> (env actions, next state)
        sample(observations, seed [2] int32, mask, state)
            -> (raw actions, env actions, next state), drawn from pi(.|s)
        value(observations, state) -> V(s) [B] in the return's units

    ``mask`` [B, W] bool, the legal actions, is always given (:meth:`all_legal`; W is 0
    for a head without masks), and so is ``state`` (:meth:`initial_state`): a recurrent
    policy's (see pg_keras.recurrent) carries the models' state from step to step, a
    feed-forward one's holds only ``reset``. The update replays a segment with
    :meth:`replay`. Without a value network ``value`` raises InputError (:attr:`has_value`).
    """

    def __init__(self, observation_space: gym.Space, head: ActionHead, network: keras.Model,
                 normalizer: Optional[RunningNormalization] = None,
                 value_network: Optional[keras.Model] = None, return_scale=None):
        super().__init__(name="policy")
        self.observation_space = observation_space
        self.head = head
        self.network = network
        self.normalizer = normalizer
        self.value_network = value_network
        self._return_scale = return_scale
        self.state_sizes = {"policy": recurrent.state_sizes(network),
                            "value": recurrent.state_sizes(value_network)}
        self.recurrent = bool(self.state_sizes["policy"] or self.state_sizes["value"])
        self.mask_width = head.mask_size or 0
        obs, state = spaces.tensor_spec(observation_space, (None,)), self.state_spec()
        mask, seed = tf.TensorSpec([None, self.mask_width], tf.bool), tf.TensorSpec([2], tf.int32)
        self.greedy = tf.function(self._greedy, input_signature=[obs, mask, state],
                                  autograph=False)
        self.sample = tf.function(self._sample, input_signature=[obs, seed, mask, state],
                                  autograph=False)
        self.value = tf.function(self._value, input_signature=[obs, state], autograph=False)

    @property
    def has_value(self) -> bool:
        """Whether the policy has a value network (``value`` works)."""
        return self.value_network is not None

    def state_spec(self, batch_shape=(None,)) -> dict:
        """``{"policy": (...), "value": (...), "reset": [*batch_shape]}`` of TensorSpecs: each
        model's state ``[*batch_shape, n]`` (none if feed-forward); ``reset`` 1.0 zeroes it."""
        batch_shape = tuple(batch_shape)
        return {**{role: tuple(tf.TensorSpec(batch_shape + (n,), tf.float32) for n in sizes)
                   for role, sizes in self.state_sizes.items()},
                "reset": tf.TensorSpec(batch_shape, tf.float32)}

    def initial_state(self, batch_size: int) -> dict:
        """The state of ``batch_size`` environments whose episodes start now: zeros, reset 1."""
        return {**{role: tuple(np.zeros((batch_size, n), np.float32) for n in sizes)
                   for role, sizes in self.state_sizes.items()},
                "reset": np.ones(batch_size, np.float32)}

    def all_legal(self, batch_size: int) -> np.ndarray:
        """The mask that allows every action: [batch_size, W] true."""
        return np.ones((batch_size, self.mask_width), bool)

    def features(self, observations) -> tf.Tensor:
        """Encoded and (if on) normalized observations, [B, *observation_shape]."""
        x = spaces.encode(self.observation_space, observations)
        return x if self.normalizer is None else self.normalizer(x)

    def params(self, observations) -> tf.Tensor:
        """The policy network's output, [B, head.param_size] (feed-forward networks)."""
        if self.state_sizes["policy"]:
            raise InputError("a recurrent policy acts with a state (predict, greedy or "
                             "sample); received a call of params or distribution")
        return tf.cast(self.network(self.features(observations)), tf.float32)

    def distribution(self, observations, mask=None):
        """pi(.|s) (``tfp.distributions``, batch shape [B]), over the actions ``mask`` allows."""
        return self.head.distribution(self.params(observations), mask)

    def normalized_value(self, observations) -> tf.Tensor:
        """The value network's output squeezed to [B]: V(s) in units of
        :meth:`return_scale` (the running return std when returns are normalized)."""
        values = tf.cast(self.value_network(self.features(observations)), tf.float32)
        return tf.reshape(values, [-1])

    def return_scale(self) -> tf.Tensor:
        """The scalar the value network's output is multiplied by to be in return units."""
        return tf.ones([]) if self._return_scale is None else self._return_scale()

    def step(self, observations, state: dict, value: bool) -> StepOutputs:
        """One step of each model from ``state`` (the value model only if ``value``); the
        next state's ``reset`` is 0: set it to 1 for the envs whose episode ended."""
        features = self.features(observations)
        params, policy_state = recurrent.one_step(
            self.network, self.state_sizes["policy"], features, state["policy"], state["reset"])
        values, value_state = None, tuple(state["value"])
        if value:
            values, value_state = self._value_model(features, state)
        return StepOutputs(tf.cast(params, tf.float32), values,
                           {"policy": policy_state, "value": value_state,
                            "reset": tf.zeros_like(state["reset"], tf.float32)})

    def _value_model(self, features, state):
        """V(s) [B] in units of :meth:`return_scale`, and the value model's next state."""
        values, following = recurrent.one_step(self.value_network, self.state_sizes["value"],
                                               features, state["value"], state["reset"])
        return tf.reshape(tf.cast(values, tf.float32), [-1]), following

    def _greedy(self, observations, mask, state):
        params, _, following = self.step(observations, state,
                                         value=bool(self.state_sizes["value"]))
        mask = mask if self.mask_width else None  # a head without masks takes none
        return self.head.to_env(self.head.greedy(params, mask)), following

    def _sample(self, observations, seed, mask, state):
        # The value model steps too when it carries a state of its own.
        params, _, following = self.step(observations, state,
                                         value=bool(self.state_sizes["value"]))
        mask = mask if self.mask_width else None
        raw = self.head.distribution(params, mask).sample(seed=seed)
        return raw, self.head.to_env(raw), following

    def _value(self, observations, state):
        if not self.has_value:
            raise InputError("this policy has no value network (train with a baseline: "
                             "Config(baseline=True)); received a call of policy.value")
        return self._value_model(self.features(observations), state)[0] * self.return_scale()

    def replay(self, observations, initial_state: dict, done):
        """Both models over a time-major segment of observations [T, B, ...] from
        ``initial_state`` (the state entering row 0, as :class:`~pg_keras.batch.Batch`
        holds it: ``[1, B, n]`` each, ``reset`` [1, B]); ``done`` [T, B] bool resets the
        state after a row. Returns (the policy network's output [T * B, P], V(s) [T * B]
        in units of :meth:`return_scale` or None), rows time-major."""
        steps, envs = done.shape
        features = self.features(tf.nest.map_structure(recurrent.merge_time, observations))
        reset = tf.transpose(tf.concat([initial_state["reset"],
                                        tf.cast(done[:-1], tf.float32)], axis=0))
        params = recurrent.replay(self.network, features, initial_state["policy"], reset,
                                  steps, envs)
        values = None
        if self.has_value:
            values = tf.reshape(recurrent.replay(self.value_network, features,
                                                 initial_state["value"], reset, steps, envs),
                                [-1])
        return params, values

    def keras_model(self) -> keras.Model:
        """One functional ``keras.Model`` from raw observations to the head's parameters,
        sharing this policy's weights: see :func:`pg_keras.networks.parameters_model`."""
        return networks.parameters_model(self)

    def predict(self, observations, state: Optional[dict] = None, deterministic: bool = True,
                seed: Optional[int] = None, action_mask=None
                ) -> Tuple[np.ndarray, Optional[dict]]:
        """Env-ready actions for a batch of observations, as numpy: ``(actions, state)``.

        The same call serves every policy. A feed-forward policy takes and gives
        ``state=None``; a recurrent one gives the state to pass back with the next
        observations (None: every episode starts now; set ``state["reset"]`` to 1 for the
        envs whose episode starts at the next call).

        Args:
            observations: [B, *obs_shape] raw observations, or one observation
                [*obs_shape] (then one action comes back, without the batch axis; a
                recurrent policy's state keeps its batch of 1).
            state: A recurrent policy's state (see :meth:`state_spec`), or None.
            deterministic: The most likely action; otherwise a sample from pi(.|s).
            seed: Seeds the sample: the same seed draws the same actions; None draws
                fresh ones at every call. Ignored when ``deterministic``.
            action_mask: [B, W] (or [W] with one observation) the legal actions, for a
                head that takes masks; default: a Dict observation's ``action_mask`` key.

        Returns (actions [B, *action_shape], the next state or None). Raises InputError
        for observations of another shape or holding NaN or inf, or a seed out of range.
        """
        if action_mask is None and isinstance(observations, dict):
            action_mask = observations.get(spaces.ACTION_MASK_KEY)
        seed_pair = _seed_pair(seed, deterministic)
        batch, single = spaces.checked_batch(self.observation_space, observations)
        rows = int(tf.nest.flatten(batch)[0].shape[0])
        mask = _checked_mask(self.head, action_mask, single, rows)
        actions, state = _act(self, spaces.nest_map(tf.convert_to_tensor, batch), seed_pair,
                              self.initial_state(rows) if state is None else state,
                              self.all_legal(rows) if mask is None else mask)
        return (actions[0] if single else actions), state


# The seeds of unseeded samples: the OS seeds it.
_UNSEEDED = np.random.default_rng()


def _seed_pair(seed: Optional[int], deterministic: bool) -> Optional[np.ndarray]:
    """:meth:`Policy.predict`'s stateless seed [2] int32: None for the greedy action."""
    if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**31):
        raise InputError(f"seed must be an integer in [0, 2**31) or None; received "
                         f"seed={seed!r}")
    if deterministic:
        return None
    if seed is None:
        return _UNSEEDED.integers(0, 2**31 - 1, size=2).astype(np.int32)
    return np.array([seed, 0], np.int32)


def _act(policy: Policy, observations, seed: Optional[np.ndarray], state: dict, mask):
    """:meth:`Policy.predict` on a checked batch of tensors, as numpy: (actions, the next
    state, None for a feed-forward policy); greedy when ``seed`` is None."""
    if seed is None:
        actions, following = policy.greedy(observations, mask, state)
    else:
        _, actions, following = policy.sample(observations, tf.constant(seed), mask, state)
    if not policy.recurrent:
        return actions.numpy(), None
    return actions.numpy(), tf.nest.map_structure(lambda x: x.numpy(), following)


def _checked_mask(head: ActionHead, action_mask, single: bool,
                  rows: int) -> Optional[tf.Tensor]:
    """The [B, W] bool mask of :meth:`Policy.predict`, or None (no mask, or a head that
    takes none)."""
    width = head.mask_size or 0  # Policy.mask_width
    if action_mask is None or not width:
        return None
    mask = np.asarray(action_mask).astype(bool)
    if single:
        mask = mask[None]
    check_mask_shape(mask.shape, (rows, width), head.space)
    return tf.constant(mask)
