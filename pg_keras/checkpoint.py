"""Checkpoints of every piece of state that changes during a run.

TensorFlow state (both models, the action head's log-std, the normalizer statistics, both
optimizers, the update counters and the sampling RNG) goes into a ``tf.train.Checkpoint``
kept by a ``tf.train.CheckpointManager``. The rest of the loop's state (env steps, the
evaluation schedule, the vector env's environments and current observations) is pickled
beside it as ``loop-<N>.pkl``, written before the TF checkpoint that makes it current, so
that a checkpoint is only ever visible together with its loop state.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
from typing import Any, Optional

import tensorflow as tf


class Checkpointer:
    """Saves and restores a learner and the loop state under one directory.

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
        self.checkpoint = tf.train.Checkpoint(learner=learner)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_directory,
                                                  max_to_keep=max_to_keep)

    def _loop_path(self, number: int, directory: str) -> str:
        return os.path.join(directory, f"loop-{number}.pkl")

    def save(self, number: int, loop_state: Any) -> str:
        """Writes checkpoint ``number`` (e.g. the update count) with its loop state.

        Returns:
            The checkpoint's path prefix.
        """
        os.makedirs(self.save_directory, exist_ok=True)
        path = self._loop_path(number, self.save_directory)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(loop_state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        prefix = self.manager.save(checkpoint_number=number)
        kept = {_number(p) for p in self.manager.checkpoints}
        for old in glob.glob(os.path.join(self.save_directory, "loop-*.pkl")):
            if _number(old) not in kept:
                os.remove(old)
        return prefix

    @property
    def latest(self) -> Optional[str]:
        """The prefix of the latest checkpoint in ``directory``, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> Optional[Any]:
        """Restores the latest checkpoint into the learner.

        Returns:
            Its loop state, or None when there is no checkpoint.
        """
        prefix = self.latest
        if prefix is None:
            return None
        self.checkpoint.restore(prefix).assert_existing_objects_matched()
        with open(self._loop_path(_number(prefix), self.directory), "rb") as f:
            return pickle.load(f)


def _number(path: str) -> int:
    match = re.search(r"-(\d+)(?:\.pkl)?$", path)
    return int(match.group(1)) if match else -1
