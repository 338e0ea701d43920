"""The tuner's search space: each searchable Config field's default range, and the
``--search`` syntax (``name``, ``name:low:high[:log|:linear]``, ``name:a|b|c``).

Defines no flags.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Dict, Optional

import pg_keras

LOG, LINEAR = True, False
_WIDTHS = ["32x32", "64x64", "128x128", "256x256"]
_BOOL = [True, False]
DEFAULT_SPACE: Dict[str, tuple] = {
    "policy_learning_rate": (1e-4, 1e-2, LOG),
    "value_learning_rate": (1e-4, 1e-1, LOG),
    "entropy_coef": (1e-5, 1e-1, LOG),
    "max_grad_norm": (0.1, 10.0, LOG),
    "value_max_grad_norm": (0.1, 10.0, LOG),
    "gamma": (0.95, 0.999, LINEAR),
    "gae_lambda": (0.8, 1.0, LINEAR),
    "init_log_std": (-1.5, 0.5, LINEAR),
    "hidden_sizes": (_WIDTHS,),
    "value_hidden_sizes": (_WIDTHS,),
    "steps_per_update": ([8, 16, 32, 64, 128],),
    "num_envs": ([1, 4, 8, 16],),
    "activation": (["tanh", "relu"],),
    "optimizer": (["adam", "rmsprop"],),
    "lr_schedule": (["constant", "linear"],),
    "entropy_schedule": (["constant", "linear"],),
    "clip_observations": ([0.0, 5.0, 10.0],),
    "update_epochs": ([1, 2, 4, 10, 20],),
    "minibatches": ([1, 4, 8, 16, 32, 64],),
    "clip_ratio": (0.1, 0.3, LINEAR),
    "value_clip": ([0.0, 0.2, 1.0],),
    "target_kl": ([0.0, 0.01, 0.02, 0.05],),
    "advantage_normalization": (["batch", "minibatch"],),
    **{name: (_BOOL,) for name in ("baseline", "normalize_returns", "normalize_advantages",
                                   "normalize_observations", "gamma_weighting")},
}


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched flag: a float or int range (log or linear scale), or a choice."""

    name: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[tuple] = None

    def suggest(self, trial):
        """The trial's value of this flag, typed as the Config field is."""
        kind = field_types()[self.name]
        if self.choices is not None:
            value = trial.suggest_categorical(self.name, list(self.choices))
            return from_choice(kind, value)
        if kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name}:{'|'.join(str(c) for c in self.choices)}"
        return f"{self.name}:{self.low:g}:{self.high:g}:{'log' if self.log else 'linear'}"


def field_types() -> dict:
    """Config field -> its type."""
    return typing.get_type_hints(pg_keras.Config)


def from_choice(kind, value):
    """A categorical value as the Config field takes it (``64x64`` -> (64, 64))."""
    if typing.get_origin(kind) is tuple:
        return tuple(int(v) for v in str(value).split("x"))
    return value


def parse_param(spec: str) -> Param:
    """A Param from a --search entry (see the module docstring)."""
    name, *parts = spec.split(":")
    types = field_types()
    if name not in types:
        raise pg_keras.InputError(f"search: {name!r} is not a Config field; received "
                                  f"--search entry {spec!r}")
    default = DEFAULT_SPACE.get(name)
    if not parts:
        if default is None:
            raise pg_keras.InputError(f"search: {name} has no default range; give one, e.g. "
                                      f"{name}:low:high or {name}:a|b; received {spec!r}")
        if len(default) == 1:
            return Param(name, choices=tuple(default[0]))
        return Param(name, default[0], default[1], default[2])
    if len(parts) == 1:
        return Param(name, choices=tuple(_choice(types[name], c, spec)
                                         for c in parts[0].split("|")))
    return _range(name, types[name], parts, default, spec)


def _choice(kind, text: str, spec: str):
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.lower()]
        if kind in (int, float):
            return kind(text)
        if typing.get_origin(kind) is tuple:
            return "x".join(str(int(v)) for v in text.split("x"))
        return text
    except (KeyError, ValueError):
        raise pg_keras.InputError(f"search: {text!r} is not a value of {spec.split(':')[0]}; "
                                  f"received {spec!r}") from None


def _range(name, kind, parts, default, spec) -> Param:
    if kind not in (int, float) or len(parts) > 3 or (len(parts) == 3 and
                                                      parts[2] not in ("log", "linear")):
        raise pg_keras.InputError(f"search: expected {name}:low:high[:log|:linear] (a number "
                                  f"field) or {name}:a|b|c; received {spec!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise pg_keras.InputError(f"search: the bounds of {name} must be numbers; received "
                                  f"{spec!r}") from None
    log = parts[2] == "log" if len(parts) == 3 else bool(default and len(default) == 3
                                                         and default[2])
    if not low < high or (log and low <= 0):
        raise pg_keras.InputError(f"search: {name} needs low < high (and low > 0 on a log "
                                  f"scale); received {spec!r}")
    return Param(name, low, high, log)
