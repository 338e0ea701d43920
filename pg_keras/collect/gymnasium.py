"""The gymnasium collectors: a vector env stepped in Python -> fixed-shape batches.

Two ways to cut experience into batches, one class each:

* :class:`StepsCollector` (``collect_mode="steps"``): the environments run on across
  updates; the batch is cut after ``steps_per_update`` steps and the cut episodes
  bootstrap from V(s_T).
* :class:`EpisodesCollector` (``collect_mode="episodes"``): each update resets the
  environments and runs each for one whole episode (at most ``steps_per_update`` steps);
  the rows after an environment's episode end are padding (mask 0), and collection stops
  as soon as every environment has finished.

``Collector(envs, policy, config)`` builds the one the config asks for. Both share the
step itself (:meth:`Collector._step`: act, step the envs, write the batch's row, check for
NaN and inf, count the episode), the bootstrap values and the checkpointed state. The
vector env must run in same-step autoreset mode (see :mod:`pg_keras.collect.gym_envs`).

The policy side (the NumPy twin, a recurrent policy's carried state) is an
:class:`~pg_keras.collect.actor.Actor`; the env's action masks are
:class:`~pg_keras.collect.masks.ActionMasks`. Each batch records the recurrent state it
started from, which the update replays.
"""

from __future__ import annotations

import pickle
from typing import List, NamedTuple, Optional, Tuple

import gymnasium as gym
import numpy as np
import tensorflow as tf
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode

from pg_keras import spaces
from pg_keras.batch import Batch, batch_spec
from pg_keras.collect.actor import Actor
from pg_keras.collect.episode_stats import EpisodeStats
from pg_keras.collect.masks import ActionMasks
from pg_keras.collect.nonfinite import NonFiniteGuard
from pg_keras.collect.numpy_policy import NumpyPolicy
from pg_keras.config import Config, InputError
from pg_keras.policy import Policy
from pg_keras.seeding import SeedStreams


class _Step(NamedTuple):
    """What one step of the vector env left, after any dropped episodes were handled."""

    observations: np.ndarray  # the next observations (a dropped env's from its reset)
    terminated: np.ndarray
    truncated: np.ndarray
    done: np.ndarray  # terminated | truncated
    any_done: bool
    info: dict
    dropped: Optional[np.ndarray]  # [num_envs] bool, the envs whose episode was dropped


class Collector:
    """Steps a vector env with a policy and fills fixed-shape batches.

    ``Collector(envs, policy, config)`` returns a :class:`StepsCollector` or an
    :class:`EpisodesCollector`, as ``config.resolved_collect_mode`` says.

    Args:
        envs: A vector env in same-step autoreset mode (see :func:`make_vector_env`).
        policy: The policy that acts; its value model bootstraps cut episodes.
        config: Hyperparameters (its ``seed`` is this worker's envs stream).
        sampling_seed: The seed of TensorFlow's sampling stream; default: that of
            ``SeedStreams(config.seed)``.

    Raises:
        InputError: for a vector env in another autoreset mode.
    """

    def __new__(cls, envs: gym.vector.VectorEnv, policy: Policy, config: Config,
                sampling_seed: Optional[int] = None):
        if cls is Collector:
            episodes = config.resolved_collect_mode == "episodes"
            cls = EpisodesCollector if episodes else StepsCollector
        return super().__new__(cls)

    def __init__(self, envs: gym.vector.VectorEnv, policy: Policy, config: Config,
                 sampling_seed: Optional[int] = None):
        if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise InputError("the vector env must use AutoresetMode.SAME_STEP; received "
                             f"autoreset_mode={envs.metadata.get('autoreset_mode')!r}")
        self.envs, self.policy, self.config = envs, policy, config
        num = envs.num_envs
        # A Dict or Tuple space's observations are kept as the flat dict {leaf name:
        # array} (pg_keras.spaces), in the batch and between steps.
        self._space = policy.observation_space  # without an action_mask key
        self._nested = spaces.is_nested(self._space)
        spec = batch_spec(config, self._space, policy.head,
                          policy.state_spec((1, num)) if policy.recurrent else None)
        self._batch = Batch(**{name: tf.nest.map_structure(
            lambda s: np.zeros(s.shape, s.dtype.as_numpy_dtype), field)
            for name, field in spec._asdict().items()})
        self._baseline = policy.has_value
        # config.seed is this worker's envs stream, from which the actor's is derived.
        if sampling_seed is None:
            sampling_seed = SeedStreams(config.seed).sampling
        self.actor = Actor(policy, num, config.seed, sampling_seed)
        self._masks = ActionMasks(num, policy.head.mask_size or 0, config.env_id)
        self._observations, info = envs.reset(seed=config.seed)
        self._masks.read(self._observations, info, 0)
        envs.action_space.seed(config.seed)
        self.episodes = EpisodeStats(num)
        self._guard = NonFiniteGuard(envs.single_observation_space, num, config.env_id,
                                     drop=config.on_nonfinite == "drop")
        self.dropped_episodes = 0
        self.total_steps = 0
        self._steps = config.steps_per_update

    def collect(self) -> Tuple[Batch, int]:
        """Collects one batch.

        Returns:
            (batch of numpy arrays matching the learner's ``batch_spec``, env steps taken).
        """
        raise NotImplementedError

    def reseed(self, sampling_seed: int) -> None:
        """Starts the sampling streams anew (a worker resuming without its own)."""
        self.actor.reseed(sampling_seed)

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        return self.episodes.pop()

    @property
    def numpy_policy(self) -> Optional[NumpyPolicy]:
        """The NumPy twin that acts (see :class:`Actor`), or None: TensorFlow acts."""
        return self.actor.numpy_policy

    @numpy_policy.setter
    def numpy_policy(self, policy: Optional[NumpyPolicy]) -> None:
        self.actor.numpy_policy = policy

    def _step(self, t: int, observations: np.ndarray) -> _Step:
        """Acts on ``observations``, steps the envs and writes row ``t`` of the batch.

        This runs once per env step, so it does only what each step needs: a step's data
        is checked in one cheap test, and the rare bad step takes a slow path.
        """
        batch = self._batch
        if self._nested:
            row = {name: x[t] for name, x in batch.observations.items()}
            for name, value in spaces.flatten(self._space, observations).items():
                row[name][...] = value
        else:
            row = batch.observations[t]
            row[...] = observations  # stored in the batch's dtype, and what the policy sees
        batch.action_masks[t] = self._masks.current
        raw, env_action = self.actor.act(row, self._masks.for_policy)
        batch.actions[t] = raw
        next_obs, reward, terminated, truncated, info = self.envs.step(env_action)
        batch.rewards[t] = reward
        batch.terminated[t] = terminated
        batch.truncated[t] = truncated
        batch.episode_steps[t] = self.episodes.episode_length
        done = terminated | truncated
        any_done = done.any()
        env_step = self.total_steps + (t + 1) * self.envs.num_envs
        dropped = self._guard.check(next_obs, reward, done, any_done, info, env_step)
        self._masks.read(next_obs, info, env_step)
        if dropped is not None:
            self._masks.allow(dropped)  # reset below; their new masks are not read
            next_obs, terminated, truncated = self._drop_episodes(
                t, dropped, next_obs, terminated, truncated)
            reward = np.where(dropped, 0.0, reward)
            done = terminated | truncated
            any_done = done.any()
        self.episodes.add(reward)
        # A dropped episode ends too (the batch marks it terminated): its state goes.
        self.actor.end_step(done if dropped is None else done | dropped)
        return _Step(next_obs, terminated, truncated, done, any_done, info, dropped)

    def _drop_episodes(self, t, dropped, next_obs, terminated, truncated):
        """Masks out the current episode of each ``dropped`` env and resets those envs."""
        _mask_out_episodes(self._batch, t, dropped, self.episodes.episode_length)
        self.dropped_episodes += int(dropped.sum())
        self.episodes.discard_current_step(dropped)
        reset_obs, _ = self.envs.reset(options={"reset_mask": dropped})
        next_obs = spaces.nest_map(
            lambda reset, old: np.where(dropped.reshape((-1,) + (1,) * (np.ndim(old) - 1)),
                                        reset, old),
            spaces.flatten(self._space, reset_obs), spaces.flatten(self._space, next_obs))
        return next_obs, terminated & ~dropped, truncated & ~dropped

    def _bootstrap_truncations(self, t: int, step: _Step) -> None:
        """Row ``t``'s time-limit truncations bootstrap from V(final observation)."""
        cut = step.truncated & ~step.terminated
        if self._baseline and cut.any():
            final = spaces.stack(self._space,
                                 [step.info["final_obs"][i] for i in np.flatnonzero(cut)])
            self._batch.bootstrap[t, cut] = self.actor.values(final, cut)

    def _bootstrap_last_row(self, still_open: np.ndarray, observations) -> None:
        """The episodes ``still_open`` after the last row bootstrap from V(s_T)."""
        if self._baseline and still_open.any():
            self._batch.bootstrap[-1, still_open] = self.actor.values(spaces.nest_map(
                lambda x: np.asarray(x)[still_open], spaces.flatten(self._space, observations)),
                still_open)

    def _begin(self) -> None:
        """Before the first step of a batch: the actor reads the weights of the last
        update, and the batch keeps the recurrent state its first row starts from."""
        self.actor.begin_batch()
        self.actor.record_initial_state(self._batch.initial_state)

    def _finish(self, steps_taken: int, observations) -> Tuple[Batch, int]:
        """Keeps where the envs stand and returns (the batch, env steps taken)."""
        self._observations = observations
        env_steps = steps_taken * self.envs.num_envs
        self.total_steps += env_steps
        return Batch(*self._batch), env_steps

    def state(self) -> dict:
        """Everything needed to continue collecting exactly where this collector is.

        The environments themselves are pickled when they can be (classic-control and
        most Python envs); otherwise ``envs`` is None and a restored collector resets them.
        """
        return {"observations": self._observations, "envs": _pickle_envs(self.envs),
                "rng": self.actor.rng_state(), "action_masks": self._masks.state(),
                "episode_return": self.episodes.episode_return.copy(),
                "episode_length": self.episodes.episode_length.copy(),
                "total_steps": self.total_steps,
                "recurrent_state": self.actor.saved_state()}

    def restore(self, state: dict) -> bool:
        """Continues from a :meth:`state`.

        Returns:
            True if the environments were restored exactly; False if they had to be reset
            (then the run is not bit-identical to an uninterrupted one).
        """
        self.total_steps = state["total_steps"]
        self.actor.restore_rng(state["rng"])
        envs = _unpickle_envs(state["envs"])
        if envs is not None:
            self.envs.envs = envs
            self._observations = state["observations"]
            if "action_masks" in state:
                self._masks.restore(state["action_masks"])
            self.episodes.episode_return[:] = state["episode_return"]
            self.episodes.episode_length[:] = state["episode_length"]
            self.actor.restore_state(state.get("recurrent_state"))
            return True
        self._observations, info = self.envs.reset(seed=self.config.seed + self.total_steps)
        self._masks.read(self._observations, info, self.total_steps)
        self.episodes.restart()
        self.actor.reset_state()
        return False


class StepsCollector(Collector):
    """``collect_mode="steps"``: fixed segments of envs that run on across updates.

    Every row is learned from (mask 1); an episode still running after the last row is cut
    there and bootstraps from V(s_T) (with a baseline).
    """

    def collect(self) -> Tuple[Batch, int]:
        batch = self._batch
        batch.mask.fill(1.0)
        batch.bootstrap.fill(0.0)
        self._begin()
        observations = self._observations
        for t in range(self._steps):
            step = self._step(t, observations)
            if step.any_done:
                self.episodes.finish(step.done)
                self._bootstrap_truncations(t, step)
            observations = step.observations
        self._bootstrap_last_row(~(batch.terminated[-1] | batch.truncated[-1]), observations)
        return self._finish(self._steps, observations)


class EpisodesCollector(Collector):
    """``collect_mode="episodes"``: one whole episode per env from a reset, then padding.

    An env's rows after its first episode ends are padding (mask 0) and its later
    episodes are not counted; collection stops when every env has finished. An episode
    still running at ``steps_per_update`` is truncated there (the cap acts as a time
    limit) and counted.
    """

    def collect(self) -> Tuple[Batch, int]:
        batch = self._batch
        for array in tf.nest.flatten(batch):
            array.fill(0)
        batch.action_masks.fill(True)  # padding rows allow every action
        self._observations, info = self.envs.reset()
        self._masks.read(self._observations, info, self.total_steps)
        self.episodes.restart()
        self.actor.reset_state()
        self._begin()
        first_episode = np.ones(self.envs.num_envs, bool)  # still in its first episode
        observations, steps_taken = self._observations, 0
        for t in range(self._steps):
            batch.mask[t] = first_episode
            step = self._step(t, observations)
            steps_taken += 1
            if step.dropped is not None:
                first_episode &= ~step.dropped
            if step.any_done:
                self.episodes.finish(step.done & first_episode)
                self._bootstrap_truncations(t, step)
                first_episode &= ~step.done
            observations = step.observations
            if not first_episode.any():
                break
        if steps_taken == self._steps:
            capped = ~(batch.terminated[-1] | batch.truncated[-1]) & first_episode
            batch.truncated[-1, capped] = True
            self.episodes.finish(capped)
            self._bootstrap_last_row(capped, observations)
        return self._finish(steps_taken, observations)


def _mask_out_episodes(batch: Batch, t: int, dropped: np.ndarray,
                       episode_length: np.ndarray) -> None:
    """Masks out, in the rows up to ``t``, the running episode of each ``dropped`` env
    (``episode_length`` steps long before row ``t``), which ends at row ``t``."""
    for i in np.flatnonzero(dropped):
        start = max(0, t - int(episode_length[i]))
        batch.mask[start:t + 1, i] = 0.0
        # Zeroed as well as masked: NaN * 0 is NaN in any sum that forgets the mask.
        batch.rewards[start:t + 1, i] = 0.0
        for observations in tf.nest.flatten(batch.observations):
            observations[start:t + 1, i] = 0
        batch.bootstrap[start:t + 1, i] = 0.0
        batch.terminated[t, i] = True


def _pickle_envs(vector_env: gym.vector.VectorEnv) -> Optional[bytes]:
    """The sub-envs of ``vector_env`` pickled, or None where pickling would not keep them."""
    envs = getattr(vector_env, "envs", None)
    try:
        return pickle.dumps(envs) if envs is not None and _pickled_faithfully(envs) else None
    except Exception:  # an env holding a handle that cannot be pickled
        return None


def _unpickle_envs(data: Optional[bytes]) -> Optional[List[gym.Env]]:
    """The envs :func:`_pickle_envs` kept, or None where there are none to continue."""
    envs = None if data is None else pickle.loads(data)
    return envs if envs is not None and _pickled_faithfully(envs) else None


def _pickled_faithfully(envs: List[gym.Env]) -> bool:
    """Whether pickling ``envs`` keeps their running state.

    An ``EzPickle`` env (Box2D's, MuJoCo's) pickles only its constructor's arguments:
    unpickled, it is a new env that was never reset (LunarLander's first step then fails),
    not the episode that was running.
    """
    return not any(isinstance(env.unwrapped, EzPickle) for env in envs)
