"""The compiled collector: a graph-native env rolled out in a ``tf.while_loop``.

The rollout samples from a policy and builds the same :class:`~pg_keras.batch.Batch` the
gymnasium collectors build. :meth:`CompiledCollector.rollout` is traceable, so that the
learner can compose it with its update in one ``tf.function`` (``Learner.fuse``;
optionally one XLA program): one algorithm, two ways to collect, no math written twice.
"""

from __future__ import annotations

from typing import List, NamedTuple, Tuple

import numpy as np
import tensorflow as tf

from pg_keras.batch import Batch
from pg_keras.config import Config, InputError
from pg_keras.envs.core import Env, EnvState, autoreset_step
from pg_keras.envs.registry import REGISTRY, ids
from pg_keras.policy import Policy


def make_compiled_env(env_id: str) -> Env:
    """The graph-native env of ``env_id``.

    Raises:
        InputError: if there is none, naming the ones there are.
    """
    if env_id not in REGISTRY:
        raise InputError(f"backend='compiled' needs a graph-native env; received "
                         f"env_id={env_id!r}; available: {', '.join(ids())}")
    return REGISTRY[env_id]()


class EpisodeEnds(NamedTuple):
    """Where a rollout's episodes ended, for :meth:`CompiledCollector.record`."""

    done: tf.Tensor  # [T, B] bool, an episode ended at this step
    returns: tf.Tensor  # [T, B] float32, the episode's return so far, after this step
    lengths: tf.Tensor  # [T, B] int32, the episode's length so far, after this step


class Segment(NamedTuple):
    """What one graph rollout returns."""

    batch: Batch
    ends: EpisodeEnds


class _EpisodeLog:
    """Finished episodes' returns and lengths, in plain lists.

    Not lists held by the tf.Module directly: the Module would wrap those in trackable
    lists, whose ``extend`` tracks each element.
    """

    def __init__(self):
        self.returns: List[float] = []
        self.lengths: List[int] = []


class CompiledCollector(tf.Module):
    """Collects with a graph-native env, in graph.

    Its state (the envs' states, the running episode counters, the step counter that
    seeds every draw) lives in ``tf.Variable`` s; :meth:`state` and :meth:`restore` carry it
    through checkpoints so that a resumed run repeats an uninterrupted one.

    Args:
        env: A graph-native env (see :func:`make_compiled_env`).
        policy: The policy that samples; its value model bootstraps cut episodes.
        config: Hyperparameters; ``collect_mode`` must resolve to ``steps``.
    """

    def __init__(self, env: Env, policy: Policy, config: Config):
        super().__init__(name="compiled_collector")
        if config.resolved_collect_mode != "steps":
            raise InputError("backend='compiled' collects fixed segments and bootstraps them; "
                             "it needs baseline=True and collect_mode 'steps' or 'auto'; "
                             f"received baseline={config.baseline}, "
                             f"collect_mode={config.collect_mode!r}")
        self.env, self.policy, self.config = env, policy, config
        self.numpy_policy = None  # as the gymnasium collectors: no NumPy twin here
        self.dropped_episodes = 0
        num = config.num_envs
        self._seed = tf.constant([config.seed, 20_240_601], tf.int32)
        state = env.reset(num, tf.random.experimental.stateless_fold_in(self._seed, -1))
        self._physics = tf.Variable(state.physics, trainable=False, name="physics")
        self._elapsed = tf.Variable(state.elapsed, trainable=False, name="elapsed")
        self._episode_return = tf.Variable(tf.zeros([num]), trainable=False, name="ep_return")
        self._episode_length = tf.Variable(tf.zeros([num], tf.int32), trainable=False,
                                           name="ep_length")
        self._steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps")
        # A recurrent policy's state for the next step (Policy.state_spec), carried across
        # segments as the envs' states are; None for a feed-forward policy.
        self._recurrent_state = None
        if policy.recurrent:
            self._recurrent_state = tf.nest.map_structure(
                lambda x: tf.Variable(x, trainable=False, name="recurrent_state"),
                policy.initial_state(num))
        self.total_steps = 0
        self._episodes = _EpisodeLog()
        # With jit_compile the whole iteration is one XLA program. Without it (and with
        # xla_rollout), XLA compiles the rollout alone, an inner function whose many small
        # elementwise env ops it fuses, and TensorFlow's kernels run the update.
        # No autograph (see Learner.update): the loop is an explicit tf.while_loop.
        xla_rollout = config.xla_rollout and not config.jit_compile
        self._rollout_fn = tf.function(self._rollout, autograph=False,
                                       jit_compile=xla_rollout or config.jit_compile)
        self._rollout_in_graph = self._rollout_fn if xla_rollout else self._rollout

    def collect(self) -> Tuple[Batch, int]:
        """Collects one segment (the rollout alone, in one compiled call).

        Returns:
            (batch of tensors matching the learner's ``batch_spec``, env steps taken).
        """
        segment = self._rollout_fn()
        return segment.batch, self.record(segment.ends)

    def rollout(self) -> Segment:
        """One segment, traced into the caller's graph (``Learner.fuse``): with
        ``xla_rollout`` a call of its own XLA-compiled function. Pass its ``ends`` to
        :meth:`record` once it has run."""
        return self._rollout_in_graph()

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        log = self._episodes
        out = (log.returns, log.lengths)
        log.returns, log.lengths = [], []
        return out

    def state(self) -> dict:
        """Everything needed to continue collecting exactly where this collector is."""
        return {"total_steps": self.total_steps,
                "variables": [np.asarray(v.numpy()) for v in self._variables()]}

    def restore(self, state: dict) -> bool:
        """Continues from a :meth:`state`; always exactly (returns True)."""
        self.total_steps = state["total_steps"]
        for variable, value in zip(self._variables(), state["variables"]):
            variable.assign(value)
        return True

    def _variables(self):
        return [self._physics, self._elapsed, self._episode_return, self._episode_length,
                self._steps] + ([] if self._recurrent_state is None
                                else tf.nest.flatten(self._recurrent_state))

    def reseed(self, sampling_seed: int) -> None:
        """Keys the rollout's draws by ``sampling_seed`` too (a worker that resumes without
        its saved state, whose step counter starts again at 0). Before the first rollout:
        the key is a constant of its graph."""
        self._seed = tf.random.experimental.stateless_fold_in(
            self._seed, sampling_seed % (2**31 - 1))

    def record(self, ends: EpisodeEnds) -> int:
        """Records a segment's finished episodes; returns the env steps it took."""
        done = ends.done.numpy()
        self._episodes.returns.extend(ends.returns.numpy()[done].astype(float).tolist())
        self._episodes.lengths.extend(ends.lengths.numpy()[done].astype(int).tolist())
        env_steps = self.config.steps_per_iteration
        self.total_steps += env_steps
        return env_steps

    def _rollout(self) -> Segment:
        """The rollout, in graph: ``steps_per_update`` steps of every env."""
        steps, num = self.config.steps_per_update, self.config.num_envs
        base = tf.random.experimental.stateless_fold_in(
            self._seed, tf.cast(self._steps % (2**31 - 1), tf.int32))
        dtypes = (tf.float32, self.policy.head.raw_dtype, tf.float32, tf.bool, tf.bool,
                  tf.float32, tf.int32, tf.float32)
        arrays = [tf.TensorArray(d, size=steps, element_shape=None) for d in dtypes]
        state = EnvState(tf.identity(self._physics), tf.identity(self._elapsed))
        recurrent = self._recurrent_state is not None
        # () for a feed-forward policy: a loop variable that holds nothing.
        initial = tf.nest.map_structure(tf.identity, self._recurrent_state) if recurrent else ()
        _, state, episode_return, episode_length, arrays, carried = tf.while_loop(
            lambda t, *_: t < steps, lambda *loop: self._rollout_step(base, *loop),
            (tf.constant(0), state, tf.identity(self._episode_return),
             tf.identity(self._episode_length), arrays, initial))
        (obs, raw, reward, terminated, truncated, bootstrap, episode_steps,
         returns) = [a.stack() for a in arrays]
        done = terminated | truncated
        if self.policy.has_value:
            # The cut at the end of the segment bootstraps from V(s_T).
            value = self._value(self.env.observe(state), carried if recurrent else None)
            last = tf.where(~done[-1], value, bootstrap[-1])
            bootstrap = tf.concat([bootstrap[:-1], last[None]], axis=0)
        self._physics.assign(state.physics)
        self._elapsed.assign(state.elapsed)
        self._episode_return.assign(episode_return)
        self._episode_length.assign(episode_length)
        self._steps.assign_add(1)
        if recurrent:
            tf.nest.map_structure(lambda v, x: v.assign(x), self._recurrent_state, carried)
        obs_shape = tuple(self.env.observation_space.shape)
        batch = Batch(observations=tf.ensure_shape(obs, (steps, num) + obs_shape),
                      actions=raw, rewards=reward, terminated=terminated, truncated=truncated,
                      bootstrap=bootstrap, mask=tf.ones([steps, num]),
                      episode_steps=episode_steps,
                      action_masks=tf.ones([steps, num, self.policy.head.mask_size or 0],
                                           tf.bool),
                      initial_state=(tf.nest.map_structure(lambda x: x[None], initial)
                                     if recurrent else tf.zeros([1, num, 0])))
        return Segment(batch, EpisodeEnds(done, returns, episode_steps + 1))

    def _value(self, observations, carried):
        """V(s) in return units; a recurrent value model continues from ``carried``."""
        if carried is None:
            carried = self.policy.initial_state(self.config.num_envs)
        return self.policy.value(observations, carried)

    def _rollout_step(self, base, t, state, episode_return, episode_length, arrays, carried):
        """The while loop's body: act, step with autoreset, write row ``t``; a recurrent
        policy's state is ``carried`` (reset where the last step ended an episode)."""
        env, policy, num = self.env, self.policy, self.config.num_envs
        obs = env.observe(state)
        seed = tf.random.experimental.stateless_fold_in(base, 2 * t)
        recurrent = self._recurrent_state is not None
        raw, env_action, following = policy.sample(
            obs, seed, policy.all_legal(num), carried if recurrent else policy.initial_state(num))
        if recurrent:
            # The loop and the batch keep static shapes: [num_envs, ...].
            raw, env_action, following = tf.nest.map_structure(
                lambda x: tf.reshape(x, [num] + x.shape[1:]), (raw, env_action, following))
        state, _, reward, terminated, truncated, final_obs = autoreset_step(
            env, state, env_action, tf.random.experimental.stateless_fold_in(base, 2 * t + 1))
        done = terminated | truncated
        cut = truncated & ~terminated
        bootstrap = tf.zeros([num])
        if policy.has_value:
            # A truncated episode continues at its final observation: no reset.
            after = {**following, "reset": tf.zeros([num])} if recurrent else None
            bootstrap = tf.cond(tf.reduce_any(cut),
                                lambda: tf.where(cut, self._value(final_obs, after), 0.0),
                                lambda: tf.zeros([num]))
        episode_steps = episode_length
        episode_return += reward
        episode_length += 1
        # Only what cannot be derived after the loop is written step by step.
        row = (obs, raw, reward, terminated, truncated, bootstrap, episode_steps, episode_return)
        arrays = [a.write(t, x) for a, x in zip(arrays, row)]
        episode_return = tf.where(done, 0.0, episode_return)
        episode_length = tf.where(done, 0, episode_length)
        if recurrent:
            carried = {**following, "reset": tf.cast(done, tf.float32)}
        return t + 1, state, episode_return, episode_length, arrays, carried
