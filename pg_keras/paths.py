"""Checks on the directories a run writes, made before any long work (no TensorFlow here)."""

from __future__ import annotations

import os
import tempfile

from pg_keras.config import InputError


def check_writable(path: str, name: str) -> None:
    """Raises InputError unless a directory can be created at (or inside) ``path``.

    A directory is created and removed where ``path``'s nearest existing ancestor is, as a
    run or an export will: nothing is left behind.

    Args:
        path: The directory a run or an export will write.
        name: What it is, for the message (``"root_dir"``, ``"export_dir"``).
    """
    path = os.fspath(path)
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{name} {path!r} cannot be written: {existing!r} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".pg_keras-probe-", dir=existing))
    except OSError as error:
        raise InputError(f"{name} {path!r} cannot be written: a directory cannot be created "
                         f"in {existing!r} ({error.strerror or error})") from None


def check_writable_file(path: str, name: str) -> None:
    """Raises InputError unless a file can be written at ``path`` (its directory exists).

    A file is created and removed in that directory: nothing is left behind.

    Args:
        path: The file a command will write (a plot, a flagfile).
        name: What it is, for the message (``"--out"``).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"{name} {path!r} cannot be written: it is a directory; name a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"{name} {path!r} cannot be written: its directory {directory!r} "
                         "does not exist or is not a directory")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"{name} {path!r} cannot be written: permission denied")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".pg_keras-probe-", dir=directory)
        os.close(descriptor)
        os.remove(probe)
    except OSError as error:
        raise InputError(f"{name} {path!r} cannot be written: a file cannot be created in "
                         f"{directory!r} ({error.strerror or error})") from None
