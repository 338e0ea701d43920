"""Gymnasium env construction: env ids (``"module:EnvName-v0"``) and same-step vector envs.

The vector env runs in gymnasium's same-step autoreset mode: the step that ends an
episode returns the next episode's first observation and puts the true final observation
in ``info["final_obs"]``. So every transition in a batch is a real one (no transition
crosses a reset), and a time-limit truncation can bootstrap from V(final observation).
"""

from __future__ import annotations

import importlib
import importlib.util

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from pg_keras.config import InputError, check_num_envs


def split_env_id(env_id: str) -> str:
    """Imports the module of a ``"module:EnvName-v0"`` id and returns the bare env id.

    Raises:
        InputError: if the module cannot be imported or the id is not registered (the
            message carries gymnasium's suggestions of close matches).
    """
    bare = env_id
    if ":" in env_id:
        module, bare = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise InputError(f"env_id {env_id!r} names module {module!r}, which cannot be "
                             f"imported: {error}") from None
    try:
        gym.spec(bare)
    except gym.error.Error as error:
        hint = _package_hint(env_id, error)
        reason = str(error).rstrip(".") + hint if hint else error
        raise InputError(f"env_id {env_id!r} is not a registered gymnasium environment: "
                         f"{reason}") from None
    return bare


def _package_hint(env_id: str, error: Exception) -> str:
    """For an id no close match explains, how to have the package that registers it imported.

    Third-party packages (minigrid, ale_py, highway_env, ...) register their ids when they
    are imported, which a launcher never does by itself.
    """
    if ":" in env_id or "Did you mean" in str(error) or not isinstance(
            error, (gym.error.NameNotFound, gym.error.NamespaceNotFound)):
        return ""
    guess = env_id.split("/", 1)[0] if "/" in env_id else env_id.split("-", 1)[0]
    package = "package"
    if guess.lower() != guess and importlib.util.find_spec(guess.lower()) is not None:
        package = guess.lower()  # installed: name it
    return (f"; if a package registers it, --env_id={package}:{env_id} imports that package "
            f"first (env_id='{package}:{env_id}' in Python)")


def make_vector_env(env_id: str, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    """A synchronous vector env in same-step autoreset mode.

    Raises:
        InputError: for an unknown env id, an env whose package lacks a dependency, or
            more environments than ``pg_keras.config.check_num_envs`` allows.
    """
    check_num_envs(num_envs)
    bare = split_env_id(env_id)
    try:
        return gym.make_vec(bare, num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise InputError(f"env_id {env_id!r} needs a package that is not installed: "
                         f"{error}") from None
