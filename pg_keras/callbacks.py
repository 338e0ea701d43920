"""Callbacks: code of yours that :func:`pg_keras.train` calls as the run goes, in the
style of ``keras.callbacks``.

    class StopAtReturn(pg_keras.Callback):
        def on_update_end(self, record):
            if record.get("return_mean", 0.0) >= 200:
                self.run.stop_training = True

    pg_keras.train(config, callbacks=[StopAtReturn(), pg_keras.ProgressLogger()])

The hooks, in the order the loop calls them: ``on_train_begin(run)`` once the run has
restored (``run.env_steps`` is where it goes on from), ``on_update_end(record)`` after
each update with its record (the figures ``metrics.jsonl`` holds), ``on_evaluation(
evaluation)`` after each evaluation is logged (by the chief, which evaluates), and
``on_train_end(result)`` with the :class:`~pg_keras.training.TrainResult`. An exception a
hook raises ends the run (its last checkpoint is intact).

Setting ``run.stop_training = True`` (as Keras's ``model.stop_training``) ends the run
after the current update's evaluation and checkpoint: it is evaluated, checkpointed and
summarized as a run that reached its end, and the next :func:`~pg_keras.train` on its
``root_dir`` goes on from there. In a group of workers, the group stops together after
the next update.

Two built-ins are always in effect, and passing one replaces its default:
:class:`Checkpointing` (with a ``root_dir``) and :class:`HandleSignals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from pg_keras import reporting
from pg_keras.config import InputError, check_run_options

if TYPE_CHECKING:  # the loop imports this module
    from pg_keras.run_dir import Evaluation
    from pg_keras.training import Run, TrainResult


class Callback:
    """The base class of callbacks: override the hooks you need.

    Attributes:
        run: The :class:`~pg_keras.training.Run` being trained (set before
            ``on_train_begin``): its config, learner, policy, env steps, evaluations, and
            ``stop_training``.
    """

    def __init__(self):
        self.run: Optional["Run"] = None

    def set_run(self, run: "Run") -> None:
        self.run = run

    def on_train_begin(self, run: "Run") -> None:
        """Called once, after the run has restored from its checkpoint (if any)."""

    def on_update_end(self, record: Dict[str, float]) -> None:
        """Called after each update with its record (env steps, returns, losses, ...)."""

    def on_evaluation(self, evaluation: "Evaluation") -> None:
        """Called after each evaluation (``env_steps``, ``mean_return``, ``std_return``)."""

    def on_train_end(self, result: "TrainResult") -> None:
        """Called once at the end (also of a run stopped by a signal), with the result."""


class LambdaCallback(Callback):
    """A callback made of plain functions, each called as the hook of the same name.

    Args:
        on_train_begin: Called with the run.
        on_update_end: Called with each update's record.
        on_evaluation: Called with each evaluation.
        on_train_end: Called with the result.
    """

    def __init__(self, on_train_begin: Optional[Callable[["Run"], Any]] = None,
                 on_update_end: Optional[Callable[[Dict[str, float]], Any]] = None,
                 on_evaluation: Optional[Callable[["Evaluation"], Any]] = None,
                 on_train_end: Optional[Callable[["TrainResult"], Any]] = None):
        super().__init__()
        for name, function in (("on_train_begin", on_train_begin),
                               ("on_update_end", on_update_end),
                               ("on_evaluation", on_evaluation),
                               ("on_train_end", on_train_end)):
            if function is not None:
                if not callable(function):
                    raise InputError(f"LambdaCallback's {name} must be callable; received "
                                     f"{name}={function!r}")
                setattr(self, name, function)


class StopWhenSolved(Callback):
    """Ends the run at the first evaluation whose mean return reaches the target.

    A run directory that holds a solved run stays ended when trained again. In a group of
    workers the group ends after the next update. The target also decides
    ``TrainResult.solved_at``.

    Args:
        target_return: The mean evaluation return that counts as solved; None: the env's
            registered ``reward_threshold``.
    """

    def __init__(self, target_return: Optional[float] = None):
        super().__init__()
        check_run_options(target_return=target_return)
        self.target_return = target_return

    def check(self, config, threshold: Optional[float]) -> None:
        """Refuses a run without evaluations or without a target (before it starts)."""
        target = self.target_return if self.target_return is not None else threshold
        if not (config.eval_every and target is not None):
            raise InputError(
                "StopWhenSolved needs evaluations (eval_every > 0) and a target return (the "
                "env registers none: pass target_return); received "
                f"eval_every={config.eval_every}, target_return={target}")

    def on_train_begin(self, run: "Run") -> None:
        if run.solved_at is not None:
            run.stop_training = True

    def on_evaluation(self, evaluation: "Evaluation") -> None:
        if self.run.solved_at is not None:
            self.run.stop_training = True


class ProgressLogger(Callback):
    """Prints to the terminal: a line at each evaluation (with the latest training
    return beside it) and, with ``bar``, a progress line (rewritten in place on a
    terminal, printed every 10 s otherwise). Only the chief prints evaluation lines.

    Args:
        bar: Show the progress line.
    """

    def __init__(self, bar: bool = True):
        super().__init__()
        self.bar = bar
        self._progress = reporting.Progress(1, enabled=False)
        self._train_return = float("nan")

    def on_train_begin(self, run: "Run") -> None:
        self._progress = reporting.Progress(run.config.total_steps, enabled=self.bar)
        if run.resumed_from and run.worker.is_chief:
            print(f"resumed from {run.resumed_from} at {run.env_steps} env steps", flush=True)

    def on_update_end(self, record: Dict[str, float]) -> None:
        self._train_return = record.get("return_mean", self._train_return)
        self._progress.update(record)

    def on_evaluation(self, evaluation: "Evaluation") -> None:
        self._progress.last_evaluation = evaluation.mean_return
        self._progress.clear()
        print(reporting.evaluation_line(evaluation, self.run.config.eval_mode,
                                        self._train_return), flush=True)

    def on_train_end(self, result: "TrainResult") -> None:
        self._progress.clear()


class Checkpointing(Callback):
    """How a run with a ``root_dir`` is checkpointed (the loop saves; this says when).

    A run with a ``root_dir`` is always checkpointed: pass one of these to change how.

    Args:
        every: Env steps between checkpoints; 0: at every evaluation, or every 10% of the
            run without evaluations.
        overwrite: Start over in a root_dir that holds a run of a different config (or
            checkpoints without a config); its export then replaces what ``export_dir``
            holds.
    """

    def __init__(self, every: int = 0, overwrite: bool = False):
        super().__init__()
        check_run_options(checkpoint_every=every)
        self.every, self.overwrite = every, overwrite


class HandleSignals(Callback):
    """Whether SIGINT and SIGTERM stop the run gracefully: the update finishes, a
    checkpoint and the summary are saved, and :func:`~pg_keras.train` returns with
    ``interrupted`` set (a second signal stops at once). On by default, in the main thread.

    Args:
        enabled: False leaves the signals to their handlers (e.g. a Ctrl-C that ends a
            whole sweep of runs).
    """

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.enabled = enabled


class CallbackList:
    """The callbacks of a run, called in the order given.

    Args:
        callbacks: The callbacks; :class:`Checkpointing` and :class:`HandleSignals` at
            most once each.
    """

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks: List[Callback] = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise InputError("callbacks must be pg_keras.Callback instances; received "
                                 f"{callback!r}")
        for kind in (Checkpointing, HandleSignals, StopWhenSolved):
            if sum(isinstance(c, kind) for c in self.callbacks) > 1:
                raise InputError(f"callbacks holds more than one {kind.__name__}; received "
                                 f"{self.callbacks!r}")

    def find(self, kind: type) -> Optional[Callback]:
        """The callback of class ``kind``, or None."""
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    def on_train_begin(self, run: "Run") -> None:
        for callback in self.callbacks:
            callback.set_run(run)
        for callback in self.callbacks:
            callback.on_train_begin(run)

    def on_update_end(self, record: Dict[str, float]) -> None:
        for callback in self.callbacks:
            callback.on_update_end(record)

    def on_evaluation(self, evaluation: "Evaluation") -> None:
        for callback in self.callbacks:
            callback.on_evaluation(evaluation)

    def on_train_end(self, result: "TrainResult") -> None:
        for callback in self.callbacks:
            callback.on_train_end(result)
