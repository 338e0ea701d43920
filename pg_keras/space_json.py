"""Gymnasium spaces as JSON data, and the ``spaces.json`` of a run directory.

A run records the spaces its learner was built on when it starts, so that exporting or
restoring it needs neither its environment nor any code the run directory names (see
SECURITY.md): :func:`space_to_json` and :func:`space_from_json` are a pure round trip.

    Box            {"type": "Box", "dtype": "float32", "shape": [3],
                    "low": -1.0 or [per entry], "high": ...}    inf as "inf" / "-inf"
    Discrete       {"type": "Discrete", "n": 3, "start": 0, "dtype": "int64"}
    MultiDiscrete  {"type": "MultiDiscrete", "nvec": [...], "start": [...], "dtype": "int64"}
    MultiBinary    {"type": "MultiBinary", "n": 4 or [2, 3]}
    Dict           {"type": "Dict", "spaces": [[key, space], ...]}    in the space's order
    Tuple          {"type": "Tuple", "spaces": [space, ...]}

A Box's bounds are one number when every entry has the same bound (a uint8 image's 0 and
255), else the flat list of entries in C order. ``spaces.json`` holds the policy's
observation space (the env's, less the top-level ``action_mask`` key that
``pg_keras.spaces.split_action_mask`` sends to the action head) and the action space.

Imports gymnasium and NumPy alone.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Tuple

import gymnasium as gym
import numpy as np

from pg_keras.config import FORMAT_VERSION, InputError, format_message

SPACES_FILENAME = "spaces.json"
_INFINITIES = {"inf": math.inf, "-inf": -math.inf}


def space_to_json(space: gym.Space) -> dict:
    """``space`` as a JSON-compatible dict (module docstring); no NaN or inf in it.

    Raises:
        InputError: for a space of another kind than the six above, or a Dict key that is
            not a string.
    """
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "dtype": np.dtype(space.dtype).name,
                "shape": [int(d) for d in space.shape],
                "low": _bound_to_json(space.low), "high": _bound_to_json(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start),
                "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist(),
                "start": np.asarray(space.start).tolist(), "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.MultiBinary):
        n = np.asarray(space.n)
        return {"type": "MultiBinary", "n": int(n) if n.ndim == 0 else n.tolist()}
    if isinstance(space, gym.spaces.Dict):
        for key in space.spaces:
            if not isinstance(key, str):
                raise InputError(f"a Dict space's keys must be strings to be recorded; "
                                 f"received the key {key!r} in {space}")
        return {"type": "Dict",
                "spaces": [[key, space_to_json(child)] for key, child in space.spaces.items()]}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(child) for child in space.spaces]}
    raise InputError(f"cannot record the space {space!r}: supported are Box, Discrete, "
                     "MultiDiscrete, MultiBinary, Dict and Tuple")


def space_from_json(value: Any, source: str = "space") -> gym.Space:
    """The space :func:`space_to_json` described.

    Args:
        value: The JSON value.
        source: Names the file in messages.

    Raises:
        InputError: if ``value`` does not describe a space.
    """
    try:
        return _space(value)
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise InputError(f"{source} does not describe a gymnasium space: "
                         f"{type(error).__name__}: {error}; received {_short(value)}") from None


def _space(value: dict) -> gym.Space:
    kind = value["type"]
    if kind == "Box":
        dtype = _numeric_dtype(value["dtype"])
        shape = tuple(int(d) for d in value["shape"])
        return gym.spaces.Box(_bound_from_json(value["low"], shape, dtype),
                              _bound_from_json(value["high"], shape, dtype), shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(int(value["n"]), start=int(value["start"]),
                                   dtype=_numeric_dtype(value["dtype"]))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(np.asarray(value["nvec"], np.int64),
                                        dtype=_numeric_dtype(value["dtype"]),
                                        start=np.asarray(value["start"], np.int64))
    if kind == "MultiBinary":
        n = value["n"]
        return gym.spaces.MultiBinary(int(n) if isinstance(n, int) else [int(d) for d in n])
    if kind == "Dict":
        return gym.spaces.Dict([(_key(key), _space(child)) for key, child in value["spaces"]])
    if kind == "Tuple":
        return gym.spaces.Tuple([_space(child) for child in value["spaces"]])
    raise ValueError(f"unknown space type {kind!r}")


def _bound_to_json(bound: np.ndarray):
    """One number where every entry is the same, else the flat list; inf as text."""
    flat = np.asarray(bound).reshape(-1)
    integer = np.issubdtype(flat.dtype, np.integer)
    values = [int(x) if integer else _float_to_json(float(x)) for x in flat]
    if values and all(v == values[0] for v in values):
        return values[0]
    return values


def _float_to_json(x: float):
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        raise InputError("a Box bound is NaN; it cannot be recorded")
    return x


def _bound_from_json(bound, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = bound if isinstance(bound, list) else [bound]
    values = [_INFINITIES[v] if isinstance(v, str) else v for v in values]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"a Box bound must be a number, 'inf' or '-inf'; received {v!r}")
    array = np.asarray(values, np.float64 if np.issubdtype(dtype, np.floating) else np.int64)
    if isinstance(bound, list):
        return array.reshape(shape).astype(dtype)
    return np.full(shape, array[0]).astype(dtype)


def _numeric_dtype(name: str) -> np.dtype:
    dtype = np.dtype(str(name))
    if not np.issubdtype(dtype, np.number):
        raise ValueError(f"dtype {name!r} is not numeric")
    return dtype


def _key(key) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a Dict key must be a string; received {key!r}")
    return key


def _short(value) -> str:
    text = json.dumps(value) if _is_json(value) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_json(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def write_spaces(root_dir: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """Writes ``root_dir/spaces.json`` atomically (a kill leaves the old file or the new)."""
    record = {"format_version": FORMAT_VERSION,
              "observation_space": space_to_json(observation_space),
              "action_space": space_to_json(action_space)}
    target = os.path.join(root_dir, SPACES_FILENAME)
    with open(target + ".tmp", "w") as f:
        json.dump(record, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(target + ".tmp", target)


def read_spaces(root_dir: str) -> Tuple[gym.Space, gym.Space]:
    """(observation space, action space) of a run directory's ``spaces.json``.

    Raises:
        InputError: if the file is missing (a run directory of an earlier version),
            unreadable, of another format version, or does not describe two spaces.
    """
    path = os.path.join(root_dir, SPACES_FILENAME)
    if not os.path.exists(path):
        raise InputError(
            f"root_dir {root_dir!r} has no {SPACES_FILENAME}: it was written by an earlier "
            "version of pg_keras, which did not record its spaces; train it again, or resume "
            "it with this version (the same train command), which records them as it starts")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    version = record.get("format_version") if isinstance(record, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version != FORMAT_VERSION:
        raise InputError(format_message(path, version))
    return (space_from_json(record.get("observation_space"), f"{path} observation_space"),
            space_from_json(record.get("action_space"), f"{path} action_space"))
