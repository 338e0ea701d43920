"""What the collectors hand the learner: :class:`Batch` and its fixed spec (observations
in the dtypes pg_keras.spaces stores them in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import gymnasium as gym
import tensorflow as tf

from pg_keras import spaces
from pg_keras.config import Config

if TYPE_CHECKING:
    from pg_keras.heads import ActionHead


class Batch(NamedTuple):
    """One update's experience, time-major. T = steps_per_update, B = num_envs.

    Attributes:
        observations: [T, B, *obs_shape] the observation the action was taken in; for a
            Dict or Tuple space, the dict ``{leaf name: [T, B, *shape]}`` (pg_keras.spaces).
        actions: [T, B, *raw_shape] raw actions (see heads.py).
        rewards: [T, B] float32.
        terminated: [T, B] bool, the episode ended in a terminal state at this step.
        truncated: [T, B] bool, the episode was cut by a time limit at this step.
        bootstrap: [T, B] float32, V(final observation) where truncated, V(s_T) on the last
            row where the episode goes on past the batch, 0 elsewhere.
        mask: [T, B] float32, 1 for steps to learn from, 0 for padding.
        episode_steps: [T, B] int32, the step's index within its episode.
        action_masks: [T, B, W] bool, the actions legal at each step (all, where the env
            gives no mask): W is the head's ``mask_size`` (0 for heads without masks).
        initial_state: For a recurrent policy, the state its models had entering row 0
            (see ``Policy.state_spec``), each tensor with a leading axis of 1 (``[1, B,
            n]``, ``reset`` [1, B]) so that it splits by environment like the rest; for a
            feed-forward policy, an empty float32 [1, B, 0].
    """

    observations: tf.Tensor
    actions: tf.Tensor
    rewards: tf.Tensor
    terminated: tf.Tensor
    truncated: tf.Tensor
    bootstrap: tf.Tensor
    mask: tf.Tensor
    episode_steps: tf.Tensor
    action_masks: Optional[tf.Tensor] = None  # None: every action legal
    initial_state: Any = None  # None: a feed-forward policy's (no state)


def batch_spec(config: Config, observation_space: gym.Space, head: "ActionHead",
               state_spec: Any = None) -> Batch:
    """The fixed ``tf.TensorSpec`` of every batch, so the train step traces once.

    ``state_spec`` is a recurrent policy's ``state_spec((1, num_envs))``, or None.
    """
    tb = (config.steps_per_update, config.num_envs)
    return Batch(
        observations=spaces.tensor_spec(observation_space, tb),
        actions=tf.TensorSpec(tb + tuple(head.raw_shape), head.raw_dtype),
        rewards=tf.TensorSpec(tb, tf.float32),
        terminated=tf.TensorSpec(tb, tf.bool),
        truncated=tf.TensorSpec(tb, tf.bool),
        bootstrap=tf.TensorSpec(tb, tf.float32),
        mask=tf.TensorSpec(tb, tf.float32),
        episode_steps=tf.TensorSpec(tb, tf.int32),
        action_masks=tf.TensorSpec(tb + (head.mask_size or 0,), tf.bool),
        initial_state=(tf.TensorSpec((1, config.num_envs, 0), tf.float32)
                       if state_spec is None else state_spec),
    )
