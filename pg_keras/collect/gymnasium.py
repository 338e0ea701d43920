"""The gymnasium collectors: a vector env stepped in Python -> fixed-shape batches.

Two ways to cut experience into batches, one class each:

* :class:`StepsCollector` (``collect_mode="steps"``): the environments run on across
  updates; the batch is cut after ``steps_per_update`` steps and the cut episodes
  bootstrap from V(s_T).
* :class:`EpisodesCollector` (``collect_mode="episodes"``): each update resets the
  environments and runs each for one whole episode (at most ``steps_per_update`` steps);
  the rows after an environment's episode end are padding (mask 0), and collection stops
  as soon as every environment has finished.

``Collector(envs, learner, config)`` builds the one the config asks for. Both share the
step itself (:meth:`Collector._step`: act, step the envs, write the batch's row, check for
NaN and inf, count the episode), the bootstrap values and the checkpointed state. The
vector env must run in same-step autoreset mode (see :mod:`pg_keras.collect.gym_envs`).

A recurrent policy's state is carried across steps (and batches) for each env, with the
reset flag set where the env's episode ended at the last step (the models zero their
state there); each batch records the state it started from, which the update replays.
"""

from __future__ import annotations

import pickle
from typing import Dict, List, NamedTuple, Optional, Tuple

import gymnasium as gym
import numpy as np
import tensorflow as tf
from gymnasium.utils import EzPickle
from gymnasium.vector import AutoresetMode

from pg_keras import heads, spaces
from pg_keras.batch import Batch
from pg_keras.collect.episode_stats import EpisodeStats
from pg_keras.collect.nonfinite import NonFiniteGuard
from pg_keras.collect.numpy_policy import NumpyPolicy
from pg_keras.config import Config, InputError
from pg_keras.learner import Learner
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
    """Steps a vector env with the learner's policy and fills fixed-shape batches.

    ``Collector(envs, learner, config)`` returns a :class:`StepsCollector` or an
    :class:`EpisodesCollector`, as ``config.resolved_collect_mode`` says.

    Args:
        envs: A vector env in same-step autoreset mode (see :func:`make_vector_env`).
        learner: Supplies the sampling policy, the value model and the update.
        config: Hyperparameters.

    Raises:
        InputError: for a vector env in another autoreset mode.
    """

    def __new__(cls, envs: gym.vector.VectorEnv, learner: Learner, config: Config):
        if cls is Collector:
            episodes = config.resolved_collect_mode == "episodes"
            cls = EpisodesCollector if episodes else StepsCollector
        return super().__new__(cls)

    def __init__(self, envs: gym.vector.VectorEnv, learner: Learner, config: Config):
        if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise InputError("the vector env must use AutoresetMode.SAME_STEP; received "
                             f"autoreset_mode={envs.metadata.get('autoreset_mode')!r}")
        self.envs, self.learner, self.config = envs, learner, config
        num = envs.num_envs
        # A Dict or Tuple space's observations are kept as the flat dict {leaf name:
        # array} (pg_keras.spaces), in the batch and between steps.
        self._space = learner.policy.observation_space  # without an action_mask key
        self._nested = spaces.is_nested(self._space)
        self._batch = Batch(**{name: tf.nest.map_structure(
            lambda s: np.zeros(s.shape, s.dtype.as_numpy_dtype), spec)
            for name, spec in learner.batch_spec._asdict().items()})
        self._baseline = learner.has_baseline
        # The NumPy twin of the policy acts when it can: see NumpyPolicy. config.seed is
        # this worker's envs stream, from which its actor stream is derived.
        self._recurrent = learner.policy.recurrent
        self.numpy_policy = (NumpyPolicy(learner.policy, SeedStreams(config.seed).actor)
                             if NumpyPolicy.supports(learner.policy) and not self._recurrent
                             else None)
        # A recurrent policy's state for the next step (Policy.state_spec), or None.
        self._state = learner.policy.initial_state(num) if self._recurrent else None
        self._next_state = None  # the models' state after the step being taken
        # The legal actions of the observations at hand (see _read_masks).
        self._masks = np.ones((num, learner.head.mask_size or 0), bool)
        self._masked = False  # whether the env has given a mask yet
        self._observations, info = envs.reset(seed=config.seed)
        self._read_masks(self._observations, info, 0)
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
            (batch of numpy arrays matching ``learner.batch_spec``, env steps taken).
        """
        raise NotImplementedError

    def iterate(self) -> Tuple[Dict[str, tf.Tensor], int]:
        """Collects one batch and updates the learner on it.

        Returns:
            (the update's metrics, env steps taken).
        """
        batch, env_steps = self.collect()
        return self.learner.update(batch), env_steps

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        return self.episodes.pop()

    def _act(self, observations, mask=None) -> Tuple[np.ndarray, np.ndarray]:
        """(raw actions, env actions) sampled by the NumPy twin, else by TensorFlow; among
        the actions ``mask`` [num_envs, W] allows, when given."""
        if self.numpy_policy is not None:
            return self.numpy_policy(observations, mask)
        if self._recurrent:
            args = (observations, self._state) + (() if mask is None else (mask,))
            step = (self.learner.collect_step_recurrent if mask is None
                    else self.learner.collect_step_recurrent_masked)
            raw, env_action, next_state = step(*args)
            self._next_state = tf.nest.map_structure(lambda x: x.numpy(), next_state)
            return raw.numpy(), env_action.numpy()
        if mask is None:
            raw, env_action = self.learner.collect_step(observations)
        else:
            raw, env_action = self.learner.collect_step_masked(observations, mask)
        return raw.numpy(), env_action.numpy()

    def _read_masks(self, observations, info: dict, env_step: int) -> None:
        """Keeps the action masks the env gave with ``observations``: its Dict's
        ``action_mask`` key, or ``info["action_mask"]`` (Taxi's); every action is legal
        where it gave none.

        Raises:
            InputError: for a mask of the wrong shape, or one allowing no action.
        """
        num, width = self._masks.shape
        if not width:
            return
        mask = heads.env_action_mask(observations, info, num, width)
        if mask is None:
            self._masks[...] = True
            return
        self._masks[...] = mask
        self._masked = True
        empty = ~self._masks.any(axis=1)
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise InputError(f"env step {env_step}: environment {i} of {self.config.env_id} "
                             f"gave an action mask that allows no action; received "
                             f"{np.asarray(mask)[i].astype(int).tolist()}")

    def _values(self, observations, rows: np.ndarray) -> np.ndarray:
        """V(s) for the observations of the envs ``rows`` selects ([num_envs] bool); a
        recurrent value model continues those envs' episodes from the carried state."""
        if self.numpy_policy is not None and self.numpy_policy.has_value:
            return self.numpy_policy.values(observations)
        if self._recurrent:
            state = {"policy": tuple(s[rows] for s in self._state["policy"]),
                     "value": tuple(s[rows] for s in self._state["value"]),
                     "reset": np.zeros(int(rows.sum()), np.float32)}
            return self.learner.policy.value_step(
                spaces.as_tensors(self._space, observations), state).numpy()
        return self.learner.policy.value(spaces.as_tensors(self._space, observations)).numpy()

    def _begin(self) -> None:
        """Before the first step of a batch: the weights changed in the last update."""
        if self.numpy_policy is not None:
            self.numpy_policy.refresh()

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
        batch.action_masks[t] = self._masks
        raw, env_action = self._act(row, self._masks if self._masked else None)
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
        self._read_masks(next_obs, info, env_step)
        if dropped is not None:
            self._masks[dropped] = True  # reset below; their new masks are not read
            next_obs, terminated, truncated = self._drop_episodes(
                t, dropped, next_obs, terminated, truncated)
            reward = np.where(dropped, 0.0, reward)
            done = terminated | truncated
            any_done = done.any()
        self.episodes.add(reward)
        if self._recurrent:
            # A dropped episode ends too (the batch marks it terminated): its state goes.
            ended = done if dropped is None else done | dropped
            self._state = {**self._next_state, "reset": ended.astype(np.float32)}
        return _Step(next_obs, terminated, truncated, done, any_done, info, dropped)

    def _drop_episodes(self, t, dropped, next_obs, terminated, truncated):
        """Masks out the current episode of each ``dropped`` env and resets those envs."""
        batch = self._batch
        for i in np.flatnonzero(dropped):
            start = max(0, t - int(self.episodes.episode_length[i]))
            batch.mask[start:t + 1, i] = 0.0
            # Zeroed as well as masked: NaN * 0 is NaN in any sum that forgets the mask.
            batch.rewards[start:t + 1, i] = 0.0
            for observations in tf.nest.flatten(batch.observations):
                observations[start:t + 1, i] = 0
            batch.bootstrap[start:t + 1, i] = 0.0
            batch.terminated[t, i] = True
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
            self._batch.bootstrap[t, cut] = self._values(final, cut)

    def _bootstrap_last_row(self, still_open: np.ndarray, observations) -> None:
        """The episodes ``still_open`` after the last row bootstrap from V(s_T)."""
        if self._baseline and still_open.any():
            self._batch.bootstrap[-1, still_open] = self._values(spaces.nest_map(
                lambda x: np.asarray(x)[still_open], spaces.flatten(self._space, observations)),
                still_open)

    def _record_initial_state(self) -> None:
        """The batch keeps the state its first row starts from (a recurrent policy's)."""
        if self._recurrent:
            tf.nest.map_structure(lambda kept, now: kept.__setitem__(0, now),
                                  self._batch.initial_state, self._state)

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
        envs = getattr(self.envs, "envs", None)
        try:
            envs = pickle.dumps(envs) if envs is not None and _pickled_faithfully(envs) else None
        except Exception:  # an env holding a handle that cannot be pickled
            envs = None
        rng = self.numpy_policy.rng.bit_generator.state if self.numpy_policy else None
        return {"observations": self._observations, "envs": envs, "numpy_rng": rng,
                "action_masks": (self._masks.copy(), self._masked),
                "episode_return": self.episodes.episode_return.copy(),
                "episode_length": self.episodes.episode_length.copy(),
                "total_steps": self.total_steps,
                "recurrent_state": tf.nest.map_structure(np.copy, self._state)}

    def restore(self, state: dict) -> bool:
        """Continues from a :meth:`state`.

        Returns:
            True if the environments were restored exactly; False if they had to be reset
            (then the run is not bit-identical to an uninterrupted one).
        """
        self.total_steps = state["total_steps"]
        if self.numpy_policy is not None and state.get("numpy_rng") is not None:
            self.numpy_policy.rng.bit_generator.state = state["numpy_rng"]
        envs = None if state["envs"] is None else pickle.loads(state["envs"])
        if envs is not None and _pickled_faithfully(envs):
            self.envs.envs = envs
            self._observations = state["observations"]
            if "action_masks" in state:
                self._masks[...], self._masked = state["action_masks"]
            self.episodes.episode_return[:] = state["episode_return"]
            self.episodes.episode_length[:] = state["episode_length"]
            if self._recurrent and state.get("recurrent_state") is not None:
                self._state = tf.nest.map_structure(np.copy, state["recurrent_state"])
            return True
        self._observations, info = self.envs.reset(seed=self.config.seed + self.total_steps)
        self._read_masks(self._observations, info, self.total_steps)
        self.episodes.restart()
        if self._recurrent:
            self._state = self.learner.policy.initial_state(self.envs.num_envs)
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
        self._record_initial_state()
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
        self._read_masks(self._observations, info, self.total_steps)
        self.episodes.restart()
        if self._recurrent:
            self._state = self.learner.policy.initial_state(self.envs.num_envs)
        self._begin()
        self._record_initial_state()
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


def _pickled_faithfully(envs: List[gym.Env]) -> bool:
    """Whether pickling ``envs`` keeps their running state.

    An ``EzPickle`` env (Box2D's, MuJoCo's) pickles only its constructor's arguments:
    unpickled, it is a new env that was never reset (LunarLander's first step then fails),
    not the episode that was running.
    """
    return not any(isinstance(env.unwrapped, EzPickle) for env in envs)
