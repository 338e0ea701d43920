"""The action masks an env gives, as the gymnasium collectors keep them between steps.

An env may say which actions are legal for each observation: its Dict observation's
``action_mask`` key, or ``info["action_mask"]`` (Taxi's); see
:func:`pg_keras.heads.env_action_mask`. :class:`ActionMasks` keeps the latest one for
each env, checks it, and tells the policy to act among its actions only once the env has
given one (until then the policy acts unmasked, as for an env without masks).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from pg_keras import heads
from pg_keras.config import InputError


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
        mask = heads.env_action_mask(observations, info, num, width)
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
