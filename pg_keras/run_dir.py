"""The run directory: everything a run writes and everything read back from it.

    config.json          the resolved Config (with the run directory's format version)
    spaces.json          the observation and action spaces, as data (pg_keras.space_json):
                         written at every start; export and restore read them, not the env
    metrics.jsonl        one record per update (env steps, wall time, returns, losses, ...)
    evaluations.jsonl    one record per evaluation (greedy or sampled: ``eval_mode``)
    tensorboard/         the same scalars as TensorBoard events
    checkpoints/         the weights, the loop state and the environments
                         (pg_keras.checkpoint); best/ the checkpoint of the best
                         evaluation so far
    summary.json         written at the end: final evaluation, steps, time, solve step
    .lock                held by the live run (its pid): one run per directory

:func:`open_run` opens it for training (:class:`RunDirectory`: the lock, the config
comparison that decides between resuming, refusing and starting over, the logs, and a
:class:`~pg_keras.checkpoint.Checkpointer`); :func:`restore_learner` and
:func:`restore_best` read a run's weights back; :func:`check_export` and :func:`export`
write its policy as a SavedModel. Its versioned files (config.json, spaces.json, each
checkpoint's loop state; an export's config.json) carry one format version,
``pg_keras.config.FORMAT_VERSION``: a file of another one is refused in one line.

TensorFlow, and the modules that import it, are imported where they are used: the
launcher checks an ``export_dir`` with this module before it imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pg_keras import space_json, strict_json
from pg_keras.config import FORMAT_VERSION, Config, InputError, TrainingError
from pg_keras.paths import check_writable

CHECKPOINTS = "checkpoints"
# What starting over deletes: every file a run writes but the lock.
RUN_FILES = ("config.json", "spaces.json", "metrics.jsonl", "evaluations.jsonl",
             "metrics.jsonl.damaged", "evaluations.jsonl.damaged", "summary.json",
             CHECKPOINTS, "tensorboard")


@dataclasses.dataclass
class Evaluation:
    """An evaluation at one point of training (greedy or sampled, as ``eval_mode`` says).

    Attributes:
        env_steps: Env steps trained when it ran.
        mean_return: Mean return of its episodes whose return is finite; NaN (``null``
            in JSON files) when none is.
        std_return: Their standard deviation (NaN likewise).
        nonfinite_episodes: Episodes left out because their return was NaN or inf.
    """

    env_steps: int
    mean_return: float
    std_return: float
    nonfinite_episodes: int = 0

    def __post_init__(self):
        # A JSON file holds null for NaN (see pg_keras.strict_json).
        self.mean_return = float("nan") if self.mean_return is None else self.mean_return
        self.std_return = float("nan") if self.std_return is None else self.std_return


@dataclasses.dataclass
class LoopState:
    """The training loop's state between updates (what a checkpoint adds to the weights).

    Attributes:
        env_steps: Env steps taken by all workers together.
        collector_steps: Env steps taken by the chief's collector.
        next_eval: Env steps at which the next evaluation is due.
        next_checkpoint: Env steps at which the next checkpoint is due (0: not set yet).
        evaluations: Every evaluation so far.
        solved_at: Env steps of the first evaluation that reached the target, or None.
        wall_seconds: Seconds spent in the loop, summed over resumptions.
        consecutive_skips: Non-finite updates skipped in a row.
    """

    env_steps: int = 0
    collector_steps: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    evaluations: List[Evaluation] = dataclasses.field(default_factory=list)
    solved_at: Optional[int] = None
    wall_seconds: float = 0.0
    consecutive_skips: int = 0

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: Any, source: str) -> "LoopState":
        """The state of :meth:`to_dict`; ``source`` names the file in errors.

        Raises:
            InputError: if ``values`` is of another checkpoint format.
            DamagedCheckpoint: if ``values`` is not a loop state of this format.
        """
        if not isinstance(values, dict):
            raise DamagedCheckpoint(f"{source} holds {_shown(values)}, not a loop state")
        version = values.get("format_version")
        if not _is_count(version):
            raise DamagedCheckpoint(f"{source} holds format_version={_shown(version)}")
        if version != FORMAT_VERSION:
            raise InputError(other_format_message(source, version))
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in values.items() if k in names}
        try:
            fields["evaluations"] = [Evaluation(**e) for e in fields.get("evaluations", [])]
            state = cls(**fields)
        except TypeError as error:
            raise DamagedCheckpoint(f"{source} is not a loop state ({error})") from None
        state._check(source)
        return state

    def _check(self, source: str) -> None:
        """Refuses fields of the wrong type (a file damaged into other valid JSON)."""
        counts = ("env_steps", "collector_steps", "next_eval", "next_checkpoint",
                  "consecutive_skips")
        for name in counts:
            value = getattr(self, name)
            if not _is_count(value):
                raise DamagedCheckpoint(f"{source} holds {name}={_shown(value)}, not a count "
                                        "of steps")
        if not (self.solved_at is None or _is_count(self.solved_at)):
            raise DamagedCheckpoint(f"{source} holds solved_at={_shown(self.solved_at)}")
        if not all(_is_count(e.env_steps) for e in self.evaluations):
            raise DamagedCheckpoint(f"{source} holds an evaluation without its env steps")


class DamagedCheckpoint(Exception):
    """A checkpoint that does not restore completely (a file missing, cut short or altered)."""


def other_format_message(source: str, version: Any) -> str:
    """The one line that refuses a checkpoint of another format than this version's."""
    return (f"{source} holds a checkpoint of format {_shown(version)}; this version of "
            f"pg_keras reads format {FORMAT_VERSION} only: train again in a new root_dir "
            "(or pass --overwrite to replace this run), or resume it with the pg_keras "
            "release that wrote it")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shown(value: Any) -> str:
    """A value for a one-line message, cut short."""
    return shortened(repr(value), 40)


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters for a one-line message ("..." marks the cut)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def open_run(root_dir: Optional[str], config: Config, overwrite: bool, worker, learner,
             cleanup) -> tuple:
    """The run directory to train in and its checkpoints.

    Args:
        root_dir: The run directory, or None (no files).
        config: The run's config.
        overwrite: Start over in a directory that holds another config's run.
        worker: This process's ``distributed.Worker``: only the chief writes the run
            directory; another worker restores the chief's checkpoints and saves its own
            to a scratch directory.
        learner: The learner whose state the checkpoints hold.
        cleanup: A ``contextlib.ExitStack`` that closes the run directory and removes a
            worker's scratch directory.

    Returns:
        ``(RunDirectory or None, Checkpointer or None)``: the run directory is the chief's
        only; neither without a ``root_dir``.

    Raises:
        InputError: if the directory is in use, cannot be written, or holds another run.
    """
    from pg_keras.checkpoint import Checkpointer

    if not root_dir:
        return None, None
    checkpoints = os.path.join(root_dir, CHECKPOINTS)
    if worker.is_chief:
        run = RunDirectory(root_dir, config, overwrite)
        cleanup.callback(run.close)
        # The spaces as data: export and restore then need no env and import nothing.
        space_json.write_spaces(root_dir, learner.policy.observation_space, learner.head.space)
        return run, Checkpointer(checkpoints, learner)
    scratch = tempfile.mkdtemp(prefix=f"pg_keras-worker{worker.index}-")
    cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
    return None, Checkpointer(checkpoints, learner, save_directory=scratch)


class RunDirectory:
    """The chief's run directory while it trains (see the module docstring): held by its
    lock from creation to :meth:`close`.

    Raises:
        InputError: if it cannot be written, is in use by a live run, or holds another
            config's run and ``overwrite`` is off.
    """

    def __init__(self, path: str, config: Config, overwrite: bool):
        self.path = path
        self._writer = None
        # One live run per directory. The lock dies with its process, so a killed run
        # never leaves a stale lock behind.
        try:
            os.makedirs(path, exist_ok=True)
            self._lock = open(os.path.join(path, ".lock"), "a+")
        except OSError as error:
            raise InputError(f"root_dir {path!r} cannot be written: {error.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "unknown"
            self._lock.close()
            raise InputError(f"root_dir {path!r} is in use by a live run (pid {owner}); wait "
                             "for it to finish or choose another root_dir") from None
        try:
            if self._holds_another_run(config, overwrite):
                self._empty()
        except InputError:
            self.close()
            raise
        self.config, self.overwrite = config, overwrite
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        import tensorflow as tf

        # config.json is written once the loop has restored (record_config): a resume that
        # finds no checkpoint to restore leaves the directory as it was.
        self._writer = tf.summary.create_file_writer(os.path.join(path, "tensorboard"))
        self.metrics = MetricsLog(os.path.join(path, "metrics.jsonl"), self._writer)

    def _holds_another_run(self, config: Config, overwrite: bool) -> bool:
        """Whether the directory holds another run that ``overwrite`` replaces: a config
        that differs in more than a run continues with (``Config.differences_to_resume``), an unreadable
        config, or checkpoints without a config; refused without ``overwrite``."""
        from pg_keras import networks
        from pg_keras.checkpoint import checkpoint_numbers

        config_path = os.path.join(self.path, "config.json")
        advice = ("pass Checkpointing(overwrite=True) (--overwrite) to replace it, or choose "
                  "another root_dir")
        if not os.path.exists(config_path):
            if checkpoint_numbers(os.path.join(self.path, CHECKPOINTS)) and not overwrite:
                raise InputError(f"root_dir {self.path!r} holds checkpoints but no config.json: "
                                 f"put the run's config.json back to resume it, or {advice}")
            return overwrite
        try:
            with open(config_path) as f:
                previous = json.load(f)
            differing = config.differences_to_resume(previous, config_path)
        except (OSError, ValueError) as error:
            if overwrite:
                return True
            if isinstance(error, InputError):
                raise
            raise InputError(f"root_dir {self.path!r} holds a config.json that does not read "
                             f"({error}); {advice}") from None
        if differing and not overwrite:
            for role in ("policy", "value"):
                recorded = previous.get(f"{role}_network", "")
                changed = any(d.startswith(f"{role}_network:") for d in differing)
                if changed and networks.is_python_object(recorded):
                    raise InputError(networks.python_object_message(self.path, role, recorded))
            raise InputError(f"root_dir {self.path!r} holds a run with a different config "
                             f"({', '.join(differing)}); {advice}")
        return bool(differing)

    def _empty(self) -> None:
        for name in RUN_FILES:
            target = os.path.join(self.path, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)

    def record_config(self) -> None:
        """Writes config.json (the values this run goes on with)."""
        self.write_json("config.json", self.config.to_stored())

    def write_json(self, name: str, value) -> None:
        target = os.path.join(self.path, name)
        with open(target + ".tmp", "w") as f:
            f.write(strict_json.dumps(value, indent=2) + "\n")
        os.replace(target + ".tmp", target)

    def _read_jsonl(self, name: str) -> List[dict]:
        """The records of a JSONL file. A line that is not a record with its env steps (cut
        short by a kill, or damaged) is skipped, counted in one line on stderr, and kept
        in ``<name>.damaged``; the lines after it are read on."""
        path = os.path.join(self.path, name)
        if not os.path.exists(path):
            return []
        records, damaged = [], []
        with open(path, "rb") as f:
            for line in f:
                record = _record(line)
                if record is None:
                    damaged.append(line if line.endswith(b"\n") else line + b"\n")
                else:
                    records.append(record)
        if damaged:
            with open(path + ".damaged", "ab") as f:
                f.writelines(damaged)
            print(f"pg_keras: skipped {len(damaged)} damaged line(s) of {path} (kept in "
                  f"{os.path.basename(path)}.damaged); read the {len(records)} others",
                  file=sys.stderr, flush=True)
        return records

    def read_metrics(self) -> List[dict]:
        return self._read_jsonl("metrics.jsonl")

    def truncate_after(self, env_steps: int) -> None:
        """Drops records past ``env_steps`` (a resumed run writes them again), and damaged
        lines (kept aside by :meth:`_read_jsonl`)."""
        for name in ("metrics.jsonl", "evaluations.jsonl"):
            kept = [r for r in self._read_jsonl(name) if r["env_steps"] <= env_steps]
            target = os.path.join(self.path, name)
            with open(target + ".tmp", "w") as f:
                f.writelines(strict_json.dumps(r) + "\n" for r in kept)
            os.replace(target + ".tmp", target)

    def _append(self, name: str, record: dict) -> None:
        with open(os.path.join(self.path, name), "a") as f:
            f.write(strict_json.dumps(record) + "\n")

    def log_evaluation(self, evaluation: Evaluation) -> None:
        import tensorflow as tf

        self.metrics.flush()  # the updates before it come first in the event file
        self._append("evaluations.jsonl", dataclasses.asdict(evaluation))
        with self._writer.as_default(step=evaluation.env_steps):
            tf.summary.scalar("eval/return_mean", evaluation.mean_return)
            tf.summary.scalar("eval/return_std", evaluation.std_return)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            try:
                self.metrics.close()
            finally:
                self._writer.close()
            self._writer = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()



def _record(line: bytes) -> Optional[dict]:
    """The record a JSONL line holds, or None when it holds none with its env steps."""
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(record, dict):
        return None
    steps = record.get("env_steps")
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) \
            or not np.isfinite(steps):
        return None
    return record


Record = Dict[str, float]


class MetricsLog:
    """metrics.jsonl and the ``train/`` TensorBoard scalars, written in batches.

    Writing a file line and a dozen TensorBoard scalars per update, in eager mode, costs
    more than the update on small envs, so the records are kept in memory and written at
    every :meth:`flush` (the loop flushes before each checkpoint, at each evaluation, on a
    signal and at the end) and at least every ``flush_seconds``. What is written is the
    same as one write per update: one metrics.jsonl line per record, and per record one
    ``train/<key>`` scalar event per key, in the same order, with the same float32 values
    and steps. metrics.jsonl is written by the caller's thread (a checkpoint must follow
    its records); the scalars by a graph in a thread of their own, off the loop's path.

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
        import tensorflow as tf
        from tensorboard.plugins.scalar import metadata as scalar_metadata

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


def restore_learner(root_dir: str, policy_network=None, value_network=None):
    """The learner of a run directory, restored from its latest checkpoint's weights.

    Reads ``config.json``, ``spaces.json`` and the TensorFlow checkpoint alone: no
    environment is made and nothing the run directory names or holds is imported or
    unpickled (see SECURITY.md). The default models are rebuilt from the config; a model
    of your own is code, so it comes from you, checked against what the run recorded
    (``networks.model_to_restore``).

    Args:
        root_dir: The run directory.
        policy_network: The policy model or factory the run was trained with, or its
            ``"module:factory"`` name exactly as the run recorded it (imported then, never
            from inside ``root_dir``); None for the default model.
        value_network: The same for the value model.

    Returns:
        The ``pg_keras.learner.Learner``, its weights restored.

    Raises:
        InputError: if ``root_dir`` holds no config, no ``spaces.json`` (a run directory
            of an earlier version) or no checkpoint, or was trained with a model of its
            own that is not passed, or is passed under another name.
    """
    from pg_keras import networks
    from pg_keras.checkpoint import Checkpointer
    from pg_keras.learner import build_learner

    config_path = os.path.join(root_dir, "config.json")
    if not os.path.exists(config_path):
        raise InputError(f"root_dir {root_dir!r} is not a run directory: it has no config.json")
    try:
        with open(config_path) as f:
            config = Config.from_stored(json.load(f), config_path)
    except json.JSONDecodeError as error:
        raise InputError(f"cannot read {config_path}: {error}") from None
    observation_space, action_space = space_json.read_spaces(root_dir)
    models = [networks.model_to_restore(root_dir, role, getattr(config, f"{role}_network"),
                                        given, needed)
              for role, given, needed in (("policy", policy_network, True),
                                          ("value", value_network, config.baseline))]
    learner = build_learner(config, observation_space, action_space, *models)
    checkpointer = Checkpointer(os.path.join(root_dir, CHECKPOINTS), learner)
    if checkpointer.restore_weights() is None:
        raise InputError(f"root_dir {root_dir!r} has no checkpoint to restore")
    return learner


def restore_best(directory: str, learner) -> Optional[dict]:
    """Restores the best evaluation's checkpoint (see
    :meth:`pg_keras.checkpoint.Checkpointer.save_best`) into ``learner``.

    Args:
        directory: The checkpoints directory (``<root_dir>/checkpoints``).
        learner: The learner to restore into.

    Returns:
        That evaluation (``env_steps``, ``mean_return``, ``std_return``), or None when
        the directory holds no best checkpoint.
    """
    import tensorflow as tf
    from pg_keras.checkpoint import BEST

    pointer = os.path.join(directory, BEST, "evaluation.json")
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        evaluation = json.load(f)
    prefix = os.path.join(directory, BEST, evaluation.pop("checkpoint"))
    # The file also holds the loop's save counter, which a learner has no use for.
    tf.train.Checkpoint(learner=learner).read(prefix).assert_existing_objects_matched() \
        .expect_partial()
    return evaluation


def check_export(export_dir: Optional[str], config: Config, overwrite: bool) -> bool:
    """Refuses an ``export_dir`` the run could not export to, before it trains: hours of
    training must not end in a refused export.

    Args:
        export_dir: Where the run's policy goes, or None (nothing to check).
        config: The run's config.
        overwrite: Replace whatever ``export_dir`` holds.

    Returns:
        Whether the export may replace what ``export_dir`` holds.

    Raises:
        InputError: if ``export_dir`` cannot be written, or holds anything but an export
            of ``config`` (or of the same run stopped earlier) and ``overwrite`` is off.
    """
    if not export_dir:
        return False
    check_writable(export_dir, "export_dir")
    return overwrite or _holds_export_of(export_dir, config)


def _holds_export_of(export_dir: str, config: Config) -> bool:
    """Whether ``export_dir`` holds an export made with ``config``, or by the same run
    stopped earlier (safe to replace); refuses anything else it holds."""
    if not os.path.lexists(export_dir):
        return False
    path = os.path.join(export_dir, "config.json")
    advice = ("pass Checkpointing(overwrite=True) (--overwrite) to replace it, or choose "
              "another export_dir")
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        raise InputError(f"export_dir {export_dir!r} exists and holds no pg_keras export "
                         f"(no readable config.json); {advice}") from None
    # The export of the same run, stopped earlier, is replaced by the run continued.
    differing = config.differences_to_resume(stored, path)
    if differing:
        raise InputError(f"export_dir {export_dir!r} holds the policy of another config "
                         f"({', '.join(differing)}); {advice}")
    return True


def export(policy, config: Config, export_dir: str, replace: bool,
           root_dir: Optional[str] = None) -> str:
    """Exports ``policy`` as a SavedModel with its config; a failure names the command
    that exports the run again.

    Args:
        policy: The policy to export.
        config: The run's config (written beside the model).
        export_dir: The directory to write.
        replace: Replace what ``export_dir`` holds (as :func:`check_export` decided).
        root_dir: The run directory, or None.

    Returns:
        ``export_dir``.

    Raises:
        TrainingError: if the export fails (the run directory is kept).
    """
    from pg_keras.export import export_policy  # TensorFlow: imported when exporting

    try:
        return export_policy(policy, export_dir, config=config, overwrite=replace)
    except (OSError, InputError) as error:
        if not root_dir:
            raise TrainingError(f"the export to export_dir {export_dir!r} failed ({error})") \
                from None
        models = "".join(f" --{name}={getattr(config, name)}"
                         for name in ("policy_network", "value_network")
                         # code: named again, never read from the run directory
                         if getattr(config, name).partition(":")[1])
        again = (f"pg-keras-export --root_dir={root_dir} --export_dir={export_dir}{models}"
                 + (" --overwrite" if replace else ""))
        raise TrainingError(
            f"the export to export_dir {export_dir!r} failed ({error}); the run directory "
            f"{root_dir!r} is kept, and `{again}` exports it again") from None
