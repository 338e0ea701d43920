"""Where each update's record and each evaluation go: the history, the run directory's logs
(``pg_keras.run_dir.MetricsLog``, evaluations.jsonl), the callbacks; the progress line and
evaluation lines the terminal's callback prints. The loop hands every record and every
evaluation to :class:`Reporter` once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, List, Optional

import numpy as np

from pg_keras.run_dir import MetricsLog, Record


def _figure(value: float) -> str:
    """A return in 8 characters; "-" before there is one (or without a finite one)."""
    return f"{value:8.2f}" if np.isfinite(value) else f"{'-':>8}"


class Progress:
    """One status line: rewritten in place on a terminal (at most ``per_second`` times a
    second), printed every 10 s otherwise.

    It shows the mean return of the latest training episodes (sampled actions) beside the
    latest evaluation's, so that a greedy policy doing worse than its samples is seen."""

    def __init__(self, total_steps: int, enabled: bool, per_second: float = 4.0):
        self.total = total_steps
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.interval = 1.0 / per_second if self.tty else 10.0
        self.last_print = -float("inf")
        self.last_return = float("nan")
        self.last_evaluation = float("nan")
        self.shown = False

    def update(self, record: Record) -> None:
        if not self.enabled:
            return
        self.last_return = record.get("return_mean", self.last_return)
        now = time.perf_counter()
        if now - self.last_print < self.interval:
            return
        self.last_print = now
        steps = int(record["env_steps"])
        fraction = min(1.0, steps / self.total)
        bar = "#" * int(20 * fraction)
        line = (f"[{bar:<20}] {steps:>9d}/{self.total} env steps  train return "
                f"{_figure(self.last_return)}  eval {_figure(self.last_evaluation)}  "
                f"{record['steps_per_second']:8.0f} steps/s")
        if self.tty:
            sys.stdout.write("\r" + line)
            self.shown = True
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r" + " " * 110 + "\r")
            sys.stdout.flush()
            self.shown = False


def evaluation_line(evaluation, eval_mode: str, train_return: float) -> str:
    """The line of an evaluation: its return, how it acted, and the latest training
    episodes' return (sampled actions) beside it; non-finite episodes are counted."""
    left_out = getattr(evaluation, "nonfinite_episodes", 0)
    if left_out and not np.isfinite(evaluation.mean_return):
        figures = f"{'n/a':>9} (every episode's return was non-finite: {left_out})"
    else:
        figures = f"{evaluation.mean_return:9.2f} +- {evaluation.std_return:.2f}"
        figures += f" ({left_out} non-finite episodes left out)" if left_out else ""
    return (f"env steps {evaluation.env_steps:>9d}  eval return ({eval_mode}) {figures}  "
            f"train return (sampled) {train_return:.2f}")


class Reporter:
    """Takes each update's record and each evaluation to every output: the history, the run
    directory (metrics.jsonl, evaluations.jsonl, TensorBoard) and the callbacks (which
    include the terminal's, ``pg_keras.callbacks.ProgressLogger``).

    Args:
        history: The list the records are appended to (``TrainResult.history``).
        metrics: The run directory's log, or None without a run directory.
        log_evaluation: Writes an evaluation to the run directory, or None.
        callbacks: The run's ``pg_keras.callbacks.CallbackList``, or None.
    """

    def __init__(self, history: List[Record], metrics: Optional[MetricsLog],
                 log_evaluation: Optional[Callable[[Any], None]] = None, callbacks=None):
        self.history = history
        self.metrics = metrics
        self.log_evaluation = log_evaluation
        self.callbacks = callbacks

    def update(self, record: Record) -> None:
        self.history.append(record)
        if self.metrics is not None:
            self.metrics.add(record)
        if self.callbacks is not None:
            self.callbacks.on_update_end(record)

    def evaluation(self, evaluation) -> None:
        """Reports an evaluation (``env_steps``, ``mean_return``, ``std_return``)."""
        if self.log_evaluation is not None:
            self.log_evaluation(evaluation)
        if self.callbacks is not None:
            self.callbacks.on_evaluation(evaluation)

    def flush(self) -> None:
        """Writes every record so far (before a checkpoint: a resumed run keeps them)."""
        if self.metrics is not None:
            self.metrics.flush()
