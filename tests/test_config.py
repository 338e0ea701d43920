"""Tests of pg_keras.config.Config: validation, derived sizes and round trips."""

import dataclasses
import json
import math
import typing
from typing import Literal

import keras
import numpy as np
import pytest

from pg_keras.config import Config, InputError


def test_defaults_are_valid():
    config = Config()
    assert config.env_id == "CartPole-v1"
    assert config.hidden_sizes == (64, 64)
    assert config.total_steps >= config.steps_per_iteration


# Each case: the field, a value it must refuse. The message must name both.
INVALID = [
    ("policy_learning_rate", -1e-3),
    ("policy_learning_rate", 0.0),
    ("policy_learning_rate", math.nan),
    ("policy_learning_rate", math.inf),
    ("value_learning_rate", -0.1),
    ("value_learning_rate", 0),
    ("value_learning_rate", math.nan),
    ("gamma", -0.01),
    ("gamma", 1.5),
    ("gamma", math.nan),
    ("gamma", "0.9"),
    ("gae_lambda", -0.5),
    ("gae_lambda", 1.01),
    ("num_envs", 0),
    ("num_envs", -2),
    ("num_envs", 2.0),
    ("num_envs", True),
    ("steps_per_update", 0),
    ("steps_per_update", -1),
    ("entropy_coef", -0.01),
    ("entropy_coef", math.inf),
    ("max_grad_norm", -1.0),
    ("optimizer", "adagrad"),
    ("optimizer", "Adam"),
    ("activation", "mish"),
    ("collect_mode", "batch"),
    ("action_bounds", "squash"),
    ("hidden_sizes", (64, 0)),
    ("hidden_sizes", (64, -3)),
    ("hidden_sizes", (True, 64)),
    ("hidden_sizes", "64,64"),
    ("value_hidden_sizes", (32, 2.5)),
    ("value_hidden_sizes", 64),
    ("baseline", 1),
    ("normalize_advantages", 0),
    ("normalize_returns", "yes"),
    ("gamma_weighting", 1),
    ("normalize_observations", None),
    ("state_dependent_std", 0),
    ("seed", -1),
    ("seed", 1.5),
    ("eval_every", -1),
    ("eval_episodes", 0),
    ("env_id", ""),
    ("env_id", "   "),
    ("init_log_std", math.nan),
    ("total_steps", 0),
    ("total_steps", 8 * 32 - 1),  # less than one update of the default 8 envs x 32 steps
]


@pytest.mark.parametrize("name, value", INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
def test_invalid_values_name_the_field_and_the_value(name, value):
    with pytest.raises(ValueError) as error:
        Config(**{name: value})
    message = str(error.value)
    assert f"{name}={value!r}" in message, message


def test_total_steps_message_gives_one_update():
    with pytest.raises(ValueError, match=r"num_envs \* steps_per_update = 40.*total_steps=39"):
        Config(num_envs=4, steps_per_update=10, total_steps=39)
    # Exactly one update is enough.
    assert Config(num_envs=4, steps_per_update=10, total_steps=40).total_steps == 40


@pytest.mark.parametrize("overrides", [
    dict(gamma=0.0), dict(gamma=1.0), dict(gae_lambda=0.0), dict(gae_lambda=1.0),
    dict(gamma=1), dict(entropy_coef=0.0), dict(max_grad_norm=0.0), dict(eval_every=0),
    dict(hidden_sizes=()), dict(seed=0), dict(init_log_std=-2.0),
], ids=str)
def test_boundary_values_are_valid(overrides):
    config = Config(**overrides)
    for name, value in overrides.items():
        assert getattr(config, name) == value


def test_steps_without_baseline_is_rejected():
    with pytest.raises(ValueError) as error:
        Config(collect_mode="steps", baseline=False)
    message = str(error.value)
    assert "collect_mode='steps'" in message and "baseline=False" in message
    # The same mode with a baseline, and episodes without one, are fine.
    Config(collect_mode="steps", baseline=True)
    Config(collect_mode="episodes", baseline=False)


@pytest.mark.parametrize("collect_mode, baseline, resolved", [
    ("auto", True, "steps"),
    ("auto", False, "episodes"),
    ("steps", True, "steps"),
    ("episodes", True, "episodes"),
    ("episodes", False, "episodes"),
])
def test_resolved_collect_mode(collect_mode, baseline, resolved):
    config = Config(collect_mode=collect_mode, baseline=baseline)
    assert config.resolved_collect_mode == resolved
    assert config.collect_mode == collect_mode  # the field itself is kept as given


def test_steps_per_iteration():
    assert Config(num_envs=3, steps_per_update=7, total_steps=21).steps_per_iteration == 21
    assert Config().steps_per_iteration == 8 * 32


def test_lists_become_tuples():
    config = Config(hidden_sizes=[32, 16], value_hidden_sizes=[8])
    assert config.hidden_sizes == (32, 16)
    assert config.value_hidden_sizes == (8,)
    hash(config)  # stays hashable


def test_numpy_scalars_are_accepted_as_python_values():
    config = Config(num_envs=np.int64(4), steps_per_update=np.int32(16), total_steps=np.int64(640),
                    gamma=np.float32(0.9), baseline=np.bool_(False), collect_mode=np.str_("auto"),
                    hidden_sizes=[np.int64(32), np.int64(16)])
    assert config.num_envs == 4 and type(config.num_envs) is int
    assert type(config.gamma) is float and config.gamma == pytest.approx(0.9)
    assert config.baseline is False
    assert config.hidden_sizes == (32, 16) and all(type(s) is int for s in config.hidden_sizes)
    json.dumps(config.to_dict())  # no numpy type left behind
    # numpy does not make an invalid value valid.
    with pytest.raises(ValueError, match="num_envs=0"):
        Config(num_envs=np.int64(0))
    with pytest.raises(ValueError, match="baseline=1"):
        Config(baseline=np.int64(1))


def test_to_dict_from_dict_round_trip():
    config = Config(env_id="Pendulum-v1", seed=3, num_envs=2, steps_per_update=100,
                    total_steps=2_000, gamma=0.95, hidden_sizes=(32,), activation="relu",
                    state_dependent_std=True, action_bounds="tanh", optimizer="rmsprop")
    values = config.to_dict()
    assert set(values) == {f.name for f in dataclasses.fields(Config)}
    assert values["hidden_sizes"] == (32,)
    assert Config.from_dict(values) == config
    # Through JSON, where tuples come back as lists.
    assert Config.from_dict(json.loads(json.dumps(values))) == config


def test_from_dict_unknown_key_is_named():
    values = {**Config().to_dict(), "learning_rate": 1e-3}
    with pytest.raises(ValueError, match="learning_rate"):
        Config.from_dict(values)


def test_from_dict_validates():
    with pytest.raises(ValueError, match="gamma=2.0"):
        Config.from_dict({"gamma": 2.0})


def test_config_is_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gamma = 0.5
    assert config.gamma == 0.99


def test_replace_applies_changes_and_validates_again():
    config = Config()
    changed = config.replace(gamma=0.9, hidden_sizes=[16])
    assert changed.gamma == 0.9 and changed.hidden_sizes == (16,)
    assert config.gamma == 0.99
    with pytest.raises(ValueError, match="gamma=1.5"):
        config.replace(gamma=1.5)


def test_equal_configs_hash_equal():
    assert Config(hidden_sizes=[64, 64]) == Config()
    assert hash(Config(hidden_sizes=[64, 64])) == hash(Config())
    assert Config(seed=1) != Config()


@pytest.mark.parametrize("activation", Config.choices("activation"))
def test_every_allowed_activation_exists_in_keras(activation):
    """The choices the config accepts must all be names the default MLP can use."""
    assert callable(keras.activations.get(activation))


# Each field of choices, from its annotation: the one list of its values.
CHOICE_FIELDS = sorted(name for name, kind in typing.get_type_hints(Config).items()
                       if typing.get_origin(kind) is Literal)


def test_the_choices_are_the_literal_annotations():
    assert {"optimizer", "activation", "backend", "vectorization", "lr_schedule",
            "advantage_normalization"} <= set(CHOICE_FIELDS)
    assert Config.choices("optimizer") == ("adam", "adamw", "rmsprop", "sgd")
    assert Config.choices("num_envs") == ()
    for name in CHOICE_FIELDS:
        assert getattr(Config(), name) in Config.choices(name)


@pytest.mark.parametrize("name", CHOICE_FIELDS)
@pytest.mark.parametrize("value", ["not_a_choice", 3, None])
def test_a_value_outside_its_literal_is_refused_in_one_line(name, value):
    with pytest.raises(InputError) as error:
        Config(**{name: value})
    message = str(error.value)
    choices = ", ".join(repr(c) for c in Config.choices(name))
    assert message == f"{name} must be one of {choices}; received {name}={value!r}"
    assert "\n" not in message
