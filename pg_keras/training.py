"""The training loop: build, then collect -> learn -> report -> triggers, over typed state.

:func:`train` builds the learner, the collector, the run directory and the reporter, then
runs :class:`_Loop`: each update collects a batch, learns from it, agrees on its figures
with the group (a single process is a group of one), reports the record (to the run
directory and the callbacks, pg_keras.callbacks), and fires the triggers due at that many
env steps (evaluation, checkpoint); a callback's ``run.stop_training`` ends it. The loop's
state is a :class:`~pg_keras.run_dir.LoopState`, checkpointed with the weights.

With a ``root_dir`` the run directory (``pg_keras.run_dir``) holds everything needed to
resume, evaluate, export and plot the run. Calling :func:`train` again on the same
``root_dir`` resumes from its newest checkpoint that restores completely; a finished run
only reports its result, and goes on when ``total_steps`` grows.

In a group of workers (``MultiWorkerMirroredStrategy``), every worker calls :func:`train`
with the same config and root_dir: each steps its own ``num_envs`` environments, seeded
apart (``pg_keras.seeding``), and the update is the one of all workers' batches together;
``total_steps`` and every schedule count the env steps of all workers. Only the chief
(worker 0) evaluates and writes the run directory; the others restore from it (it must be
on a filesystem they share) and save their checkpoints to a scratch directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import sys
import threading
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pg_keras import distributed, faults, networks, reporting, run_dir
from pg_keras.callbacks import (Callback, CallbackList, Checkpointing, HandleSignals,
                                StopWhenSolved)
from pg_keras.checkpoint import Checkpointer
from pg_keras.config import Config, InputError, TrainingError
from pg_keras.learner import Learner, build_learner
from pg_keras.policy import Policy
from pg_keras.networks import ModelOrFactory
from pg_keras.collect import (Collector, CollectorProtocol, CompiledCollector, EnvOptions,
                              NonFiniteError, check_env, evaluate, make_compiled_env,
                              make_vector_env, split_env_id)
from pg_keras.run_dir import Evaluation, LoopState
from pg_keras.seeding import SeedStreams


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        policy: The trained policy (``policy.predict(observations)``).
        learner: Models, optimizers and the update, for further training or inspection.
        history: One record per update: env steps, episode returns, losses, gradient norms.
        evaluations: Every evaluation, the final one last.
        solved_at: Env steps at the first evaluation whose mean reached the target
            (``StopWhenSolved``'s ``target_return``, or the env's registered
            ``reward_threshold``), or None.
        env_steps: Environment steps taken.
        wall_seconds: Duration of the loop (summed over resumptions).
        interrupted: The signal's name (``"SIGINT"``, ``"SIGTERM"``) when a signal stopped
            the run early (of any worker, in a group); None when it ran to the end.
        worker: This process's place in its group of workers (see ``strategy``).
    """

    policy: Policy
    learner: Learner
    history: List[Dict[str, float]]
    evaluations: List[Evaluation]
    solved_at: Optional[int]
    env_steps: int
    wall_seconds: float
    interrupted: Optional[str] = None
    worker: distributed.Worker = distributed.Worker()

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return self.evaluations[-1].mean_return

    @property
    def best_evaluation(self) -> Optional[Evaluation]:
        """The evaluation with the highest mean (the first of equals), or None; one
        without a finite episode is never the best of others."""
        return max(self.evaluations, key=_mean_or_lowest, default=None)

    def summary(self) -> dict:
        """The figures ``summary.json`` holds (a NaN is written as null: the final
        evaluation's ``nonfinite_episodes`` says when no episode's return was finite)."""
        final = self.evaluations[-1] if self.evaluations else Evaluation(0, None, None)
        best = self.best_evaluation
        return {"final_return_mean": final.mean_return, "final_return_std": final.std_return,
                "eval_mode": self.learner.config.eval_mode,
                "final_nonfinite_episodes": final.nonfinite_episodes,
                "final_evaluation": dataclasses.asdict(final) if self.evaluations else None,
                "best_evaluation": dataclasses.asdict(best) if best else None,
                "interrupted": self.interrupted,
                "env_steps": self.env_steps, "wall_seconds": self.wall_seconds,
                "steps_per_second": self.env_steps / max(self.wall_seconds, 1e-9),
                "solved_at": self.solved_at, "updates": int(self.learner.updates.numpy()),
                "skipped_updates": int(self.learner.skipped_updates.numpy())}


def evaluation_of(env_steps: int, returns: np.ndarray) -> Evaluation:
    """The evaluation of episode ``returns``: mean and std of the finite ones, and how many
    were not (an episode of NaN rewards, dropped in training with ``on_nonfinite="drop"``,
    would make every figure NaN)."""
    returns = np.asarray(returns, np.float64)
    finite = returns[np.isfinite(returns)]
    if not finite.size:
        return Evaluation(env_steps, float("nan"), float("nan"), int(returns.size))
    return Evaluation(env_steps, float(np.mean(finite)), float(np.std(finite)),
                      int(returns.size - finite.size))


def _mean_or_lowest(evaluation: Evaluation) -> float:
    mean = evaluation.mean_return
    return mean if np.isfinite(mean) else -np.inf


def reward_threshold(env_id: str) -> Optional[float]:
    """The registered ``reward_threshold`` of an env id, or None."""
    return gym.spec(split_env_id(env_id)).reward_threshold


def train(config: Config, *, callbacks: Sequence[Callback] = (), root_dir: Optional[str] = None,
          export_dir: Optional[str] = None, policy_network: Optional[ModelOrFactory] = None,
          value_network: Optional[ModelOrFactory] = None,
          strategy: Optional[tf.distribute.Strategy] = None) -> TrainResult:
    """Trains a policy with REINFORCE (with a value baseline unless ``config.baseline`` is
    off) and returns a :class:`TrainResult`.

    Args:
        config: Hyperparameters.
        callbacks: ``Callback`` instances, e.g. ``ProgressLogger()`` (pg_keras.callbacks).
        root_dir: Run directory (module docstring), resumed from its newest intact checkpoint
            if it holds a run of the same config (or one that differs only in
            ``total_steps``, ``eval_every`` or the checkpoint interval); None: no files.
        export_dir: Where the chief exports the final policy as a SavedModel, as the
            launcher does (``pg_keras.run_dir.export``), unless a signal stopped the run;
            checked before training (``pg_keras.run_dir.check_export``). None: no export.
        policy_network: Your own policy ``keras.Model`` or a factory for one
            (``pg_keras.networks``); default: an MLP.
        value_network: Same for the value model.
        strategy: The ``tf.distribute`` strategy of the update (groups of workers: module
            docstring); default: the current one.

    Raises:
        InputError: for bad input (env id, spaces, models, callbacks, a root_dir holding
            another config or in use, an export_dir holding another config's policy);
            nothing is written then.
        TrainingError: on non-finite env data or updates, a lost worker, a failed export.
    """
    callbacks, checkpointing, signals = _callbacks(callbacks, root_dir)
    config, options = _checked(config, policy_network, value_network, callbacks, root_dir,
                               checkpointing.every)
    group = distributed.make_group(strategy or tf.distribute.get_strategy())
    streams = SeedStreams(config.seed, group.worker.index)
    exporting = export_dir if group.worker.is_chief else None
    replace_export = run_dir.check_export(exporting, config, checkpointing.overwrite)
    with contextlib.ExitStack() as cleanup, group.guard():
        # Everything that can refuse the input is built before anything is written.
        learner, collector = _build(config, streams, group.strategy, policy_network,
                                    value_network, cleanup)
        run, checkpointer = run_dir.open_run(root_dir, config, checkpointing.overwrite,
                                             group.worker, learner, cleanup)
        reporter = reporting.Reporter([], run and run.metrics, run and run.log_evaluation,
                                      callbacks)
        with _StopOnSignals(enabled=signals.enabled) as stop:
            result = _Loop(config, learner, collector, group, streams, reporter, run,
                           checkpointer, options).run(stop, callbacks)
    if exporting and not result.interrupted:
        run_dir.export(result.policy, config, exporting, replace_export, root_dir)
    callbacks.on_train_end(result)
    return result


def _callbacks(callbacks, root_dir) -> Tuple[CallbackList, Checkpointing, HandleSignals]:
    """The run's callbacks, and its checkpointing and signal settings (given or default)."""
    callbacks = CallbackList(callbacks)
    checkpointing = callbacks.find(Checkpointing)
    if checkpointing is not None and not root_dir:
        raise InputError(f"Checkpointing needs a root_dir; received root_dir={root_dir!r}")
    return (callbacks, checkpointing or Checkpointing(),
            callbacks.find(HandleSignals) or HandleSignals())


def _checked(config, policy_network, value_network, callbacks, root_dir, checkpoint_every):
    """The config with its models recorded, and the loop's options; refuses bad input,
    warns of episodes longer than a segment, and makes TensorFlow's ops deterministic if
    the config asks."""
    stop_when_solved = callbacks.find(StopWhenSolved)
    spec = gym.spec(split_env_id(config.env_id))  # an unknown env id fails here, first
    if config.backend == "gymnasium":
        check_env(config)  # then wrappers and env kwargs, on one env
    config = networks.record_models(config, policy_network, value_network)
    target_return = spec.reward_threshold
    if stop_when_solved is not None:
        stop_when_solved.check(config, target_return)
        if stop_when_solved.target_return is not None:
            target_return = stop_when_solved.target_return
    time_limit = config.env_kwargs.get("max_episode_steps", spec.max_episode_steps)
    if (config.resolved_collect_mode == "episodes" and time_limit
            and time_limit > config.steps_per_update):
        warnings.warn(
            f"collect_mode='episodes' waits at most steps_per_update={config.steps_per_update} "
            f"steps for an episode, but {config.env_id} runs up to {time_limit}: longer episodes "
            f"are cut there as if by a time limit; set steps_per_update={time_limit} for whole "
            "episodes", stacklevel=3)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return config, _Options(checkpoint_every, target_return, stop_when_solved is not None,
                            root_dir)


def _build(config, streams, strategy, policy_network, value_network, cleanup):
    """The learner and the collector of this worker (the environments close with ``cleanup``)."""
    compiled = config.backend == "compiled"
    if compiled:
        graph_env = make_compiled_env(config.env_id)
    envs = make_vector_env(EnvOptions.of(config), 1 if compiled else config.num_envs,
                           "sync" if compiled else config.vectorization)
    cleanup.callback(envs.close)
    with _global_streams_seeded(streams.init):
        learner = build_learner(config, envs.single_observation_space,
                                envs.single_action_space, policy_network, value_network,
                                strategy=strategy)
    # The workers share the weights (config.seed) but not their episodes.
    collect_config = config.replace(seed=streams.envs)
    if compiled:
        return learner, CompiledCollector(graph_env, learner.policy, collect_config)
    return learner, Collector(envs, learner.policy, collect_config, streams.sampling)


class _Every:
    """A trigger due every ``period`` env steps (never when 0); the step it is next due at
    is the loop state's field ``due``, so that it is checkpointed."""

    def __init__(self, period: int, due: str):
        self.period, self.field = period, due

    def due(self, loop: LoopState) -> bool:
        return self.period > 0 and loop.env_steps >= getattr(loop, self.field)

    def advance(self, loop: LoopState) -> None:
        setattr(loop, self.field, (loop.env_steps // self.period + 1) * self.period)


@dataclasses.dataclass(frozen=True)
class _Options:
    checkpoint_every: int
    target_return: Optional[float]
    stop_when_solved: bool
    root_dir: Optional[str]


class Run:
    """The run being trained, as a callback sees it (``callback.run``).

    Attributes:
        config: The run's config (its models recorded).
        learner: Models, optimizers and the update.
        policy: The policy being trained.
        root_dir: The run directory, or None.
        worker: This process's place in its group of workers.
        target_return: The mean evaluation return that counts as solved (``solved_at``):
            ``StopWhenSolved``'s, or the env's ``reward_threshold``; a callback may set
            it in ``on_train_begin``.
        resumed_from: The checkpoint the run restored, or None.
        stop_training: Set it to True to end the run after the current update (see
            pg_keras.callbacks).
    """

    def __init__(self, loop: "_Loop"):
        self._loop = loop
        self.config, self.learner = loop.config, loop.learner
        self.policy = loop.learner.policy
        self.root_dir, self.worker = loop.options.root_dir, loop.group.worker
        self.target_return = loop.options.target_return
        self.resumed_from: Optional[str] = None
        self.stop_training = False

    @property
    def env_steps(self) -> int:
        """Env steps taken so far (by all workers)."""
        return self._loop.state.env_steps

    @property
    def evaluations(self) -> List[Evaluation]:
        """Every evaluation so far (restored ones included)."""
        return list(self._loop.state.evaluations)

    @property
    def history(self) -> List[Dict[str, float]]:
        """Every update's record so far (restored ones included)."""
        return self._loop.reporter.history

    @property
    def solved_at(self) -> Optional[int]:
        """Env steps of the first evaluation that reached ``target_return``, or None."""
        return self._loop.state.solved_at


class _Loop:
    """The training loop over a :class:`LoopState`: collect -> learn -> report -> triggers
    (evaluation, checkpoint), until ``total_steps``, a solve that ends the run, or a signal.

    A single process is a group of one (``distributed.Group``): the loop is the same."""

    def __init__(self, config: Config, learner: Learner, collector: CollectorProtocol,
                 group: distributed.Group, streams: SeedStreams, reporter: reporting.Reporter,
                 run: Optional[run_dir.RunDirectory], checkpointer: Optional[Checkpointer],
                 options: _Options):
        self.config, self.learner, self.collector = config, learner, collector
        self.group, self.streams, self.reporter = group, streams, reporter
        self.run_directory, self.checkpointer, self.options = run, checkpointer, options
        self.chief = group.worker.is_chief
        self.evaluations = _Every(config.eval_every, due="next_eval")
        every = options.checkpoint_every or config.eval_every or max(1, config.total_steps // 10)
        self.checkpoints = _Every(every if checkpointer is not None else 0,
                                  due="next_checkpoint")
        self._fused = (learner.fuse(collector) if isinstance(collector, CompiledCollector)
                       else None)
        self.state = LoopState()
        self.restored_at: Optional[Tuple[int, int]] = None  # (env steps, evaluations)
        self.start = time.perf_counter()
        self.view = Run(self)

    def run(self, stop: "_StopOnSignals", callbacks: CallbackList) -> TrainResult:
        """Trains to the end; returns early, checkpointed, on a signal to any worker."""
        loop = self.state = self._resume()
        callbacks.on_train_begin(self.view)
        ending = self.view.stop_training  # e.g. a resumed run that had reached the target
        while loop.env_steps < self.config.total_steps and not ending:
            tick = time.perf_counter()
            metrics, collected = self._collect_and_learn()
            record = {k: float(v) for k, v in metrics.items()}
            agreed = self.group(collected, stop.number, *self.collector.pop_episodes(),
                                solved=self.view.stop_training)
            ending = agreed.solved
            loop.env_steps += agreed.env_steps
            self._report(record, agreed, tick)
            faults.point("update")
            if self.evaluations.due(loop):
                if self.chief:
                    self._evaluate()
                self.evaluations.advance(loop)
            ending = ending or self.group.ends_at_evaluation(self.view.stop_training)
            # Every worker saves at the same steps: the chief into the run directory.
            if self.checkpoints.due(loop):
                self._save()
                self.checkpoints.advance(loop)
                faults.point("checkpoint")
            if agreed.stop_signal:
                return self._finish(signal.Signals(agreed.stop_signal).name)
        if self.chief and (not loop.evaluations or loop.evaluations[-1].env_steps
                           != loop.env_steps):
            self._evaluate()
        return self._finish(None)

    def _resume(self) -> LoopState:
        """The loop state to start from: that of the newest checkpoint that restores
        completely, restored, or a new one. The run's own config (a larger total, other
        intervals) applies from there on."""
        # Asked to overwrite, a run whose checkpoints all fail to restore starts over.
        start_over = self.run_directory is not None and self.run_directory.overwrite
        restored = self.checkpointer.restore(environments=self._wants_environments,
                                             start_over=start_over) \
            if self.checkpointer else None
        if restored is None:
            loop = LoopState(next_eval=self.config.eval_every)
        else:
            loop, environments = restored
            if not self._nothing_left(loop):
                self._restore_collector(loop, environments)
            self.view.resumed_from = self.checkpointer.restored
        if self.run_directory is not None:
            self.run_directory.record_config()
            self.run_directory.truncate_after(loop.env_steps)
            self.reporter.history.extend(self.run_directory.read_metrics())
        # Due next at the first multiple of each interval past the resumed step, as in a
        # run that was never stopped (the intervals may be new).
        for trigger in (self.evaluations, self.checkpoints):
            if trigger.period > 0:
                trigger.advance(loop)
        self.restored_at = (loop.env_steps, len(loop.evaluations)) if restored else None
        self.start = time.perf_counter() - loop.wall_seconds
        return loop

    def _nothing_left(self, loop: LoopState) -> bool:
        """Whether a restored run is over: at its total (or solved, when that ends it),
        with its final evaluation done. Re-running it only reports its result."""
        over = loop.env_steps >= self.config.total_steps or (
            self.options.stop_when_solved and loop.solved_at is not None)
        return over and bool(loop.evaluations) and \
            loop.evaluations[-1].env_steps == loop.env_steps

    def _wants_environments(self, loop: LoopState) -> bool:
        """Whether to unpickle the environments of a checkpoint: only to train on (the
        report of a finished run reads JSON alone). Every worker reads them, though only
        the chief's collector uses them, so that all pick the same checkpoint."""
        return not self._nothing_left(loop)

    def _restore_collector(self, loop: LoopState, environments) -> None:
        if self.chief:
            if not self.collector.restore(environments):
                why = (" (with vectorization='async' they run in subprocesses, whose state "
                       "is not saved)" if self.config.vectorization == "async" else "")
                print(f"pg_keras: the environments could not be saved with the checkpoint"
                      f"{why}; they were reset, so this resumed run is not bit-identical to "
                      "an uninterrupted one", file=sys.stderr)
            return
        # The chief's checkpoint holds the chief's environments and sampling stream: this
        # worker's environments start afresh, and its stream moves past its earlier draws.
        self.collector.total_steps = loop.collector_steps
        self.collector.reseed(self.streams.resumed_sampling(loop.env_steps))

    def _collect_and_learn(self) -> Tuple[Dict[str, tf.Tensor], int]:
        """One batch and the update on it: (the update's metrics, env steps collected).
        The compiled path runs both as one graph (``Learner.fuse``)."""
        try:
            if self._fused is not None:
                return self._fused(self.state.env_steps)
            batch, collected = self.collector.collect()
            faults.point("collect")
            return self.learner.update(batch, self.state.env_steps), collected
        except NonFiniteError as error:
            raise TrainingError(f"{error}; the run stopped, its last checkpoint is intact "
                                "(set on_nonfinite='drop' to drop such episodes "
                                "instead)") from None

    def _report(self, record: Dict[str, float], agreed: distributed.GroupStep,
                tick: float) -> None:
        """Completes the update's record, reports it, and stops after too many skips."""
        loop, now = self.state, time.perf_counter()
        record.update(env_steps=loop.env_steps, wall_seconds=now - self.start,
                      steps_per_second=agreed.env_steps / max(now - tick, 1e-9),
                      dropped_episodes=self.collector.dropped_episodes,
                      **agreed.episode_record())
        self.reporter.update(record)
        loop.consecutive_skips = loop.consecutive_skips + 1 if record["skipped"] else 0
        if loop.consecutive_skips >= self.config.max_consecutive_skips:
            raise TrainingError(
                f"{loop.consecutive_skips} consecutive updates were skipped because the loss "
                f"or the gradients were not finite (at {loop.env_steps} env steps); try "
                "a lower learning rate, normalize_returns, normalize_observations, or "
                "max_grad_norm (the last checkpoint is intact)")

    def _evaluate(self) -> None:
        """The chief's evaluation (greedy or sampled, as ``eval_mode`` says): logged, kept
        as the best if it is, and checked against the target."""
        loop, target = self.state, self.view.target_return
        returns = evaluate(self.learner.policy, EnvOptions.of(self.config),
                           self.config.eval_episodes,
                           seed=self.streams.evaluation_seed(len(loop.evaluations)),
                           greedy=self.config.eval_mode == "greedy")
        evaluation = evaluation_of(loop.env_steps, returns)
        is_best = np.isfinite(evaluation.mean_return) and all(
            evaluation.mean_return > _mean_or_lowest(e) for e in loop.evaluations)
        loop.evaluations.append(evaluation)
        if is_best and self.checkpointer is not None:
            self.checkpointer.save_best(dataclasses.asdict(evaluation))
        if (loop.solved_at is None and target is not None
                and evaluation.mean_return >= target):
            loop.solved_at = evaluation.env_steps
        self.reporter.evaluation(evaluation)

    def _save(self) -> None:
        self.reporter.flush()  # first: the records up to a checkpoint survive a kill
        loop = self.state
        loop.wall_seconds = time.perf_counter() - self.start
        loop.collector_steps = self.collector.total_steps
        updates = self.learner.updates.numpy() + self.learner.skipped_updates.numpy()
        self.checkpointer.save(int(updates), loop, self.collector.state())

    def _finish(self, interrupted: Optional[str]) -> TrainResult:
        """Saves a last checkpoint and the summary; the result."""
        loop = self.state
        result = TrainResult(
            policy=self.learner.policy, learner=self.learner, history=self.reporter.history,
            evaluations=list(loop.evaluations), solved_at=loop.solved_at,
            env_steps=loop.env_steps, wall_seconds=time.perf_counter() - self.start,
            interrupted=interrupted, worker=self.group.worker)
        # A resumed run that did nothing (a finished run's report) rewrites no checkpoint.
        if self.checkpointer is not None and \
                self.restored_at != (loop.env_steps, len(loop.evaluations)):
            self._save()
        if self.run_directory is not None:
            self.run_directory.write_json("summary.json", result.summary())
        return result


@contextlib.contextmanager
def _global_streams_seeded(seed: int):
    """Seeds Python's and NumPy's global random streams for the block, then restores them.

    A Keras initializer made without a seed draws one from Python's ``random`` (and a
    factory of the user's may draw from NumPy's): seeding them while the models are built
    fixes the initial weights, and the caller's own streams go on as if untouched.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class _StopOnSignals:
    """Turns SIGINT and SIGTERM into a request to stop after the current update."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: Optional[str] = None
        self._previous = {}

    @property
    def number(self) -> int:
        """The signal's number, 0 if none came."""
        return signal.Signals[self.signal].value if self.signal else 0

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now, as the user insists
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
