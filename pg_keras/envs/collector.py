"""The compiled path: rollout and update as one ``tf.function``, optionally under XLA.

The rollout is a ``tf.while_loop`` over a graph-native env (this package) that samples
from the learner's policy; the batch it builds is the same :class:`~pg_keras.batch.Batch`
the gymnasium collector builds, and it goes to the same ``Learner.update``. One
algorithm, two ways to collect: no math is written twice.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from pg_keras.config import Config, InputError
from pg_keras.envs.core import Env, EnvState, autoreset_step
from pg_keras.envs.registry import REGISTRY, ids
from pg_keras.batch import Batch
from pg_keras.learner import Learner


def make_compiled_env(env_id: str) -> Env:
    """The graph-native env of ``env_id``.

    Raises:
        InputError: if there is none, naming the ones there are.
    """
    if env_id not in REGISTRY:
        raise InputError(f"backend='compiled' needs a graph-native env; received "
                         f"env_id={env_id!r}; available: {', '.join(ids())}")
    return REGISTRY[env_id]()


class _EpisodeLog:
    """Finished episodes' returns and lengths, in plain lists.

    Not lists held by the tf.Module directly: the Module wraps those in trackable lists,
    whose ``extend`` tracks each element (19 ms per update at 2,048 envs, measured).
    """

    def __init__(self):
        self.returns: List[float] = []
        self.lengths: List[int] = []


class CompiledCollector(tf.Module):
    """Collects with a graph-native env and updates the learner, in one compiled call.

    Its state (the envs' states, the running episode counters, the step counter that
    seeds every draw) lives in ``tf.Variable`` s; :meth:`state` and :meth:`restore` carry it
    through checkpoints so that a resumed run repeats an uninterrupted one.

    Args:
        env: A graph-native env (see :func:`make_compiled_env`).
        learner: The learner whose policy samples and whose update runs.
        config: Hyperparameters; ``collect_mode`` must resolve to ``steps``.
    """

    def __init__(self, env: Env, learner: Learner, config: Config):
        super().__init__(name="compiled_collector")
        if config.resolved_collect_mode != "steps":
            raise InputError("backend='compiled' collects fixed segments and bootstraps them; "
                             "it needs baseline=True and collect_mode 'steps' or 'auto'; "
                             f"received baseline={config.baseline}, "
                             f"collect_mode={config.collect_mode!r}")
        self.env, self.learner, self.config = env, learner, config
        self.numpy_policy = None  # the collector interface of the gymnasium path
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
        self.total_steps = 0
        self._episodes = _EpisodeLog()
        # With jit_compile the whole iteration is one XLA program. Without it (and with
        # xla_rollout), XLA compiles the rollout alone, an inner function whose many small
        # elementwise env ops it fuses, and TensorFlow's kernels run the update.
        # No autograph (see Learner.update): the loop is an explicit tf.while_loop.
        self._rollout = (tf.function(self._collect, jit_compile=True, autograph=False)
                         if config.xla_rollout and not config.jit_compile else self._collect)
        self.iterate_fn = tf.function(self._iterate, jit_compile=config.jit_compile,
                                      autograph=False)

    def _collect(self) -> Tuple[Batch, tf.Tensor, tf.Tensor, tf.Tensor]:
        """The rollout, in graph: (batch, done [T, B], finished returns, finished lengths)."""
        cfg, env, policy = self.config, self.env, self.learner.policy
        steps, num = cfg.steps_per_update, cfg.num_envs
        baseline = self.learner.has_baseline
        obs_shape = tuple(env.observation_space.shape)
        base = tf.random.experimental.stateless_fold_in(
            self._seed, tf.cast(self._steps % (2**31 - 1), tf.int32))

        def body(t, state, ep_return, ep_length, arrays):
            obs = env.observe(state)
            sample_seed = tf.random.experimental.stateless_fold_in(base, 2 * t)
            raw, env_action = policy.sample(obs, sample_seed)
            state, next_obs, reward, terminated, truncated, final_obs = autoreset_step(
                env, state, env_action, tf.random.experimental.stateless_fold_in(base, 2 * t + 1))
            done = terminated | truncated
            cut = truncated & ~terminated
            if baseline:
                bootstrap = tf.cond(tf.reduce_any(cut),
                                    lambda: tf.where(cut, policy.value(final_obs), 0.0),
                                    lambda: tf.zeros([num]))
            else:
                bootstrap = tf.zeros([num])
            episode_steps = ep_length
            ep_return += reward
            ep_length += 1
            # Only what cannot be derived after the loop is written step by step.
            row = (obs, raw, reward, terminated, truncated, bootstrap, episode_steps, ep_return)
            arrays = [a.write(t, x) for a, x in zip(arrays, row)]
            ep_return = tf.where(done, 0.0, ep_return)
            ep_length = tf.where(done, 0, ep_length)
            return t + 1, state, ep_return, ep_length, arrays

        dtypes = (tf.float32, self.learner.head.raw_dtype, tf.float32, tf.bool, tf.bool,
                  tf.float32, tf.int32, tf.float32)
        arrays = [tf.TensorArray(d, size=steps, element_shape=None) for d in dtypes]
        state = EnvState(tf.identity(self._physics), tf.identity(self._elapsed))
        _, state, ep_return, ep_length, arrays = tf.while_loop(
            lambda t, *_: t < steps, body,
            (tf.constant(0), state, tf.identity(self._episode_return),
             tf.identity(self._episode_length), arrays))
        (obs, raw, reward, terminated, truncated, bootstrap, episode_steps,
         returns) = [a.stack() for a in arrays]
        done = terminated | truncated
        lengths = episode_steps + 1
        if baseline:
            # The cut at the end of the segment bootstraps from V(s_T).
            last_open = ~done[-1]
            last = tf.where(last_open, policy.value(env.observe(state)), bootstrap[-1])
            bootstrap = tf.concat([bootstrap[:-1], last[None]], axis=0)
        self._physics.assign(state.physics)
        self._elapsed.assign(state.elapsed)
        self._episode_return.assign(ep_return)
        self._episode_length.assign(ep_length)
        self._steps.assign_add(1)
        batch = Batch(observations=tf.ensure_shape(obs, (steps, num) + obs_shape),
                      actions=raw, rewards=reward, terminated=terminated, truncated=truncated,
                      bootstrap=bootstrap, mask=tf.ones([steps, num]),
                      episode_steps=episode_steps)
        return batch, done, returns, lengths

    def _iterate(self):
        batch, done, returns, lengths = self._rollout()
        metrics = self.learner.update(batch)
        return metrics, done, returns, lengths

    def iterate(self) -> Tuple[Dict[str, tf.Tensor], int]:
        """Collects one segment and updates the learner on it.

        Returns:
            (the update's metrics, env steps taken).
        """
        metrics, done, returns, lengths = self.iterate_fn()
        done = done.numpy()
        self._episodes.returns.extend(returns.numpy()[done].astype(float).tolist())
        self._episodes.lengths.extend(lengths.numpy()[done].astype(int).tolist())
        env_steps = self.config.steps_per_iteration
        self.total_steps += env_steps
        return metrics, env_steps

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        log = self._episodes
        out = (log.returns, log.lengths)
        log.returns, log.lengths = [], []
        return out

    def state(self) -> dict:
        return {"total_steps": self.total_steps,
                "variables": [np.asarray(v.numpy()) for v in self._variables()]}

    def restore(self, state: dict) -> bool:
        self.total_steps = state["total_steps"]
        for variable, value in zip(self._variables(), state["variables"]):
            variable.assign(value)
        return True

    def _variables(self):
        return [self._physics, self._elapsed, self._episode_return, self._episode_length,
                self._steps]
