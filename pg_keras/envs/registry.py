"""Which graph-native envs exist, by gymnasium id."""

from __future__ import annotations

from typing import Dict, Tuple, Type

from pg_keras.envs.acrobot import Acrobot
from pg_keras.envs.cartpole import CartPole
from pg_keras.envs.core import Env
from pg_keras.envs.mountain_car import MountainCar, MountainCarContinuous
from pg_keras.envs.pendulum import Pendulum

REGISTRY: Dict[str, Type[Env]] = {
    cls.id: cls for cls in (CartPole, Acrobot, Pendulum, MountainCar, MountainCarContinuous)
}


def ids() -> Tuple[str, ...]:
    """The gymnasium ids that have a graph-native version, sorted."""
    return tuple(sorted(REGISTRY))


def make(env_id: str, max_episode_steps: int | None = None) -> Env:
    """Creates the graph-native version of a gymnasium env.

    Args:
        env_id: a gymnasium id, one of ``ids()``.
        max_episode_steps: the time limit; gymnasium's registered one when None.

    Returns:
        An Env.

    Raises:
        ValueError: if env_id has no graph-native version, or max_episode_steps is not a
            positive integer.
    """
    if env_id not in REGISTRY:
        raise ValueError(f"No graph-native env for env_id={env_id!r}; available: "
                         f"{', '.join(ids())}")
    return REGISTRY[env_id](max_episode_steps=max_episode_steps)
