"""The policy of a config: its head, networks (the user's or the defaults) and running
normalizers, built in the current ``tf.distribute`` scope for :func:`pg_keras.learner.build_learner`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import gymnasium as gym
import keras
import tensorflow as tf

from pg_keras import networks, spaces
from pg_keras.config import Config
from pg_keras.heads import make_head
from pg_keras.normalization import NestedNormalization, RunningNormalization
from pg_keras.policy import Policy
from pg_keras.seeding import SeedStreams


def build_policy(config: Config, observation_space: gym.Space, action_space: gym.Space,
                 policy_network: Optional[networks.ModelOrFactory] = None,
                 value_network: Optional[networks.ModelOrFactory] = None
                 ) -> Tuple[Policy, Optional[RunningNormalization]]:
    """(the policy, the running return statistics or None), in the current scope.

    ``policy_network`` and ``value_network`` are a ``keras.Model`` or a factory for one
    (see networks.py); None builds the factory the config names, or the default model.
    """
    # A Dict observation's "action_mask" key goes to the head, not to the networks.
    observation_space, _ = spaces.split_action_mask(observation_space)
    head = make_head(action_space, config.state_dependent_std, config.init_log_std,
                     config.action_bounds)
    normalizer = observation_normalizer(observation_space, config)
    policy_network = _network(config, observation_space, policy_network, "policy",
                              head.param_size, config.hidden_sizes, 0.01,
                              SeedStreams(config.seed).init)
    if config.baseline:
        value_network = _network(config, observation_space, value_network, "value", 1,
                                 config.value_hidden_sizes, 1.0,
                                 SeedStreams(config.seed).value_init)
    else:
        value_network = None
    return_stats = None
    if config.normalize_returns:
        return_stats = RunningNormalization(clip=0.0, name="return_stats")
        return_stats.build((None,))
    return_scale = None if return_stats is None else lambda: _std(return_stats)
    policy = Policy(observation_space, head, policy_network, normalizer, value_network,
                    return_scale)
    return policy, return_stats


def observation_normalizer(space: gym.Space, config: Config):
    """The running normalization of observations, or None (``normalize_observations``
    off, a lone image, or a nested space none of whose leaves takes it).

    A leaf space's whole encoded observation is normalized; a Dict or Tuple space's
    vector leaves only (not images, not one-hots), each with its own statistics.
    """
    if not config.normalize_observations:
        return None
    shapes = spaces.encoded_shape(space)
    if not spaces.is_nested(space):
        if spaces.is_image(space):
            return None  # the CNN scales its input itself
        normalizer = RunningNormalization(clip=config.clip_observations,
                                          name="observation_normalizer")
        normalizer.build((None,) + shapes)
        return normalizer
    names = [name for name, applies in spaces.normalizes(space).items() if applies]
    if not names:
        return None
    normalizer = NestedNormalization(names, clip=config.clip_observations,
                                     name="observation_normalizer")
    normalizer.build({name: (None,) + shape for name, shape in shapes.items()})
    return normalizer


def _network(config: Config, space: gym.Space, given, role: str, output_units: int,
             hidden_sizes, output_gain: float, seed: int) -> keras.Model:
    """The model of ``role`` (policy or value): ``given``, or the factory the config
    names, or the default one; checked against the contract of networks.py."""
    model = networks.chosen_model(given, getattr(config, f"{role}_network"), role)
    if model is None:
        model = _default_network(config, space, output_units, hidden_sizes, output_gain,
                                 seed, role)
    return networks.resolve_model(model, spaces.encoded_shape(space), output_units, role)


def _default_network(config: Config, space: gym.Space, output_units: int, hidden_sizes,
                     output_gain: float, seed: int, role: str) -> keras.Model:
    """The default model of ``role``: the MLP, or with ``recurrent_cell`` the recurrent one."""
    if config.recurrent_cell == "none":
        return networks.default_network(space, output_units, hidden_sizes, config.activation,
                                        output_gain=output_gain, seed=seed, name=f"{role}_mlp")
    return networks.default_recurrent_network(
        space, output_units, hidden_sizes, config.activation, config.recurrent_cell,
        config.recurrent_units, output_gain, seed, name=f"{role}_{config.recurrent_cell}")


def _std(stats: RunningNormalization) -> tf.Tensor:
    return tf.sqrt(stats.variance + stats.epsilon)
