"""The checkpoint files of a run directory (``<root_dir>/checkpoints``): every piece of
state that changes during a run. The run directory's API (open, restore, export) is
``pg_keras.run_dir``'s.

TensorFlow state (both models, the action head's log-std, the normalizer statistics, both
optimizers, the update counters, the entropy bonus and the minibatches' stream) goes
into a ``tf.train.Checkpoint``
kept by a ``tf.train.CheckpointManager``. Beside checkpoint ``N`` lie

    loop-N.json           the loop's state (``pg_keras.run_dir.LoopState``: env steps,
                          schedules, evaluations), plain JSON with a format version
    environments-N.pkl    the collector's state (pickled): the environments, both sampling
                          streams, a recurrent policy's state; read only to resume

both written before the TF checkpoint that makes them current, so that a checkpoint is
only ever visible together with them.

Checkpoints are found by listing these files, not through TensorFlow's pointer file
(``checkpoint``), which may be missing or stale. Resuming takes the newest checkpoint that
restores completely (TF checkpoint readable to its last byte, its update count that of
its name, loop state valid, environments unpickled); each newer one is named in one line
on stderr and moved, whole, to ``damaged/ckpt-N/``, so that nothing is lost and the
rotation never deletes a checkpoint newer than the one resumed from. A loop state and
environments without their TF checkpoint (a save cut short) are no checkpoint, only set
aside. When none restores, the error says so and the directory is left as it was (or,
asked to start over, they are all set aside). A directory of another checkpoint format is
refused in one line: this version reads the run directory's format
(``pg_keras.config.FORMAT_VERSION``) only.

Reading a run directory to restore its weights (export, evaluation) loads the TF
checkpoint and JSON alone; nothing in it is executed. Resuming unpickles the environments:
resuming a run directory trusts it as much as running its code.

``best/`` keeps the learner of the best evaluation so far, apart from the rotation: its
checkpoint and ``evaluation.json`` (that evaluation, and the checkpoint's name), replaced
when a better evaluation arrives.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import re
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tensorflow.python.training import checkpoint_state_pb2

from pg_keras import faults, strict_json
from pg_keras.config import InputError
from pg_keras.run_dir import DamagedCheckpoint, LoopState, other_format_message, shortened


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
        self.max_to_keep = max_to_keep
        self.restored: Optional[str] = None  # the prefix of the checkpoint restored
        self._manager: Optional[tf.train.CheckpointManager] = None

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """TensorFlow's manager of the checkpoints saved (numbering, rotation).

        Made at the first save, not before: it reads its pointer file when made, and a
        resume first rewrites that file to list the checkpoints it kept.
        """
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self.checkpoint, self.save_directory,
                                                       max_to_keep=self.max_to_keep)
        return self._manager

    def save(self, number: int, loop: LoopState, environments: Any) -> str:
        """Writes checkpoint ``number`` (e.g. the update count) with its loop state.

        Args:
            number: The checkpoint's number: the learner's update count (updates and
                skipped updates), which a restore checks against the checkpoint's own.
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
        faults.point("checkpoint_save")
        prefix = self.manager.save(checkpoint_number=number)
        kept = {_number(p) for p in self.manager.checkpoints}
        for pattern in ("loop-*.json", "environments-*.pkl"):
            for old in glob.glob(os.path.join(self.save_directory, pattern)):
                number = _number(old)
                # Only what the rotation deleted: a checkpoint the manager does not list
                # (its pointer file lost) keeps its files.
                if number not in kept and not os.path.exists(
                        os.path.join(self.save_directory, f"ckpt-{number}.index")):
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
                          strict_json.dumps({**evaluation, "checkpoint": name}).encode())
        for path in glob.glob(os.path.join(directory, "ckpt-*")):
            if os.path.basename(path).startswith(name + "."):
                continue
            if os.path.isdir(path):  # the temporary directory of a write that was killed
                shutil.rmtree(path)
            else:
                os.remove(path)
        return prefix

    def restore_weights(self) -> Optional[str]:
        """Restores the TensorFlow state of the newest checkpoint whose TensorFlow files read
        completely into the learner, and nothing else; a newer one that does not read is
        named on stderr and left in place (reading a run directory changes nothing).

        Returns:
            The checkpoint's prefix, or None when there is none.

        Raises:
            InputError: if no checkpoint reads, or the checkpoint's models are not the
                learner's (another architecture than the one built for it).
        """
        listed = _listed(self.directory)
        damaged = []
        for number in listed:
            try:
                _read_tensorflow(self.directory, number, listed[number])
            except DamagedCheckpoint as error:
                damaged.append((number, str(error)))
                continue
            for older, reason in damaged:
                _say(f"checkpoint {older} of {self.directory} does not restore ({reason}); "
                     f"restoring checkpoint {number} instead")
            self._restore_tensorflow(number)
            return self.restored
        if any(_tensorflow_files(listed[n]) for n, _ in damaged):
            raise InputError(_none_restores(self.directory, damaged))
        return None

    def restore(self, environments: Union[bool, Callable[[LoopState], bool]] = True,
                start_over: bool = False) -> Optional[Tuple[LoopState, Any]]:
        """Restores the newest checkpoint that restores completely, to resume from it.

        Each newer checkpoint is named on stderr and moved, whole, to ``damaged/ckpt-N/``;
        then TensorFlow's pointer file is rewritten to list the checkpoints kept, so that
        the next save's rotation deletes only older ones. A worker that restores the
        chief's directory (``save_directory`` elsewhere) skips them and moves nothing.

        Args:
            environments: Also read (and check) the environments' state: unpickled, only
                for a run directory trusted as much as code; or a function of the
                checkpoint's loop state that says whether to (a finished run needs none).
            start_over: When none restores, move them all aside and return None (the run
                starts over, as ``overwrite`` asks) instead of raising.

        Returns:
            ``(loop state, environments' state or None)``, or None without a checkpoint.

        Raises:
            InputError: if checkpoints are there but none restores completely (nothing is
                moved then), or they are of another format.
        """
        listed = _listed(self.directory)
        owner = self.save_directory == self.directory
        if listed:
            _refuse_another_format(self.directory, listed)
        damaged = []
        for number, files in listed.items():
            try:
                loop, state = self._read(number, files, environments)
            except DamagedCheckpoint as error:
                damaged.append((number, str(error)))
                continue
            _set_aside(self.directory, damaged, listed, number, owner)
            self._restore_tensorflow(number)
            if owner:
                _write_pointer(self.directory, number, listed)
                self._manager = None
            return loop, state
        # Loop state and environments without their TF checkpoint are a save cut short
        # before it was complete: no checkpoint at all.
        if not start_over and any(_tensorflow_files(listed[n]) for n, _ in damaged):
            raise InputError(_none_restores(self.directory, damaged))
        _set_aside(self.directory, damaged, listed, None, owner)
        if owner:  # a pointer to nothing would stop TensorFlow's manager at the first save
            _remove_if_present(os.path.join(self.directory, POINTER))
        return None

    def _read(self, number: int, files: List[str],
              environments: Union[bool, Callable[[LoopState], bool]]) -> Tuple[LoopState, Any]:
        """Reads checkpoint ``number`` whole (without restoring it).

        Raises:
            DamagedCheckpoint: if a file of it is missing or does not read.
        """
        _read_tensorflow(self.directory, number, files)
        path = _path(self.directory, "loop", number, "json")
        try:
            with open(path, "rb") as f:
                values = json.loads(f.read().decode())
        except FileNotFoundError:
            raise DamagedCheckpoint(f"{os.path.basename(path)} is missing") from None
        except (OSError, ValueError) as error:
            raise DamagedCheckpoint(f"{os.path.basename(path)} is not JSON "
                                    f"({_first_line(error)})") from None
        loop = LoopState.from_dict(values, os.path.basename(path))
        wanted = environments(loop) if callable(environments) else environments
        return loop, _read_environments(self.directory, number) if wanted else None

    def _restore_tensorflow(self, number: int) -> None:
        prefix = os.path.join(self.directory, f"ckpt-{number}")
        _check_models(self.learner, prefix)
        self.checkpoint.restore(prefix).assert_existing_objects_matched()
        self.restored = prefix


def _set_aside(directory: str, damaged: List[Tuple[int, str]], listed: Dict[int, List[str]],
               resumed: Optional[int], owner: bool) -> None:
    """Moves each damaged checkpoint's files to ``damaged/ckpt-N/`` and names it in one
    line (a worker only names it)."""
    then = f"resuming from checkpoint {resumed}" if resumed is not None else \
        "starting the run over"
    for number, reason in damaged:
        said = f"checkpoint {number} of {directory} does not restore ({reason})"
        if not owner:
            _say(f"{said}; {then}")
            continue
        target = base = os.path.join(directory, DAMAGED, f"ckpt-{number}")
        copies = 0
        while os.path.exists(target):  # one damaged before under that name: keep both
            copies += 1
            target = f"{base}.{copies}"
        os.makedirs(target)
        for name in listed[number]:
            os.replace(os.path.join(directory, name), os.path.join(target, name))
        _say(f"{said}; moved to {target}, {then}")


def _check_models(learner: tf.Module, prefix: str) -> None:
    """Refuses a checkpoint whose model variables do not have the learner's shapes."""
    saved = _saved_variable_shapes(prefix)
    for role in ("policy", "value"):
        built = [list(v.shape) for v in getattr(learner, f"{role}_variables", [])]
        held = saved.get(role, [])
        if built != held:
            raise InputError(
                f"the checkpoint {prefix} holds another {role} network than the one built "
                f"for it (variable shapes {held} in the checkpoint, {built} built): the run "
                f"was trained with its own model; build the Learner with that model "
                f"(pg_keras.run_dir.restore_learner(root_dir, {role}_network=...))")


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
DAMAGED = "damaged"  # checkpoints that do not restore, kept aside by a resume
POINTER = "checkpoint"  # TensorFlow's pointer file (its CheckpointManager's state)

# The files of checkpoint N: the TensorFlow checkpoint, the loop state, the environments;
# loop-N.pkl is format 1's loop state, listed only to be refused.
_FILE = re.compile(r"(?:ckpt-(\d+)\.(?:index|data-\d+-of-\d+)|loop-(\d+)\.(?:json|pkl)"
                   r"|environments-(\d+)\.pkl)$")


def _listed(directory: str) -> Dict[int, List[str]]:
    """``{N: names of checkpoint N's files}`` of ``directory``, newest first."""
    found: Dict[int, List[str]] = {}
    names = os.listdir(directory) if os.path.isdir(directory) else []
    for name in sorted(names):
        match = _FILE.fullmatch(name)
        if match:
            number = int(next(g for g in match.groups() if g is not None))
            found.setdefault(number, []).append(name)
    return dict(sorted(found.items(), reverse=True))


def checkpoint_numbers(directory: str) -> List[int]:
    """The numbers of the checkpoints whose files ``directory`` holds (intact or not),
    newest first."""
    return list(_listed(directory))


def _refuse_another_format(directory: str, listed: Dict[int, List[str]]) -> None:
    for files in listed.values():
        old = [name for name in files if name.startswith("loop-") and name.endswith(".pkl")]
        if old:
            raise InputError(other_format_message(f"{directory} ({old[0]})", 1))


def _read_tensorflow(directory: str, number: int, files: List[str]) -> None:
    """Reads every tensor of TensorFlow checkpoint ``number`` (each read is checksummed),
    and checks that its update count is its number.

    Raises:
        DamagedCheckpoint: if it is incomplete, does not read, or holds another count.
    """
    name = f"ckpt-{number}"
    if not _tensorflow_files(files):
        raise DamagedCheckpoint(f"{name} was never written (a save cut short)")
    if f"{name}.index" not in files:
        raise DamagedCheckpoint(f"{name}.index is missing")
    try:
        reader = tf.train.load_checkpoint(os.path.join(directory, name))
        counts = {}
        for key in reader.get_variable_to_shape_map():
            value = reader.get_tensor(key)
            if key in _COUNTERS:
                counts[key] = int(value)
    except Exception as error:  # TensorFlow's reader maps its errors to several types
        raise DamagedCheckpoint(f"{name} does not read: {_first_line(error)}") from None
    if len(counts) == len(_COUNTERS) and sum(counts.values()) != number:
        raise DamagedCheckpoint(f"{name} holds {sum(counts.values())} updates, not {number}")


# The learner's update counters in a checkpoint: their sum is the checkpoint's number.
_COUNTERS = ("learner/updates/.ATTRIBUTES/VARIABLE_VALUE",
             "learner/skipped_updates/.ATTRIBUTES/VARIABLE_VALUE")


def _tensorflow_files(files: List[str]) -> List[str]:
    return [name for name in files if name.startswith("ckpt-")]


def _read_environments(directory: str, number: int) -> Any:
    path = _path(directory, "environments", number, "pkl")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{os.path.basename(path)} is missing") from None
    except Exception as error:  # an altered pickle can fail in any way at all
        raise DamagedCheckpoint(f"{os.path.basename(path)} does not unpickle "
                                f"({type(error).__name__}: {_first_line(error)})") from None


def _write_pointer(directory: str, number: int, listed: Dict[int, List[str]]) -> None:
    """Rewrites TensorFlow's pointer file: checkpoint ``number`` the latest, after the
    older ones on disk, each with its time, so that its manager rotates them as its own."""
    kept = sorted(n for n, files in listed.items() if n <= number and f"ckpt-{n}.index" in files)
    path = os.path.join(directory, POINTER)
    try:
        with open(path) as f:
            current = text_format.Parse(f.read(), checkpoint_state_pb2.CheckpointState())
        if (current.model_checkpoint_path == f"ckpt-{number}" and
                list(current.all_model_checkpoint_paths) == [f"ckpt-{n}" for n in kept]):
            return  # already so: a finished run's report rewrites nothing
    except (OSError, ValueError, text_format.ParseError):
        pass  # missing or garbage: rewritten below
    now = time.time()
    stamps = [min(os.path.getmtime(os.path.join(directory, f"ckpt-{n}.index")), now)
              for n in kept]
    state = checkpoint_state_pb2.CheckpointState(
        model_checkpoint_path=f"ckpt-{number}",
        all_model_checkpoint_paths=[f"ckpt-{n}" for n in kept],
        all_model_checkpoint_timestamps=stamps, last_preserved_timestamp=min(stamps) - 1)
    _write_atomically(path, text_format.MessageToString(state).encode())


def _none_restores(directory: str, damaged: List[Tuple[int, str]]) -> str:
    reasons = "; ".join(f"checkpoint {number}: {reason}" for number, reason in damaged)
    return (f"no checkpoint in {directory} restores completely ({reasons}); nothing was "
            "changed: put back intact copies of its files, or pass "
            "Checkpointing(overwrite=True) (--overwrite) to move them aside and start the run "
            "over")


def _remove_if_present(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return shortened(text[0] if text else type(error).__name__, 120)


def _say(line: str) -> None:
    print(f"pg_keras: {line}", file=sys.stderr, flush=True)



def _number(path: str) -> int:
    match = re.search(r"-(\d+)(?:\.\w+)?$", path)
    return int(match.group(1)) if match else -1
