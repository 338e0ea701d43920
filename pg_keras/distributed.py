"""Synchronous data-parallel training on ``tf.distribute``: strategies and the worker group.

Each worker (one process, on one host) steps its own environments and computes gradients
on its own batch; the gradients are all-reduced and every replica applies the same update
(``Learner`` in learner.py does the math). This module builds the strategy from its name;
gives the learner every statistic that spans replicas (sums, two-pass moments over valid
steps, gathers, each replica's block of a batch), which a single replica computes by the
same code; tells a worker who it is in the group; and keeps the workers' training loops in
step: the env-step count that decides evaluations, checkpoints and the end, a stop request
from any worker, and the episode statistics of all workers. A single process is a
:class:`Group` of one, which the training loop talks to as it talks to a
:class:`GroupSync` of several.

A group is described by ``TF_CONFIG``, TensorFlow's own cluster description, for example
for two workers (the first one is the chief):

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from pg_keras.config import STRATEGIES, InputError, TrainingError

# Errors a collective raises when a peer of the group is gone, stalled past the timeout,
# or the group was aborted; none of them is recoverable without restarting the group.
GROUP_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.AbortedError, tf.errors.CancelledError)


def describe_group_error(error: tf.errors.OpError) -> str:
    """The cause in one of :data:`GROUP_ERRORS`' messages (TensorFlow's carries a graph
    traceback first): the line that says why the collective was aborted."""
    lines = [line.strip() for line in str(error.message).splitlines() if line.strip()]
    for line in lines:
        if "aborted by" in line or "unhealthy" in line or "timed out" in line.lower():
            return line[:300]
    return f"{type(error).__name__}: {lines[-1][:300] if lines else ''}"


def make_strategy(name: str, collective_timeout: Optional[float] = None
                  ) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of a name. Call it before any other TensorFlow work.

    Args:
        name: ``default`` (this process's default device), ``mirrored`` (every GPU of this
            host, or its CPU) or ``multi_worker`` (``MultiWorkerMirroredStrategy`` over the
            processes ``TF_CONFIG`` describes; without ``TF_CONFIG``, a group of one).
        collective_timeout: With ``multi_worker``, seconds after which a collective that
            waits for a peer fails instead of waiting forever (None: no limit; a dead peer
            is detected by TensorFlow's heartbeats within seconds either way).

    Raises:
        InputError: for an unknown name or a ``TF_CONFIG`` that is not valid JSON.
    """
    if name not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}; "
                         f"received strategy={name!r}")
    if collective_timeout is not None and not collective_timeout > 0:
        raise InputError(f"collective_timeout must be a positive number of seconds; received "
                         f"collective_timeout={collective_timeout!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    text = os.environ.get("TF_CONFIG", "")
    if text:
        try:
            cluster = json.loads(text)
            cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]
        except (ValueError, TypeError, KeyError) as error:
            raise InputError(f"TF_CONFIG must be JSON with 'cluster' and 'task' ('type', "
                             f"'index'); received TF_CONFIG={text!r} ({error!r})") from None
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def local_replicas(strategy: tf.distribute.Strategy) -> int:
    """How many replicas of ``strategy`` run on this worker (process)."""
    if strategy.num_replicas_in_sync == 1:
        return 1  # the default strategy has no worker_devices
    return len(strategy.extended.worker_devices)


# Cross-replica statistics. Called in replica context (inside ``strategy.run``); under the
# default strategy a single replica is the whole group and each reduction is the identity,
# so one and several replicas run the same code.


class Moments(NamedTuple):
    """Statistics of [T, B] columns over the valid steps of every replica.

    Attributes:
        count: Valid steps of all replicas.
        share: This replica's valid steps over ``count`` (0 if there are none).
        means: One mean per column.
        variances: One variance per column (the mean squared deviation).
    """

    count: tf.Tensor
    share: tf.Tensor
    means: Tuple[tf.Tensor, ...]
    variances: Tuple[tf.Tensor, ...]


def sum_replicas(values):
    """``values`` (a nest of tensors) summed over every replica, in one all-reduce."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)


def _masked_sum(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    # Select, not only multiply: a padded step may hold inf or NaN, and NaN * 0 is NaN.
    return tf.reduce_sum(tf.where(mask != 0, x * mask, tf.zeros_like(x)))


def masked_moments(mask: tf.Tensor, *columns: tf.Tensor) -> Moments:
    """Mean and variance of each column over the steps where ``mask`` is 1, on all replicas.

    Two passes (the sums, then the squared deviations from the mean), one all-reduce each:
    the variance never comes from E[x^2] - E[x]^2, which cancels in float32.

    Args:
        mask: [T, B] this replica's 1 for valid steps, 0 for padding.
        *columns: [T, B] float32 tensors of this replica's steps.
    """
    mask = tf.cast(mask, tf.float32)
    local = tf.reduce_sum(mask)
    sums = sum_replicas(tf.stack([local] + [_masked_sum(x, mask) for x in columns]))
    count = sums[0]
    means = tuple(tf.math.divide_no_nan(sums[i + 1], count) for i in range(len(columns)))
    squares = sum_replicas(tf.stack(
        [_masked_sum(tf.square(x - mean), mask) for x, mean in zip(columns, means)]))
    variances = tuple(tf.math.divide_no_nan(squares[i], count) for i in range(len(columns)))
    return Moments(count, tf.math.divide_no_nan(local, count), means, variances)


def all_gather(rows):
    """Every replica's rows, concatenated in replica order, in one all-gather.

    Args:
        rows: A nest of float32 tensors [N, ...] with the same N (this replica's rows).

    Returns:
        The same nest, each tensor [sum of all replicas' N, ...].
    """
    flat = tf.nest.flatten(rows)
    widths = [int(np.prod(x.shape[1:])) for x in flat]
    packed = tf.concat([tf.reshape(x, [-1, w]) for x, w in zip(flat, widths)], axis=1)
    packed = tf.distribute.get_replica_context().all_gather(packed, axis=0)
    parts = tf.split(packed, widths, axis=1)
    return tf.nest.pack_sequence_as(
        rows, [tf.reshape(p, [-1] + x.shape[1:].as_list()) for p, x in zip(parts, flat)])


def local_block(batch, local_replicas: int):
    """This replica's block of its worker's environments: each [T, B, ...] field of
    ``batch`` (a NamedTuple) cut to [T, B / local_replicas, ...], the columns of this
    replica's index among the worker's devices."""
    if local_replicas == 1:
        return batch
    index = tf.distribute.get_replica_context().replica_id_in_sync_group % local_replicas

    def block(x):
        per_replica = x.shape[1] // local_replicas
        x = tf.reshape(x, [x.shape[0], local_replicas, per_replica] + x.shape[2:])
        return tf.gather(x, index, axis=1)
    return type(batch)(*(tf.nest.map_structure(block, x) for x in batch))


def first_replica(strategy: tf.distribute.Strategy, values):
    """The first local replica's part of each per-replica value in ``values`` (a nest)."""
    return tf.nest.map_structure(lambda x: strategy.experimental_local_results(x)[0], values)


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place in its group: ``index`` in [0, ``count``), 0 is the chief."""

    index: int = 0
    count: int = 1

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_of(strategy: tf.distribute.Strategy) -> Worker:
    """This process's :class:`Worker` in ``strategy``'s group (a group of one if none)."""
    count = strategy.num_replicas_in_sync // local_replicas(strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    if count == 1 or resolver is None or resolver.task_type is None:
        return Worker(0, count)
    # The chief is worker 0; with a separate "chief" task the workers come after it.
    jobs = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return Worker(0, count)
    return Worker(resolver.task_id + (1 if "chief" in jobs else 0), count)


@dataclasses.dataclass
class GroupStep:
    """What the workers agree on after an update.

    Attributes:
        env_steps: Env steps of this update, summed over the workers.
        stop_signal: The signal number a worker was asked to stop with (SIGINT, SIGTERM),
            the largest one if several; 0 if none.
        solved: Whether a worker's callbacks asked the run to stop (``run.stop_training``,
            e.g. the chief's ``StopWhenSolved`` at an evaluation).
        episodes: Episodes that ended in this update, on all workers.
        return_mean, return_min, return_max, length_mean: Their statistics (NaN if none).
    """

    env_steps: int
    stop_signal: int
    solved: bool
    episodes: int
    return_mean: float
    return_min: float
    return_max: float
    length_mean: float

    def episode_record(self) -> dict:
        """The episode figures of an update's record (no statistics without episodes)."""
        record = {"episodes": self.episodes}
        if self.episodes:
            record.update(return_mean=self.return_mean, return_min=self.return_min,
                          return_max=self.return_max, length_mean=self.length_mean)
        return record


class Group:
    """A group of one: this process alone. :class:`GroupSync` is the group of several.

    The training loop talks to either the same way: once per update it agrees on the
    figures of the update, and the group decides when a callback's stop ends the run.

    Args:
        strategy: The strategy the update runs under.
        worker: This process's place (the chief of a group of one by default).
    """

    def __init__(self, strategy: tf.distribute.Strategy, worker: Worker = Worker()):
        self.strategy = strategy
        self.worker = worker

    def __call__(self, env_steps: int, stop_signal: int, returns: List[float],
                 lengths: List[int], solved: bool = False) -> GroupStep:
        """The update's figures: this process's own."""
        stats = {}
        if returns:
            stats = dict(return_mean=float(np.mean(returns)), return_min=float(np.min(returns)),
                         return_max=float(np.max(returns)), length_mean=float(np.mean(lengths)))
        nan = float("nan")
        return GroupStep(**{"return_mean": nan, "return_min": nan, "return_max": nan,
                            "length_mean": nan, **stats},
                         env_steps=env_steps, stop_signal=stop_signal, solved=solved,
                         episodes=len(returns))

    def ends_at_evaluation(self, solved: bool) -> bool:
        """Whether a stop asked by this process's callbacks ends the loop at once; a group
        of several ends together after the next update instead."""
        return solved

    def barrier(self) -> None:
        """Returns once every worker has called it (the group leaves together)."""

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turns a broken group into a ``TrainingError`` (nothing to do for one process)."""
        yield


class GroupSync(Group):
    """Agrees on the loop's figures across the workers, once per update (one all-gather).

    Args:
        strategy: The multi-worker strategy.
        worker: This process's place; default: read from ``strategy``.
    """

    _FIELDS = 8

    def __init__(self, strategy: tf.distribute.Strategy, worker: Optional[Worker] = None):
        super().__init__(strategy, worker or worker_of(strategy))
        self._local = local_replicas(strategy)
        self._gather = tf.function(self._gather_fn, input_signature=[
            tf.TensorSpec([self._FIELDS], tf.float64)])

    def _gather_fn(self, values):
        # Each replica contributes its worker's row (a worker with several devices, once
        # per device); the all-gather gives every worker every row.
        rows = self.strategy.run(lambda v: tf.identity(v)[None], args=(values,))
        return self.strategy.gather(rows, axis=0)

    def __call__(self, env_steps: int, stop_signal: int, returns: List[float],
                 lengths: List[int], solved: bool = False) -> GroupStep:
        """The update's figures, summed (or the extremes taken) over the workers."""
        returns = np.asarray(returns, np.float64)
        row = np.array([env_steps, stop_signal, len(returns), returns.sum(),
                        np.sum(lengths, dtype=np.float64),
                        returns.max(initial=-np.inf), -returns.min(initial=np.inf),
                        float(solved)])
        rows = self._gather(tf.constant(row)).numpy()
        sums = rows[:, :5].sum(axis=0) / self._local
        episodes = int(round(sums[2]))
        return GroupStep(
            env_steps=int(round(sums[0])), stop_signal=int(rows[:, 1].max()),
            solved=bool(rows[:, 7].max()), episodes=episodes,
            return_mean=sums[3] / episodes if episodes else float("nan"),
            return_min=-float(rows[:, 6].max()), return_max=float(rows[:, 5].max()),
            length_mean=sums[4] / episodes if episodes else float("nan"))

    def ends_at_evaluation(self, solved: bool) -> bool:
        """Never: the other workers learn of the stop at the next update's agreement."""
        return False

    def barrier(self) -> None:
        self._gather(tf.zeros([self._FIELDS], tf.float64)).numpy()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except GROUP_ERRORS as error:
            raise TrainingError(
                f"worker {self.worker.index} of {self.worker.count}: the group broke "
                f"({describe_group_error(error)}); the last checkpoint is intact: start "
                "every worker again with the same command to resume") from None


def make_group(strategy: tf.distribute.Strategy) -> Group:
    """The group this process trains in under ``strategy``: of one or of several workers."""
    worker = worker_of(strategy)
    return GroupSync(strategy, worker) if worker.count > 1 else Group(strategy, worker)
