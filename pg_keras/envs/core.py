"""The state, the base class and same-step autoreset shared by every graph-native env.

Everything here is a pure function of tensors: no Python branching on tensor values and
no stateful random ops, so each call traces into ``tf.function``, ``tf.while_loop`` and
XLA (``jit_compile=True``) alike.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple, Tuple

import gymnasium as gym
import tensorflow as tf

# One generator for every reset, named rather than left to "auto_select", so that the
# plain and the XLA kernels cannot pick different ones.
_RNG_ALG = "philox"
# Floats are made from 24 random integer bits, not by stateless_uniform(dtype=float32):
# in TF 2.21 the XLA kernel turns the same Philox bits into different floats than the
# plain kernel, while the integer draws agree, and a compiled rollout must start from
# the same states as an eager one. 24 bits because float32's spacing just below 1 is
# 2^-24: finer draws would only be rounded away.
_MANTISSA_BITS = 24


class EnvState(NamedTuple):
    """The state of a batch of environments.

    Attributes:
        physics: [num_envs, state_dim] float32, the variables gymnasium keeps in
            ``env.unwrapped.state``, in the same order (each env documents its columns).
        elapsed: [num_envs] int32, steps taken in the current episode (gymnasium's
            ``TimeLimit._elapsed_steps``); 0 right after a reset.
    """

    physics: tf.Tensor
    elapsed: tf.Tensor


def uniform(num_envs, seed, low, high) -> tf.Tensor:
    """Draws [num_envs, len(low)] float32 values, column j uniform on [low[j], high[j]].

    Args:
        num_envs: int or scalar int tensor.
        seed: [2] integer tensor, the stateless seed.
        low: sequence of floats, one lower bound per column.
        high: sequence of floats, one upper bound per column (equal to low for a constant).

    Returns:
        [num_envs, len(low)] float32.
    """
    low = tf.constant(low, tf.float32)
    high = tf.constant(high, tf.float32)
    bits = tf.random.stateless_uniform(
        tf.stack([num_envs, tf.size(low)]), seed, minval=0, maxval=1 << _MANTISSA_BITS,
        dtype=tf.int32, alg=_RNG_ALG)
    unit = tf.cast(bits, tf.float32) * (1.0 / (1 << _MANTISSA_BITS))  # exact, in [0, 1)
    return low + (high - low) * unit


def wrap_angle(x: tf.Tensor) -> tf.Tensor:
    """Wraps angles into [-pi, pi] the way gymnasium's Acrobot does.

    Values already inside the closed interval are returned unchanged (pi stays pi), and
    values outside are shifted by the fewest whole turns that bring them inside, which
    is what repeated subtraction (or addition) of 2*pi gives, written without a loop.

    Args:
        x: float32 tensor of any shape.

    Returns:
        float32 tensor of x's shape, in [-pi, pi].
    """
    turn = 2.0 * math.pi
    turns_down = tf.maximum(tf.math.ceil((x - math.pi) / turn), 0.0)
    turns_up = tf.maximum(tf.math.ceil((-math.pi - x) / turn), 0.0)
    return x + turn * (turns_up - turns_down)


def _check_seed(seed) -> tf.Tensor:
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError("seed must be an integer tensor of shape [2]; received dtype "
                         f"{seed.dtype.name}")
    if seed.shape.rank is not None and seed.shape.as_list() != [2]:
        raise ValueError("seed must be an integer tensor of shape [2]; received shape "
                         f"{seed.shape}")
    return seed


class Env(abc.ABC):
    """A batched, graph-native environment: pure functions from state to state.

    Subclasses set the class attributes and implement ``_initial_physics``,
    ``_observe`` and ``_transition``; the time limit and action conversion live here.

    Attributes:
        id: The gymnasium id this env reproduces, e.g. "CartPole-v1".
        observation_space: gymnasium Box of ONE env's observation (float32).
        action_space: gymnasium space of ONE env's action (Discrete or Box).
        max_episode_steps: Steps after which an episode is truncated.
    """

    id: str
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space
    max_episode_steps: int

    def __init__(self, max_episode_steps: int | None = None):
        if max_episode_steps is not None:
            if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
                raise ValueError("max_episode_steps must be a positive integer; "
                                 f"received max_episode_steps={max_episode_steps!r}")
            self.max_episode_steps = int(max_episode_steps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, max_episode_steps={self.max_episode_steps})"

    # The three functions of the interface.

    def reset(self, num_envs, seed) -> EnvState:
        """Draws num_envs initial states from gymnasium's reset distribution.

        Args:
            num_envs: int or scalar int tensor (static under XLA).
            seed: [2] int32 (or int64) tensor; the same seed gives the same states.

        Returns:
            An EnvState of [num_envs, ...] tensors with ``elapsed`` zero.
        """
        physics = self._initial_physics(num_envs, _check_seed(seed))
        return EnvState(physics, tf.zeros(tf.shape(physics)[:1], tf.int32))

    def observe(self, state: EnvState) -> tf.Tensor:
        """The observation of each env.

        Args:
            state: EnvState of num_envs envs.

        Returns:
            [num_envs, *observation_space.shape] float32.
        """
        return self._observe(state.physics)

    def step(self, state: EnvState, action) -> Tuple[EnvState, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Advances every env by one step; no env is reset (see ``autoreset_step``).

        Stepping an env whose episode has ended is allowed (the batch stays rectangular)
        but, as in gymnasium, what follows is not a meaningful episode.

        Args:
            state: EnvState of num_envs envs.
            action: the action as the env receives it: [num_envs] integers for a
                Discrete space (not range-checked), [num_envs, d] floats for a Box space
                (clipped to the bounds where gymnasium clips).

        Returns:
            (state, reward, terminated, truncated): the next EnvState; reward [num_envs]
            float32; terminated [num_envs] bool (the task's own end); truncated
            [num_envs] bool (the time limit reached). Both flags may be true at once,
            as in gymnasium's TimeLimit; a terminal step's value is 0 either way.
        """
        physics, reward, terminated = self._transition(state.physics, self._convert_action(action))
        elapsed = state.elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        return EnvState(physics, elapsed), reward, terminated, truncated

    # What a subclass provides.

    @abc.abstractmethod
    def _initial_physics(self, num_envs, seed: tf.Tensor) -> tf.Tensor:
        """[num_envs, state_dim] float32 initial physics."""

    @abc.abstractmethod
    def _observe(self, physics: tf.Tensor) -> tf.Tensor:
        """[num_envs, state_dim] physics -> [num_envs, *obs_shape] float32."""

    @abc.abstractmethod
    def _transition(self, physics: tf.Tensor, action: tf.Tensor):
        """(physics, action) -> (next physics, reward [N] float32, terminated [N] bool)."""

    def _convert_action(self, action) -> tf.Tensor:
        if isinstance(self.action_space, gym.spaces.Discrete):
            # Policies sample int64 (tfp) or int32; the dynamics only need small integers.
            return tf.cast(action, tf.int32)
        # Box: [num_envs, d]; the env-specific clipping happens in _transition, because
        # some rewards (MountainCarContinuous) read the action before it is clipped.
        return tf.reshape(tf.cast(action, tf.float32), [-1, *self.action_space.shape])


def _select(done: tf.Tensor, if_done: tf.Tensor, otherwise: tf.Tensor) -> tf.Tensor:
    # tf.where broadcasts from the right, so a [N] mask must become [N, 1, ...] to pick
    # whole rows of a [N, ...] component.
    mask = tf.reshape(done, [-1] + [1] * (otherwise.shape.rank - 1))
    return tf.where(mask, if_done, otherwise)


def autoreset_step(env: Env, state, action, seed):
    """Steps every env and, in the same call, resets those whose episode ended.

    This is gymnasium's ``AutoresetMode.SAME_STEP``: the observation returned for an env
    that terminated or was truncated is the first observation of its next episode, and
    the observation the step actually reached is returned apart as ``final_obs`` (to
    bootstrap a truncated episode from V(final_obs)). Every transition returned is
    therefore a real one: nothing straddles two episodes.

    Every state component is chosen row by row with ``tf.where``; all envs draw a fresh
    initial state each call and only the ended ones keep it, which costs a reset's worth
    of arithmetic but keeps the graph branch-free for XLA.

    Args:
        env: an Env.
        state: its EnvState for num_envs envs.
        action: as for ``env.step``.
        seed: [2] int32 tensor for the resets; pass a different one each step (for
            instance ``tf.random.experimental.stateless_fold_in(seed, t)``), or ended
            envs restart from the same initial states.

    Returns:
        (state, obs, reward, terminated, truncated, final_obs): the next EnvState (fresh
        where done, elapsed 0 there); obs [num_envs, *obs_shape] float32, what the
        policy sees next; reward, terminated, truncated [num_envs] of the step taken;
        final_obs [num_envs, *obs_shape] float32, the observation the step reached
        (equal to obs where the episode goes on).
    """
    stepped, reward, terminated, truncated = env.step(state, action)
    done = tf.logical_or(terminated, truncated)
    num_envs = tf.shape(done)[0]
    fresh = env.reset(num_envs, seed)
    next_state = tf.nest.map_structure(lambda new, old: _select(done, new, old), fresh, stepped)
    final_obs = env.observe(stepped)
    obs = env.observe(next_state)
    return next_state, obs, reward, terminated, truncated, final_obs
