"""What one process may make of a run's gymnasium envs, checked before any is made (by the
vector env's maker, pg_keras.collect.gym_envs, and by the launcher before it imports
TensorFlow): how many it steps, and whether a window can open to render into.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping

from pg_keras.config import InputError

# The most environments one process steps (one by one, in Python) unless the environment
# variable below allows more: past a few hundred they add no speed, while building 100,000
# CartPoles took 70 s and their batches 7.6 GB.
MAX_NUM_ENVS = 4096
MAX_NUM_ENVS_VARIABLE = "PG_KERAS_MAX_NUM_ENVS"


def check_num_envs(num_envs: int) -> None:
    """Refuses more environments than one process should step (gymnasium backend).

    Raises:
        InputError: past :data:`MAX_NUM_ENVS`, or past ``PG_KERAS_MAX_NUM_ENVS`` where
            that environment variable is set; the message says how to go past it.
    """
    value = os.environ.get(MAX_NUM_ENVS_VARIABLE, "")
    try:
        limit = int(value) if value.strip() else MAX_NUM_ENVS
    except ValueError:
        raise InputError(f"{MAX_NUM_ENVS_VARIABLE} must be an integer; received "
                         f"{MAX_NUM_ENVS_VARIABLE}={value!r}") from None
    if num_envs > limit:
        raise InputError(
            f"num_envs must be at most {limit} (environments stepped one by one in one "
            f"process: more cost minutes to build and gigabytes of batches, for no speed); "
            f"received num_envs={num_envs}. Use fewer, or several processes "
            f"(--strategy=multi_worker), or set {MAX_NUM_ENVS_VARIABLE}={num_envs} to go past it")


def check_render_mode(env_kwargs: Mapping) -> None:
    """Refuses a window to render into where there is no display; frames need none.

    ``render_mode="human"`` opens a window on the first step: on a machine without a
    display that is a crash (a segmentation fault, in pygame) after the run has started.
    Frame rendering (``rgb_array``) is sent to SDL's dummy video driver unless
    ``SDL_VIDEODRIVER`` says otherwise.

    Raises:
        InputError: for ``render_mode="human"`` with neither ``DISPLAY`` nor
            ``WAYLAND_DISPLAY`` set (on Linux).
    """
    mode = env_kwargs.get("render_mode")
    if mode == "human" and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError(
            "env_kwargs render_mode='human' opens a window, but this machine has no display "
            "(neither DISPLAY nor WAYLAND_DISPLAY is set); leave render_mode out to train, "
            "and record an exported policy with `pg-keras-evaluate --video_dir=DIR`; "
            "received env_kwargs=" + json.dumps(dict(env_kwargs), sort_keys=True))
    if isinstance(mode, str) and mode.startswith("rgb_array"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
