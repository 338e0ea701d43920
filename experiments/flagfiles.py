"""Flagfiles as the suite and the tuner read and write them.

A flagfile is absl's: one ``--flag=value`` (or ``--flag`` / ``--noflag``) a line, ``#``
comments. Comment lines of the form ``# key: value`` are the header the suite reads:

    # label: REINFORCE + value baseline (lambda=1)
    # target: 200            (mean evaluation return that counts as solved)
    # hold_fraction: 0.95    (the "stays solved" level, as a fraction of the target)
    # seeds: 200-209         (its publication seeds, when the suite is given none: a
                             flagfile changed after its publication gets a fresh block)

Defines no flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Dict, List, Optional, Sequence

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
HEADER_KEYS = ("label", "target", "hold_fraction", "seeds")
DEFAULT_SEEDS = (100, 101, 102, 103, 104)
_HEADER = re.compile(r"^#\s*(\w+)\s*:\s*(.*?)\s*$")


class FlagfileError(ValueError):
    """A flagfile that cannot be found or read."""


@dataclasses.dataclass(frozen=True)
class Flagfile:
    """A flagfile's flag lines and header.

    Attributes:
        path: Absolute path.
        name: The task name (the file name without ``.cfg``).
        lines: The flag lines, stripped, comments and blank lines left out.
        header: The ``# key: value`` comment lines of HEADER_KEYS (the first of each).
    """

    path: str
    name: str
    lines: List[str]
    header: Dict[str, str]

    def value(self, flag: str) -> Optional[str]:
        """The flag's value as last set in this file (``"true"``/``"false"`` for bools)."""
        return flag_value(self.lines, flag)

    @property
    def seeds(self) -> List[int]:
        """The header's publication seeds (``200-209`` or ``1,5,9``), or DEFAULT_SEEDS.

        Raises:
            FlagfileError: for a ``seeds`` header that is not a range or a list.
        """
        text = self.header.get("seeds")
        if text is None:
            return list(DEFAULT_SEEDS)
        try:
            if re.fullmatch(r"\d+\s*-\s*\d+", text):
                low, high = (int(x) for x in text.split("-"))
                seeds = list(range(low, high + 1))
            else:
                seeds = [int(x) for x in text.split(",")]
        except ValueError:
            seeds = []
        if not seeds or len(set(seeds)) != len(seeds):
            raise FlagfileError(f"{self.path}: the seeds header must be a range (200-209) or "
                                f"distinct comma-separated integers; received seeds: {text!r}")
        return seeds

    def digest(self, extra: Sequence[str] = ()) -> str:
        """SHA-256 of the flag lines (and ``extra`` flags): comments do not change it."""
        return hashlib.sha256("\n".join([*self.lines, *extra]).encode()).hexdigest()


def resolve(task: str) -> str:
    """The path of a task's flagfile: ``experiments/configs/<task>.cfg``, or a path."""
    if os.sep in task or task.endswith(".cfg"):
        path = task
    else:
        path = os.path.join(CONFIG_DIR, f"{task}.cfg")
    if not os.path.isfile(path):
        raise FlagfileError(f"task {task!r}: no flagfile {path!r}")
    return os.path.abspath(path)


def read(task: str) -> Flagfile:
    """Reads the flagfile of a task name or path (see :func:`resolve`)."""
    path = resolve(task)
    lines, header = [], {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            match = _HEADER.match(line)
            if match and match.group(1) in HEADER_KEYS:
                header.setdefault(match.group(1), match.group(2))
            elif line and not line.startswith("#"):
                lines.append(line)
    name = os.path.splitext(os.path.basename(path))[0]
    return Flagfile(path, name, lines, header)


def flag_value(lines: Sequence[str], flag: str) -> Optional[str]:
    """The value the last line setting ``flag`` gives it, or None."""
    value = None
    for line in lines:
        name, _, rest = line.lstrip("-").partition("=")
        if name == flag:
            value = rest if _ else "true"
        elif name == f"no{flag}" and not _:
            value = "false"
    return value


def set_flags(lines: Sequence[str], values: Dict[str, object]) -> List[str]:
    """``lines`` with each flag of ``values`` set: replaced where set, appended otherwise."""
    rendered = {name: format_flag(name, value) for name, value in values.items()}
    out, done = [], set()
    for line in lines:
        name = line.lstrip("-").partition("=")[0]
        name = name[2:] if name.startswith("no") and name[2:] in rendered else name
        if name in rendered:
            if name not in done:
                out.append(rendered[name])
                done.add(name)
        else:
            out.append(line)
    out.extend(rendered[name] for name in rendered if name not in done)
    return out


def format_flag(name: str, value: object) -> str:
    """One flag line: ``--name=value``, ``--name``/``--noname`` for bools, lists joined."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, float):
        value = f"{value:.4g}"
    return f"--{name}={value}"
