"""Checkpoints of every piece of state that changes during a run.

TensorFlow state (both models, the action head's log-std, the normalizer statistics, both
optimizers, the update counters and the sampling RNG) goes into a ``tf.train.Checkpoint``
kept by a ``tf.train.CheckpointManager``. Beside checkpoint ``N`` lie

    loop-N.json           the loop's state (:class:`LoopState`: env steps, schedules,
                          evaluations), plain JSON with a format version
    environments-N.pkl    the environments' own state (pickled), read only to resume

both written before the TF checkpoint that makes them current, so that a checkpoint is
only ever visible together with them.

Checkpoints are found by listing these files, not through TensorFlow's pointer file
(``checkpoint``), which may be missing or stale. Resuming takes the newest checkpoint that
restores completely (TF checkpoint readable to its last byte, its update count that of
its name, loop state valid, environments unpickled); each newer one is named in one line
on stderr and moved, whole, to ``damaged/ckpt-N/``, so that nothing is lost and the
rotation never deletes a checkpoint newer than the one resumed from. When none restores,
the error says so and the directory is left as it was. A directory of another checkpoint
format is refused in one line: there is one format before pg_keras 1.0.

Reading a run directory to restore its weights (export, evaluation) loads the TF
checkpoint and JSON alone; nothing in it is executed. Resuming unpickles the environments:
resuming a run directory trusts it as much as running its code.

``best/`` keeps the learner of the best evaluation so far, apart from the rotation: its
checkpoint and ``evaluation.json`` (that evaluation, and the checkpoint's name), replaced
when a better evaluation arrives.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pickle
import re
import shutil
from typing import Any, List, Optional, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from pg_keras import strict_json
from pg_keras.config import InputError

FORMAT_VERSION = 2


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
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Checkpointer:
    """Saves and restores a learner, the loop state and the environments under one directory.

    Args:
        directory: Where checkpoints are restored from and saved to (created if missing).
        learner: The ``Learner`` whose variables are saved (the whole object tree).
        max_to_keep: Checkpoints kept; older ones are deleted with their loop state.
        save_directory: Where checkpoints are saved, if not to ``directory``: a worker
            other than the chief restores the chief's checkpoints and, as TensorFlow's
            multi-worker training requires of every worker, saves its own, to a scratch
            directory.
    """

    def __init__(self, directory: str, learner: tf.Module, max_to_keep: int = 3,
                 save_directory: Optional[str] = None):
        self.directory = directory
        self.save_directory = save_directory or directory
        self.learner = learner
        self.checkpoint = tf.train.Checkpoint(learner=learner)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_directory,
                                                  max_to_keep=max_to_keep)

    def save(self, number: int, loop: LoopState, environments: Any) -> str:
        """Writes checkpoint ``number`` (e.g. the update count) with its loop state.

        Args:
            number: The checkpoint's number.
            loop: The loop's state.
            environments: The collector's state (pickled: it holds the environments).

        Returns:
            The checkpoint's path prefix.
        """
        os.makedirs(self.save_directory, exist_ok=True)
        _write_atomically(_path(self.save_directory, "environments", number, "pkl"),
                          pickle.dumps(environments))
        _write_atomically(_path(self.save_directory, "loop", number, "json"),
                          strict_json.dumps(loop.to_dict(), indent=1).encode())
        prefix = self.manager.save(checkpoint_number=number)
        kept = {_number(p) for p in self.manager.checkpoints}
        for pattern in ("loop-*.json", "environments-*.pkl", "loop-*.pkl"):
            for old in glob.glob(os.path.join(self.save_directory, pattern)):
                if _number(old) not in kept:
                    os.remove(old)
        return prefix

    def save_best(self, evaluation: dict) -> str:
        """Keeps the learner as that of the best evaluation, under ``best/``.

        Args:
            evaluation: The evaluation (``env_steps``, ``mean_return``, ``std_return``).

        Returns:
            The best checkpoint's path prefix.
        """
        directory = os.path.join(self.save_directory, BEST)
        name = f"ckpt-{evaluation['env_steps']}"
        prefix = self.checkpoint.write(os.path.join(directory, name))
        # The pointer is replaced atomically: a crash leaves the previous best readable.
        _write_atomically(os.path.join(directory, "evaluation.json"),
                          json.dumps({**evaluation, "checkpoint": name}).encode())
        for path in glob.glob(os.path.join(directory, "ckpt-*")):
            if os.path.basename(path).startswith(name + "."):
                continue
            if os.path.isdir(path):  # the temporary directory of a write that was killed
                shutil.rmtree(path)
            else:
                os.remove(path)
        return prefix

    @property
    def latest(self) -> Optional[str]:
        """The prefix of the latest checkpoint in ``directory``, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore_weights(self) -> Optional[str]:
        """Restores the latest checkpoint's TensorFlow state into the learner, and nothing else.

        Returns:
            The checkpoint's prefix, or None when there is none.

        Raises:
            InputError: if the checkpoint's models are not the learner's (another
                architecture than the one built for it).
        """
        prefix = self.latest
        if prefix is None:
            return None
        self._check_models(prefix)
        self.checkpoint.restore(prefix).assert_existing_objects_matched()
        return prefix

    def restore(self, environments: bool = True) -> Optional[Tuple[LoopState, Any]]:
        """Restores the latest checkpoint to resume from it.

        Args:
            environments: Also read the environments' state (unpickled: only for a run
                directory trusted as much as code).

        Returns:
            ``(loop state, environments' state or None)``, or None without a checkpoint.
        """
        prefix = self.restore_weights()
        if prefix is None:
            return None
        number = _number(prefix)
        loop_path = _path(self.directory, "loop", number, "json")
        if os.path.exists(loop_path):
            with open(loop_path) as f:
                loop = LoopState.from_dict(json.load(f), loop_path)
            if not environments:
                return loop, None
            with open(_path(self.directory, "environments", number, "pkl"), "rb") as f:
                return loop, pickle.load(f)
        with open(_path(self.directory, "loop", number, "pkl"), "rb") as f:  # format 1
            saved = pickle.load(f)
        return LoopState.from_format_1(saved), saved["collector"] if environments else None

    def _check_models(self, prefix: str) -> None:
        """Refuses a checkpoint whose model variables do not have the learner's shapes."""
        saved = _saved_variable_shapes(prefix)
        for role in ("policy", "value"):
            built = [list(v.shape) for v in getattr(self.learner, f"{role}_variables", [])]
            held = saved.get(role, [])
            if built != held:
                raise InputError(
                    f"the checkpoint {prefix} holds another {role} network than the one built "
                    f"for it (variable shapes {held} in the checkpoint, {built} built): the run "
                    f"was trained with its own model; build the Learner with that model "
                    f"(pg_keras.training.restore_learner(root_dir, {role}_network=...))")


def _saved_variable_shapes(prefix: str) -> dict:
    """The shapes of ``learner.policy_variables`` and ``value_variables`` in a checkpoint.

    Read through the checkpoint's object graph, not its keys: a variable reachable from
    two attributes (a Gaussian head's log-std is the head's and the policy's) is stored
    once, under the first path the saver met.
    """
    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    shapes = reader.get_variable_to_shape_map()

    def child(node_id: int, name: str):
        return next((c.node_id for c in graph.nodes[node_id].children
                     if c.local_name == name), None)

    learner = child(0, "learner")
    saved = {}
    for role in ("policy", "value"):
        listed = None if learner is None else child(learner, f"{role}_variables")
        if listed is None:
            continue
        entries = sorted(graph.nodes[listed].children, key=lambda c: int(c.local_name))
        saved[role] = [list(shapes[graph.nodes[c.node_id].attributes[0].checkpoint_key])
                       for c in entries]
    return saved


def _path(directory: str, kind: str, number: int, extension: str) -> str:
    return os.path.join(directory, f"{kind}-{number}.{extension}")


def _write_atomically(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


BEST = "best"


def restore_best(directory: str, learner: tf.Module) -> Optional[dict]:
    """Restores the best evaluation's checkpoint (see :meth:`Checkpointer.save_best`).

    Args:
        directory: The checkpoints directory (``<root_dir>/checkpoints``).
        learner: The learner to restore into.

    Returns:
        That evaluation (``env_steps``, ``mean_return``, ``std_return``), or None when
        the directory holds no best checkpoint.
    """
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


def _number(path: str) -> int:
    match = re.search(r"-(\d+)(?:\.\w+)?$", path)
    return int(match.group(1)) if match else -1
