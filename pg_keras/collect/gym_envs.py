"""Gymnasium env construction: env ids (``"module:EnvName-v0"``) and same-step vector envs.

Every gymnasium env a run makes (its collectors', its evaluations', the one a restored or
exported run is rebuilt on) is made here, from the run's :class:`EnvOptions`: the env id,
``gym.make``'s keyword arguments, the wrappers applied in order to each env, and whether
the env's action mask reaches the policy.

The vector env runs in gymnasium's same-step autoreset mode: the step that ends an
episode returns the next episode's first observation and puts the true final observation
in ``info["final_obs"]``. So every transition in a batch is a real one (no transition
crosses a reset), and a time-limit truncation can bootstrap from V(final observation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
from typing import Any, Callable, Dict, List, Tuple, Union

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from pg_keras import imports, spaces
from pg_keras.config import Config, InputError
from pg_keras.env_limits import check_num_envs, check_render_mode
from pg_keras.wrappers import WithoutActionMask


@dataclasses.dataclass(frozen=True)
class EnvOptions:
    """What makes the envs of a run (the Config fields of the same meaning).

    Attributes:
        env_id: Gymnasium env id (``"module:Env-v0"`` imports ``module`` first).
        wrappers: ``module:name`` wrappers (a class or a function of the env), in order.
        kwargs: Keyword arguments of ``gym.make``.
        use_action_mask: False wraps each env in :class:`~pg_keras.wrappers.WithoutActionMask`.
    """

    env_id: str
    wrappers: Tuple[str, ...] = ()
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    use_action_mask: bool = True

    @classmethod
    def of(cls, env: Union[str, Config, "EnvOptions"]) -> "EnvOptions":
        """The options of a Config, or of a bare env id (no wrappers or kwargs)."""
        if isinstance(env, EnvOptions):
            return env
        if isinstance(env, Config):
            return cls(env.env_id, env.env_wrappers, dict(env.env_kwargs), env.use_action_mask)
        return cls(env)


def split_env_id(env_id: str) -> str:
    """Imports the module of a ``"module:EnvName-v0"`` id and returns the bare env id.

    Raises:
        InputError: if the module cannot be imported or the id is not registered (the
            message carries gymnasium's suggestions of close matches).
    """
    bare = imports.import_env_module(env_id)
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


def load_wrappers(names: Tuple[str, ...]) -> List[Callable[[gym.Env], gym.Env]]:
    """The wrappers ``module:name`` entries name, imported, each applied with its errors
    named (see :func:`make_env`).

    Raises:
        InputError: for a module that cannot be imported, or a name it does not define or
            that is not callable.
    """
    return [_guarded(name, _imported(name)) for name in names]


def _imported(entry: str) -> Callable:
    module_name, _, attribute = entry.partition(":")
    try:
        value = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"env_wrappers entry {entry!r} names module {module_name!r}, which "
                         f"cannot be imported: {error}") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise InputError(f"env_wrappers entry {entry!r}: module {module_name!r} has no "
                             f"attribute {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise InputError(f"env_wrappers entry {entry!r} is not a wrapper class or a function "
                         f"of the env; received {value!r}")
    return value


def _guarded(entry: str, wrapper: Callable) -> Callable[[gym.Env], gym.Env]:
    def wrap(env: gym.Env) -> gym.Env:
        try:
            wrapped = wrapper(env)
        except Exception as error:  # the user's code: its failure is theirs to read
            raise InputError(f"env_wrappers entry {entry!r} failed to wrap "
                             f"{env.spec.id if env.spec else env}: "
                             f"{type(error).__name__}: {error}") from None
        if not isinstance(wrapped, gym.Env):
            raise InputError(f"env_wrappers entry {entry!r} must return a gymnasium env; "
                             f"received {type(wrapped).__name__}")
        return wrapped
    return wrap


def _all_wrappers(options: EnvOptions) -> List[Callable[[gym.Env], gym.Env]]:
    wrappers = load_wrappers(options.wrappers)
    if not options.use_action_mask:
        wrappers.append(WithoutActionMask)  # last: a user's wrapper may add the mask
    return wrappers


# What an env's constructor raises for keyword arguments it does not take or accept.
_KWARGS_ERRORS = (TypeError, ValueError, KeyError, AssertionError)


@contextlib.contextmanager
def _making(options: EnvOptions):
    """Names the option at fault when making the envs of ``options`` fails."""
    try:
        yield
    except InputError:
        raise
    except gym.error.DependencyNotInstalled as error:
        raise InputError(f"env_id {options.env_id!r} needs a package that is not installed: "
                         f"{error}") from None
    except _KWARGS_ERRORS as error:
        if not options.kwargs:
            raise
        raise InputError(f"env_kwargs {json.dumps(options.kwargs, sort_keys=True)} are "
                         f"refused by {options.env_id}: {type(error).__name__}: "
                         f"{error}") from None


def make_env(env: Union[str, Config, EnvOptions], **kwargs) -> gym.Env:
    """One env of a run, as each env of its vector envs is made: ``gym.make`` with the
    options' kwargs (and ``kwargs``), then the wrappers in order.

    Raises:
        InputError: for an unknown env id, a wrapper that cannot be imported or fails, or
            env kwargs the env refuses.
    """
    options = EnvOptions.of(env)
    bare = split_env_id(options.env_id)
    wrappers = _all_wrappers(options)
    check_render_mode({**options.kwargs, **kwargs})
    with _making(options):
        single = gym.make(bare, **{**options.kwargs, **kwargs})
    for wrap in wrappers:
        single = wrap(single)
    return single


def check_env(env: Union[str, Config, EnvOptions]) -> None:
    """Makes one env of the options, resets it and takes one step, and closes it: bad
    options, and observations that do not fit the env's observation space (a wrapper
    that changes them without saying so), fail here, before any work.

    Raises:
        InputError: as :func:`make_env`, and for an observation whose shape (or, in a
            Dict or Tuple, whose keys) differ from the observation space's.
    """
    single = make_env(env)
    name, where = EnvOptions.of(env).env_id, "reset()"
    try:
        observation, info = single.reset(seed=0)
        _check_observation(single.observation_space, observation, name, where)
        where = "its first step()"
        observation = single.step(_legal_action(single, observation, info))[0]
        _check_observation(single.observation_space, observation, name, where)
    except AssertionError as error:  # gymnasium's own env checker, on the first calls
        raise InputError(f"env {name!r} failed gymnasium's env check at {where}: "
                         f"{error}") from None
    finally:
        single.close()


def _legal_action(env: gym.Env, observation, info):
    """A random action, among the legal ones where the env gives a Discrete action mask."""
    mask = info.get("action_mask")
    if mask is None and isinstance(observation, dict):
        mask = observation.get("action_mask")
    if mask is not None and isinstance(env.action_space, gym.spaces.Discrete):
        return env.action_space.sample(mask=np.asarray(mask, np.int8))
    return env.action_space.sample()


def _check_observation(space: gym.Space, observation, env_id: str, where: str) -> None:
    misfit = spaces.misfit(space, observation)
    if misfit:
        raise InputError(f"env {env_id!r} returned an observation that does not fit its "
                         f"observation_space {space} from {where}: {misfit}")


def make_vector_env(env: Union[str, Config, EnvOptions], num_envs: int,
                    vectorization: str = "sync", **kwargs) -> gym.vector.VectorEnv:
    """A vector env in same-step autoreset mode, of ``num_envs`` envs made as
    :func:`make_env` makes one (``kwargs`` go to ``gym.make`` too).

    Args:
        env: An env id, or the options (or Config) of a run.
        num_envs: Environments.
        vectorization: ``sync`` (gymnasium's SyncVectorEnv: the envs step one after the
            other in this process) or ``async`` (AsyncVectorEnv: each env in a subprocess;
            their state cannot be saved with a checkpoint).

    Raises:
        InputError: for an unknown env id, an env whose package lacks a dependency, bad
            wrappers or env kwargs (see :func:`make_env`), or more environments than
            ``pg_keras.env_limits.check_num_envs`` allows.
    """
    check_num_envs(num_envs)
    choices = Config.choices("vectorization")
    if vectorization not in choices:
        raise InputError(f"vectorization must be one of {', '.join(choices)}; "
                         f"received vectorization={vectorization!r}")
    options = EnvOptions.of(env)
    bare = split_env_id(options.env_id)
    wrappers = _all_wrappers(options)
    check_render_mode({**options.kwargs, **kwargs})
    with _making(options):
        return gym.make_vec(bare, num_envs=num_envs, vectorization_mode=vectorization,
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
                            wrappers=wrappers, **{**options.kwargs, **kwargs})
