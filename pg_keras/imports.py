"""Where a module would be imported from, found without running any of it.

A run directory is data (SECURITY.md): code it names is imported only when the caller
names the same code, and never from the run directory's own folder, since the working
directory is on ``sys.path`` and a module planted in ``runs/x/`` is importable as
``runs.x.module``. :func:`refuse_inside` checks that before the import.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import List, Optional

from pg_keras.config import InputError


def module_files(name: str) -> List[str]:
    """The files that ``import name`` would run: each enclosing package's ``__init__`` and
    the module's own file, in order.

    Found through ``sys.meta_path``'s finders (or ``sys.modules`` for what is imported
    already), which locate without executing; a part that cannot be found ends the list
    (the import itself then fails and says why).
    """
    files: List[str] = []
    search: Optional[list] = None
    parts = name.split(".")
    for i in range(len(parts)):
        fullname = ".".join(parts[:i + 1])
        module = sys.modules.get(fullname)
        if module is not None:
            found = getattr(module, "__file__", None), getattr(module, "__path__", None)
        else:
            found = _find(fullname, search)
            if found is None:
                break
        origin, locations = found
        if origin:
            files.append(origin)
        if locations is None:
            break
        search = list(locations)
    return files


def _find(fullname: str, search: Optional[list]):
    """(the file that would run or None, the package's directories or None), or None."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(fullname, search)
        except ImportError:  # a finder that refuses the name: the import would fail too
            return None
        except KeyError:
            # The path finder found only directories (a namespace package) below a parent
            # that is not imported: its lazy path would need the parent. List them here.
            last = fullname.rpartition(".")[2]
            directories = [os.path.join(entry or os.getcwd(), last) for entry in search or ()]
            return None, [d for d in directories if os.path.isdir(d)]
        if spec is not None:
            origin = spec.origin if spec.has_location else None
            return origin, spec.submodule_search_locations
    return None


def is_inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it (links resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def refuse_inside(module: str, directory: str, what: str) -> None:
    """Raises InputError, before anything is imported, if importing ``module`` would run a
    file inside ``directory``.

    Args:
        module: The module's dotted name.
        directory: The run directory.
        what: The setting that names the module, as the message should show it.
    """
    for path in module_files(module):
        if is_inside(path, directory):
            raise InputError(f"{what} names module {module!r}, whose file {path} lies inside "
                             f"the run directory {directory!r}: code is never imported from a "
                             "run directory; install or place that module elsewhere")


def import_env_module(env_id: str, name: str = "env_id") -> str:
    """Imports the module of a ``"module:EnvName-v0"`` id, which registers its envs, and
    returns the bare id (an id without a module comes back as it is); errors call the id
    ``name`` (a Config field or a flag).

    Raises:
        InputError: if the module cannot be imported.
    """
    if ":" not in env_id:
        return env_id
    module, bare = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise InputError(f"{name} {env_id!r} names module {module!r}, which cannot be "
                         f"imported: {error}") from None
    return bare
