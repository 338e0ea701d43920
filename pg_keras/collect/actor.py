"""The policy side of the gymnasium collectors: who draws the actions and the values.

:class:`Actor` owns what acting needs between env steps:

* the NumPy twin of the policy (:class:`~pg_keras.collect.numpy_policy.NumpyPolicy`),
  when the policy is built of layers the twin supports and is not recurrent. It exists
  for speed: one TensorFlow call per env step costs more than many steps of a small env
  such as CartPole, so the twin samples in NumPy and reads the weights once per batch;
  otherwise compiled TensorFlow steps act (:class:`TensorFlowSteps`), drawing their seeds
  from the actor's sampling stream, a ``tf.random.Generator``;
* a recurrent policy's state, carried across steps (and batches) for each env, with the
  reset flag set where the env's episode ended at the last step (the models zero their
  state there).

Its part of a collector's checkpoint is both random streams and the recurrent state.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from pg_keras import spaces
from pg_keras.collect.numpy_policy import NumpyPolicy
from pg_keras.policy import Policy
from pg_keras.seeding import SeedStreams


class Actor:
    """Samples actions and computes values for a collector's ``num_envs`` envs.

    Args:
        policy: The policy that acts (and its value model, for the bootstraps).
        num_envs: The envs acted for, one row each.
        seed: This worker's envs seed stream, from which the twin's actor stream derives.
        sampling_seed: The seed of TensorFlow's sampling stream (this worker's
            ``SeedStreams.sampling``).

    Attributes:
        numpy_policy: The NumPy twin that acts, or None (TensorFlow acts).
        state: A recurrent policy's state for the next step (``Policy.state_spec``), or
            None for a feed-forward one.
    """

    def __init__(self, policy: Policy, num_envs: int, seed: int, sampling_seed: int):
        self.policy = policy
        self.recurrent = policy.recurrent
        self._space = policy.observation_space
        self._num_envs = num_envs
        self.numpy_policy: Optional[NumpyPolicy] = (
            NumpyPolicy(policy, SeedStreams(seed).actor)
            if NumpyPolicy.supports(policy) and not self.recurrent else None)
        self.rng = tf.random.Generator.from_seed(0)
        self.rng.reset_from_seed(sampling_seed)
        self.steps = TensorFlowSteps(policy, self.rng)
        self.state = None
        self.reset_state()
        # The mask where the env gives none (every action legal), and the state a
        # feed-forward policy's graph functions take (no models' tensors).
        self._all_legal = policy.all_legal(num_envs)
        self._no_state = policy.initial_state(num_envs)
        self._next_state = None  # the models' state after the step being taken

    def reset_state(self) -> None:
        """Every env starts a new episode: a recurrent policy's state is the initial one."""
        if self.recurrent:
            self.state = self.policy.initial_state(self._num_envs)

    def begin_batch(self) -> None:
        """Before the first step of a batch: the weights changed in the last update."""
        if self.numpy_policy is not None:
            self.numpy_policy.refresh()

    def act(self, observations, mask: Optional[np.ndarray] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
        """(raw actions, env actions) sampled by the NumPy twin, else by TensorFlow; among
        the actions ``mask`` [num_envs, W] allows, when given."""
        if self.numpy_policy is not None:
            return self.numpy_policy(observations, mask)
        state = self.state if self.recurrent else self._no_state
        raw, env_action, next_state = self.steps.sample(
            observations, self._all_legal if mask is None else mask, state)
        if self.recurrent:
            self._next_state = tf.nest.map_structure(lambda x: x.numpy(), next_state)
        return raw.numpy(), env_action.numpy()

    def end_step(self, ended: np.ndarray) -> None:
        """After the envs stepped: a recurrent policy carries the state :meth:`act` left,
        reset where the episode ``ended`` ([num_envs] bool)."""
        if self.recurrent:
            self.state = {**self._next_state, "reset": ended.astype(np.float32)}

    def values(self, observations, rows: np.ndarray) -> np.ndarray:
        """V(s) for the observations of the envs ``rows`` selects ([num_envs] bool); a
        recurrent value model continues those envs' episodes from the carried state."""
        if self.numpy_policy is not None and self.numpy_policy.has_value:
            return self.numpy_policy.values(observations)
        rows_state = self._no_state if not self.recurrent else self.state
        state = {"policy": tuple(s[rows] for s in rows_state["policy"]),
                 "value": tuple(s[rows] for s in rows_state["value"]),
                 "reset": np.zeros(int(rows.sum()), np.float32)}
        return self.policy.value(spaces.as_tensors(self._space, observations), state).numpy()

    def record_initial_state(self, kept) -> None:
        """Writes the state a batch starts from into row 0 of ``kept`` (the batch's
        ``initial_state``), for a recurrent policy; the update replays from it."""
        if self.recurrent:
            tf.nest.map_structure(lambda k, now: k.__setitem__(0, now), kept, self.state)

    def rng_state(self) -> dict:
        """Both sampling streams' states (the checkpoint's ``rng``): the twin's generator
        (None without a twin) and TensorFlow's."""
        return {"numpy": self.numpy_policy.rng.bit_generator.state if self.numpy_policy
                else None, "tensorflow": self.rng.state.numpy()}

    def restore_rng(self, rng_state: dict) -> None:
        """Continues both sampling streams from an :meth:`rng_state`."""
        if self.numpy_policy is not None and rng_state["numpy"] is not None:
            self.numpy_policy.rng.bit_generator.state = rng_state["numpy"]
        self.rng.state.assign(rng_state["tensorflow"])

    def reseed(self, sampling_seed: int) -> None:
        """Starts both sampling streams at ``sampling_seed`` (a worker that resumes without
        its own saved streams: it must not repeat the draws it made before)."""
        self.rng.reset_from_seed(sampling_seed)
        if self.numpy_policy is not None:
            self.numpy_policy.rng = np.random.default_rng(sampling_seed)

    def saved_state(self):
        """A copy of the recurrent state (the checkpoint's ``recurrent_state``), or None."""
        return tf.nest.map_structure(np.copy, self.state)

    def restore_state(self, saved) -> None:
        """Continues a recurrent policy from a :meth:`saved_state` (when there is one)."""
        if self.recurrent and saved is not None:
            self.state = tf.nest.map_structure(np.copy, saved)


class TensorFlowSteps:
    """The policy's sampling step as a compiled function, for when TensorFlow acts.

    Each call draws a fresh seed from ``rng`` (the actor's checkpointed stream), so a
    resumed run samples what the uninterrupted one would.

    Args:
        policy: The policy sampled from.
        rng: The stream the seeds come from.

    Attributes:
        sample: ``(observations, mask [B, W] bool, state) -> (raw action, env action,
            next state)``: ``Policy.sample`` with the seed drawn here.
    """

    def __init__(self, policy: Policy, rng: tf.random.Generator):
        self.policy, self.rng = policy, rng
        specs = [spaces.tensor_spec(policy.observation_space, (None,)),
                 tf.TensorSpec([None, policy.mask_width], tf.bool), policy.state_spec()]
        self.sample = tf.function(self._sample, input_signature=specs, autograph=False)

    def _sample(self, observations, mask, state):
        seed = tf.cast(self.rng.make_seeds(1)[:, 0], tf.int32)
        return self.policy.sample(observations, seed, mask, state)
