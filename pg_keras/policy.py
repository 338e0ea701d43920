"""The policy: observations in, actions (and values) out. Encoding, normalization, the
policy and value networks, and the action head, put together; nothing here learns."""

from __future__ import annotations

from typing import Optional, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras import networks, recurrent, spaces
from pg_keras.config import InputError
from pg_keras.heads import ActionHead, check_mask_shape
from pg_keras.layers import EncodeObservations
from pg_keras.normalization import RunningNormalization
from pg_keras.recurrent_policy import RecurrentSteps


class Policy(RecurrentSteps, tf.Module):
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

    Attributes:
        greedy: ``tf.function`` observations -> the most likely env action, [B, ...].
        sample: ``tf.function`` (observations, seed [2] int32) -> (raw action, env action)
            drawn from pi(.|s) with a stateless seed.
        value: ``tf.function`` observations -> V(s) [B] in the return's units (only with a
            value network).
    These are graph functions with a fixed input signature: cheap to call eagerly, and
    callable from inside another ``tf.function``.

    A recurrent policy (its policy or value network declares ``state_sizes``, see
    pg_keras.recurrent) acts with ``greedy_step``, ``sample_step`` and ``value_step``
    instead, which take and give a state (:meth:`initial_state`); the update replays a
    segment with :meth:`replay` (see pg_keras.recurrent_policy).
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
        obs_spec = spaces.tensor_spec(observation_space, (None,))
        self.greedy = tf.function(self._greedy, input_signature=[obs_spec], autograph=False)
        self.sample = tf.function(self._sample, input_signature=[
            obs_spec, tf.TensorSpec([2], tf.int32)], autograph=False)
        if value_network is not None:
            self.value = tf.function(self._value, input_signature=[obs_spec], autograph=False)
        self.state_sizes = {"policy": recurrent.state_sizes(network),
                            "value": recurrent.state_sizes(value_network)}
        self.recurrent = bool(self.state_sizes["policy"] or self.state_sizes["value"])
        if self.recurrent:
            self._trace_recurrent(obs_spec)
        if head.mask_size:
            # The same with an action mask [B, mask_size] (see heads.py).
            mask_spec = tf.TensorSpec([None, head.mask_size], tf.bool)
            self.greedy_masked = tf.function(self._greedy, input_signature=[
                obs_spec, mask_spec], autograph=False)
            self.sample_masked = tf.function(self._sample, input_signature=[
                obs_spec, tf.TensorSpec([2], tf.int32), mask_spec], autograph=False)

    def features(self, observations) -> tf.Tensor:
        """Encoded and (if on) normalized observations, [B, *observation_shape]."""
        x = spaces.encode(self.observation_space, observations)
        return x if self.normalizer is None else self.normalizer(x)

    def params(self, observations) -> tf.Tensor:
        """The policy network's output, [B, head.param_size] (feed-forward networks)."""
        if self.state_sizes["policy"]:
            raise InputError("a recurrent policy acts with a state: use predict(observations, "
                             "state=...), greedy_step or sample_step; received a call "
                             "without one")
        return tf.cast(self.network(self.features(observations)), tf.float32)

    def distribution(self, observations, mask=None):
        """pi(.|s) as a ``tfp.distributions`` distribution with batch shape [B]; over the
        actions ``mask`` allows, when given."""
        return self.head.distribution(self.params(observations), mask)

    def normalized_value(self, observations) -> tf.Tensor:
        """The value network's output squeezed to [B]: V(s) in units of
        :meth:`return_scale` (the running return std when returns are normalized)."""
        values = tf.cast(self.value_network(self.features(observations)), tf.float32)
        return tf.reshape(values, [-1])

    def return_scale(self) -> tf.Tensor:
        """The scalar the value network's output is multiplied by to be in return units."""
        return tf.ones([]) if self._return_scale is None else self._return_scale()

    def _greedy(self, observations, mask=None):
        return self.head.to_env(self.head.greedy(self.params(observations), mask))

    def _sample(self, observations, seed, mask=None):
        raw = self.distribution(observations, mask).sample(seed=seed)
        return raw, self.head.to_env(raw)

    def _value(self, observations):
        return self.normalized_value(observations) * self.return_scale()

    def keras_model(self) -> keras.Model:
        """One functional ``keras.Model`` from raw observations to the head's parameters.

        It chains the observation encoding, the normalizer (statistics included), the
        policy network and the action head's parameters, sharing their weights with this
        policy. It takes ``[B, *obs_shape]`` observations of ``spaces.serving_dtype`` (one
        input per leaf, by leaf name, for a nested space) and
        returns what ``head.parameters`` does: ``{"logits"}`` or ``{"mean", "std"}``. It
        round-trips through ``model.save("policy.keras")`` and
        ``keras.models.load_model`` (with pg_keras imported: it registers the layers).
        """
        if self.state_sizes["policy"]:
            raise InputError("keras_model() is for feed-forward policies; a recurrent "
                             "policy's network is policy.network (see pg_keras.recurrent)")
        inputs = spaces.keras_inputs(self.observation_space)
        features = EncodeObservations(self.observation_space, name="encode")(inputs)
        if self.normalizer is not None:
            features = self.normalizer(features)
        outputs = self.head(self.network(features))
        return networks.functional_model(inputs, outputs, name="policy_parameters")

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

        Returns:
            (actions [B, *action_shape], the next state or None).

        Raises:
            InputError: for observations of another shape, or holding NaN or inf, or a
                seed out of range.
        """
        if seed is not None and not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**31):
            raise InputError(f"seed must be an integer in [0, 2**31) or None; received "
                             f"seed={seed!r}")
        if action_mask is None and isinstance(observations, dict):
            action_mask = observations.get(spaces.ACTION_MASK_KEY)
        batch, single = spaces.checked_batch(self.observation_space, observations)
        mask = _checked_mask(self.head, action_mask, single,
                             int(tf.nest.flatten(batch)[0].shape[0]))
        if deterministic:
            seed_pair = None
        elif seed is None:
            seed_pair = self._fresh_seeds().integers(0, 2**31 - 1, size=2).astype(np.int32)
        else:
            seed_pair = np.array([seed, 0], np.int32)
        actions, state = self._predict(spaces.nest_map(tf.convert_to_tensor, batch),
                                       seed_pair, state, mask)
        return (actions[0] if single else actions), state

    def _fresh_seeds(self) -> np.random.Generator:
        """The stream of unseeded samples' seeds, seeded by the OS on first use."""
        if not hasattr(self, "_unseeded"):
            self._unseeded = np.random.default_rng()
        return self._unseeded

    def _predict(self, observations, seed: Optional[np.ndarray], state, mask):
        """:meth:`predict` on a checked batch of tensors; greedy when ``seed`` is None;
        among the actions ``mask`` allows when it is not None."""
        masked, suffix = (() if mask is None else (mask,)), ("" if mask is None else "_masked")
        if not self.recurrent:
            if seed is None:
                return getattr(self, "greedy" + suffix)(observations, *masked).numpy(), None
            sample = getattr(self, "sample" + suffix)
            return sample(observations, tf.constant(seed), *masked)[1].numpy(), None
        if state is None:
            state = self.initial_state(int(tf.nest.flatten(observations)[0].shape[0]))
        if seed is None:
            actions, following = getattr(self, "greedy_step" + suffix)(observations, state,
                                                                       *masked)
        else:
            _, actions, following = getattr(self, "sample_step" + suffix)(
                observations, tf.constant(seed), state, *masked)
        following = tf.nest.map_structure(lambda x: x.numpy(), following)
        reset = np.zeros_like(np.asarray(state["reset"], np.float32))
        return actions.numpy(), {**following, "reset": reset}


def _checked_mask(head: ActionHead, action_mask, single: bool,
                  rows: int) -> Optional[tf.Tensor]:
    """The [B, W] bool mask of :meth:`Policy.predict`, or None (no mask, or a head that
    takes none)."""
    width = head.mask_size or 0
    if action_mask is None or not width:
        return None
    mask = np.asarray(action_mask).astype(bool)
    if single:
        mask = mask[None]
    check_mask_shape(mask.shape, (rows, width), head.space)
    return tf.constant(mask)
