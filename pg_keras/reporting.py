"""Where each update's record and each evaluation go: the history, metrics.jsonl,
evaluations.jsonl, TensorBoard, the callbacks; the progress line and evaluation lines the
terminal's callback prints.

The loop hands every record and every evaluation to :class:`Reporter` once. Writing a file
line and a dozen TensorBoard scalars per update, in eager mode, costs more than the update
on small envs, so :class:`MetricsLog` keeps the records in memory and writes them in
batches: at every ``flush()`` (the loop flushes before each checkpoint, at each
evaluation, on a signal and at the end) and at least every ``flush_seconds``, the scalars
by a graph in a thread of their own. What is written is the same as one write per update:
one metrics.jsonl line per record, and per record one ``train/<key>`` scalar event per
key, in the same order, with the same float32 values and steps.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from pg_keras import strict_json

Record = Dict[str, float]


class MetricsLog:
    """metrics.jsonl and the ``train/`` TensorBoard scalars, written in batches.

    metrics.jsonl is written by the caller's thread (a checkpoint must follow its records);
    the scalars by a thread of their own, off the training loop's path.

    Args:
        path: The metrics.jsonl file (appended to).
        writer: The TensorBoard summary writer.
        flush_seconds: The longest time a record waits in memory, as long as updates come.
        max_records: Flush when this many records wait, whatever their age.
        clock: Seconds, monotonic.
    """

    def __init__(self, path: str, writer, flush_seconds: float = 2.0, max_records: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.writer = writer
        self.flush_seconds = flush_seconds
        self.max_records = max_records
        self.clock = clock
        self.pending: List[Record] = []
        self.last_flush = clock()
        # One graph per set of keys: the records of an update that ends no episode lack
        # the return statistics.
        self._graphs: Dict[Tuple[str, ...], Callable] = {}
        self._batches: "queue.Queue[Optional[List[Record]]]" = queue.Queue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._write_scalars, daemon=True,
                                         name="pg_keras-tensorboard")
        self._thread.start()

    def add(self, record: Record) -> None:
        """Keeps ``record``; writes every kept record when they are old or many enough."""
        self.pending.append(record)
        if (len(self.pending) >= self.max_records
                or self.clock() - self.last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Writes every kept record to metrics.jsonl, and hands them to the scalars' thread."""
        self.last_flush = self.clock()
        if not self.pending:
            return
        records, self.pending = self.pending, []
        with open(self.path, "a") as f:
            f.write("".join(strict_json.dumps(r) + "\n" for r in records))
        self._batches.put(records)

    def close(self) -> None:
        """Writes every record, waits for the scalars to be written and flushed."""
        self.flush()
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _write_scalars(self) -> None:
        while True:
            records = self._batches.get()
            if records is None:
                return
            try:
                for keys, steps, values in _runs_of_same_keys(records):
                    self._graph(keys)(steps, values)
                self.writer.flush()
            except Exception as error:  # raised again by close(), in the loop's thread
                self._error = error
                return

    def _graph(self, keys: Tuple[str, ...]) -> Callable:
        """Writes ``values[i, j]`` as the scalar ``train/<keys[j]>`` at ``steps[i]``."""
        if keys not in self._graphs:
            tags = [f"train/{key}" for key in keys]
            metadata = scalar_metadata.create_summary_metadata(display_name=None,
                                                               description=None)
            writer = self.writer

            # tf.summary.write with the scalar plugin's metadata: what tf.summary.scalar
            # writes, without the name scope a graph loop would add to the tag.
            @tf.function(autograph=False, input_signature=[
                tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, len(keys)], tf.float32)])
            def write(steps, values):
                def body(i):
                    for j, tag in enumerate(tags):
                        tf.summary.write(tag, values[i, j], step=steps[i], metadata=metadata)
                    return (i + 1,)
                with writer.as_default():
                    tf.while_loop(lambda i: i < tf.size(steps), body, (tf.constant(0),))

            self._graphs[keys] = write
        return self._graphs[keys]


def _runs_of_same_keys(records: Sequence[Record]):
    """Consecutive records with the same keys: (keys but env_steps, steps, float32 values)."""
    start = 0
    while start < len(records):
        keys = tuple(k for k in records[start] if k != "env_steps")
        end = start + 1
        while end < len(records) and tuple(k for k in records[end] if k != "env_steps") == keys:
            end += 1
        chunk = records[start:end]
        steps = np.array([int(r["env_steps"]) for r in chunk], np.int64)
        values = np.array([[r[k] for k in keys] for r in chunk], np.float32)
        yield keys, steps, values
        start = end


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
