"""The one interface of every collector, gymnasium or compiled: what the loop calls.

A collector knows a policy, never the learner: the loop hands its batches to
``Learner.update`` (or, on the compiled path, lets the learner fuse the rollout with the
update: ``Learner.fuse``)."""

from __future__ import annotations

from typing import List, Protocol, Tuple, runtime_checkable

from pg_keras.batch import Batch
from pg_keras.config import Config


@runtime_checkable
class CollectorProtocol(Protocol):
    """What the training loop needs of a collector.

    Implemented by the gymnasium collectors (:class:`~pg_keras.collect.Collector`:
    steps and episodes) and by :class:`~pg_keras.collect.CompiledCollector`.

    Attributes:
        config: The hyperparameters it collects with (its ``seed`` is this worker's).
        total_steps: Env steps this collector has taken (this worker's only).
        dropped_episodes: Episodes dropped for non-finite env data so far.
    """

    config: Config
    total_steps: int
    dropped_episodes: int

    def collect(self) -> Tuple[Batch, int]:
        """One batch, matching the learner's ``batch_spec``, and the env steps taken."""

    def reseed(self, sampling_seed: int) -> None:
        """Starts the sampling stream at ``sampling_seed`` (a worker that resumes without
        its own saved stream)."""

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""

    def state(self) -> dict:
        """Everything needed to continue collecting exactly where this collector is
        (picklable; written with each checkpoint)."""

    def restore(self, state: dict) -> bool:
        """Continues from a :meth:`state`; False if the run cannot repeat exactly."""
