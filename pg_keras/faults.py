"""A test-only hook that kills the process at a named point of a run, so that a test of
what survives a kill reproduces exactly, on any machine.

``PG_KERAS_FAULT=<point>:<n>`` makes the n-th arrival (from 1) at ``<point>`` SIGKILL the
process. The points:

    collect           a batch collected, before the update learns from it (gymnasium backend)
    update            an update learned and reported (its record not yet on disk)
    checkpoint_save   mid-checkpoint: the loop state written, the weights not yet
    checkpoint        a checkpoint saved
    export            mid-export: the SavedModel written, not yet moved into place

The variable is read once, at import. Unset, :func:`point` does nothing.
"""

from __future__ import annotations

import os
import signal

from pg_keras.config import InputError

POINTS = ("collect", "update", "checkpoint_save", "checkpoint", "export")


def _parse(value: str):
    """(point, n) of a ``PG_KERAS_FAULT`` value; (None, 0) for an empty one."""
    if not value:
        return None, 0
    name, _, count = value.partition(":")
    if name not in POINTS or not count.isdigit() or int(count) < 1:
        raise InputError(f"PG_KERAS_FAULT must be <point>:<n> with a point of {POINTS} and "
                         f"n >= 1; received PG_KERAS_FAULT={value!r}")
    return name, int(count)


_POINT, _AT = _parse(os.environ.get("PG_KERAS_FAULT", ""))
_arrivals = 0


def point(name: str) -> None:
    """Marks the named point; kills the process at the arrival ``PG_KERAS_FAULT`` names."""
    global _arrivals
    if name != _POINT:
        return
    _arrivals += 1
    if _arrivals == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
