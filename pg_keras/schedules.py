"""The schedules of the learning rates and the entropy bonus: one rule for all three.

Each value of an update is its initial value times its schedule's factor at the env steps
(all workers') taken before the update's batch: 1 for ``constant``, and
``max(0, 1 - env_steps / total_steps)`` for ``linear``. The factor is computed in float64
and each value rounded to float32 once, so that a resumed run (which knows only the env
steps) applies exactly the values of an uninterrupted one.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from pg_keras.config import Config


class Scheduled(NamedTuple):
    """The values one update uses (float32 scalars), or the variables they go to."""

    policy_learning_rate: tf.Tensor
    value_learning_rate: tf.Tensor
    entropy_coef: tf.Tensor


def is_scheduled(config: Config) -> bool:
    """Whether a learning rate or the entropy bonus follows a schedule."""
    return "linear" in (config.lr_schedule, config.entropy_schedule)


def scheduled_values(config: Config, env_steps) -> Scheduled:
    """The values of an update after ``env_steps`` env steps (see the module docstring)."""

    def factor(schedule: str) -> tf.Tensor:
        if schedule == "constant":
            return tf.constant(1.0, tf.float64)
        done = tf.cast(env_steps, tf.float64) / config.total_steps
        return tf.maximum(tf.constant(0.0, tf.float64), 1.0 - done)

    lr = factor(config.lr_schedule)
    values = (config.policy_learning_rate * lr, config.value_learning_rate * lr,
              config.entropy_coef * factor(config.entropy_schedule))
    return Scheduled(*(tf.cast(v, tf.float32) for v in values))


def assign(variables: Scheduled, values: Scheduled) -> None:
    """Assigns each scheduled value to its variable (None: a value no model uses)."""
    for variable, value in zip(variables, values):
        if variable is not None:
            variable.assign(value)


def as_metrics(variables: Scheduled) -> dict:
    """The values the variables hold, by name, as an update's metrics."""
    return {name: tf.identity(variable) for name, variable in variables._asdict().items()
            if variable is not None}
