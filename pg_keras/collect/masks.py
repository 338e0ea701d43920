"""The action masks an env gives, as the gymnasium collectors keep them between steps.

An env may say which actions are legal for each observation: its Dict observation's
``action_mask`` key, or ``info["action_mask"]`` (Taxi's); :func:`env_action_mask` reads
it. :class:`ActionMasks` keeps the latest one for each env, checks it, and tells the
policy to act among its actions only once the env has given one (until then the policy
acts unmasked, as for an env without masks).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from pg_keras.config import InputError
from pg_keras.wrappers import ACTION_MASK_KEY


def info_action_mask(info: dict, num_envs: int, mask_size: int,
                     key: str = "action_mask") -> Optional[np.ndarray]:
    """The [num_envs, mask_size] bool mask a vector env's ``info`` carries, or None.

    Gymnasium's vector envs gather each env's ``info[key]`` (Taxi's ``action_mask``)
    into one array, with ``info["_" + key]`` saying which envs gave one this step; an env
    that gave none allows every action.

    Raises:
        InputError: if the mask does not have ``mask_size`` entries per env.
    """
    if key not in info:
        return None
    mask = np.asarray(info[key])
    if mask.shape != (num_envs, mask_size):
        raise InputError(f"info[{key!r}] must hold a mask of shape [{num_envs}, {mask_size}] "
                         f"(envs, actions); received shape {list(mask.shape)}")
    present = np.asarray(info.get("_" + key, np.ones(num_envs, bool)), bool)
    return np.where(present[:, None], mask.astype(bool), True)


def env_action_mask(observations, info: dict, num_envs: int,
                    mask_size: int) -> Optional[np.ndarray]:
    """The [num_envs, mask_size] bool mask of the legal actions an env gave with a step:
    its Dict observation's ``action_mask`` key (PettingZoo's way), else
    ``info["action_mask"]`` (Taxi's, see :func:`info_action_mask`); None where it gave none.

    Raises:
        InputError: for a mask of the wrong shape.
    """
    if isinstance(observations, dict) and ACTION_MASK_KEY in observations:
        mask = np.asarray(observations[ACTION_MASK_KEY])
        if mask.shape != (num_envs, mask_size):
            raise InputError(f"the observation's action_mask must have shape [{num_envs}, "
                             f"{mask_size}] (envs, actions); received shape "
                             f"{list(mask.shape)}")
        return mask.astype(bool)
    return info_action_mask(info, num_envs, mask_size)


class ActionMasks:
    """The legal actions of the observations at hand, one row per env.

    Args:
        num_envs: The envs, one row each.
        width: The action head's mask size (0 for a head without masks: nothing is read).
        env_id: The env's id, for error messages.

    Attributes:
        current: [num_envs, width] bool, the actions each env allows now (all where the
            env gave no mask); the rows a batch stores.
        given: Whether the env has given a mask yet.
    """

    def __init__(self, num_envs: int, width: int, env_id: str):
        self.current = np.ones((num_envs, width), bool)
        self.given = False
        self._env_id = env_id

    @property
    def for_policy(self) -> Optional[np.ndarray]:
        """The mask the policy acts with: :attr:`current`, or None until the env gave one."""
        return self.current if self.given else None

    def read(self, observations, info: dict, env_step: int) -> None:
        """Keeps the action masks the env gave with ``observations``: its Dict's
        ``action_mask`` key, or ``info["action_mask"]`` (Taxi's); every action is legal
        where it gave none.

        Raises:
            InputError: for a mask of the wrong shape, or one allowing no action.
        """
        num, width = self.current.shape
        if not width:
            return
        mask = env_action_mask(observations, info, num, width)
        if mask is None:
            self.current[...] = True
            return
        self.current[...] = mask
        self.given = True
        empty = ~self.current.any(axis=1)
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise InputError(f"env step {env_step}: environment {i} of {self._env_id} "
                             f"gave an action mask that allows no action; received "
                             f"{np.asarray(mask)[i].astype(int).tolist()}")

    def allow(self, rows: np.ndarray) -> None:
        """Every action is legal for the envs ``rows`` selects (reset after a dropped
        episode: their new masks are not read)."""
        self.current[rows] = True

    def state(self) -> Tuple[np.ndarray, bool]:
        """(a copy of :attr:`current`, :attr:`given`): the checkpoint's ``action_masks``."""
        return self.current.copy(), self.given

    def restore(self, state: Tuple[np.ndarray, bool]) -> None:
        """Continues from a :meth:`state`."""
        self.current[...], self.given = state
