"""absl flags generated from :class:`pg_keras.Config`, so the two cannot drift.

Every Config field is a flag of the same name, with the field's default and the help text
of its docstring (a ``Literal`` field is a string flag that Config validates; a mapping,
``env_kwargs``, is JSON text). ``config_from_flags(flag_values)`` builds the validated
Config.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import re
import typing
from typing import Literal

from absl import flags

from pg_keras.config import Config, InputError, field_defaults


def _field_help() -> dict:
    """Field name -> its description in Config's docstring ("Attributes:" section)."""
    doc = Config.__doc__ or ""
    attributes = doc.split("Attributes:", 1)[-1]
    help_by_name, name = {}, None
    for line in attributes.splitlines():
        match = re.match(r"^\s{8}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            help_by_name[name] = match.group(2).strip()
        elif name and line.strip():
            help_by_name[name] += " " + line.strip()
    return help_by_name


def define_config_flags(flag_values: flags.FlagValues) -> None:
    """Defines one flag per Config field on ``flag_values``."""
    hints = typing.get_type_hints(Config)
    help_by_name, defaults = _field_help(), field_defaults()
    for field in dataclasses.fields(Config):
        kind = hints[field.name]
        default = defaults[field.name]
        text = help_by_name.get(field.name, field.name)
        if kind is bool:
            flags.DEFINE_bool(field.name, default, text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(field.name, default, text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(field.name, default, text, flag_values=flag_values)
        elif kind is str or typing.get_origin(kind) is Literal:
            flags.DEFINE_string(field.name, default, text, flag_values=flag_values)
        elif _is_mapping(kind):
            flags.DEFINE_string(field.name, json.dumps(default), text,
                                flag_values=flag_values)
        elif typing.get_origin(kind) is tuple:
            flags.DEFINE_list(field.name, [str(v) for v in default], text + " (comma-separated)",
                              flag_values=flag_values)
        else:  # pragma: no cover - a new field type must be taught here.
            raise TypeError(f"no flag type for Config.{field.name}: {kind}")


def config_from_flags(flag_values: flags.FlagValues) -> Config:
    """The Config the parsed flags describe (validated; raises InputError)."""
    hints = typing.get_type_hints(Config)
    values = {}
    for field in dataclasses.fields(Config):
        value = flag_values[field.name].value
        if hints[field.name] == typing.Tuple[str, ...]:
            value = tuple(value)
        elif typing.get_origin(hints[field.name]) is tuple:
            value = _layer_sizes(field.name, value)
        elif _is_mapping(hints[field.name]):
            value = _json_object(field.name, value)
        values[field.name] = value
    return Config(**values)


def _is_mapping(kind) -> bool:
    return typing.get_origin(kind) is collections.abc.Mapping


def _json_object(name: str, text: str) -> dict:
    """A mapping flag's JSON text as a dict; empty text is an empty object.

    Raises:
        InputError: for text that is not a JSON object.
    """
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as error:
        value = error
    if not isinstance(value, dict):
        reason = f" ({value})" if isinstance(value, ValueError) else ""
        raise InputError(f"{name} must be a JSON object of gym.make keyword arguments, e.g. "
                         f"'{{\"max_episode_steps\": 100}}'{reason}; received {name}={text!r}")
    return value


# What a layer-sizes flag says for no hidden layer (a linear model): an empty flag is
# more often an empty shell variable than a wish for one.
NO_LAYERS = "none"


def _layer_sizes(name: str, value) -> tuple:
    """A layer-sizes flag's entries as a tuple of ints; ``none`` for no hidden layer.

    Raises:
        InputError: for an empty flag, or entries that are not integers.
    """
    if not value:
        raise InputError(f"{name} must list the hidden layers' units (e.g. --{name}=64,64), "
                         f"or be --{name}={NO_LAYERS} for no hidden layer (a linear model); "
                         f"received an empty --{name}=")
    if [v.strip().lower() for v in value] == [NO_LAYERS]:
        return ()
    try:
        return tuple(int(v) for v in value)
    except ValueError:
        raise InputError(f"{name} must be a tuple of positive integers; "
                         f"received {name}={','.join(value)!r}") from None


def markdown_table() -> str:
    """The Config table of docs/flags.md (experiments.flags_doc), so it cannot drift."""
    hints = typing.get_type_hints(Config)
    help_by_name, defaults = _field_help(), field_defaults()
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(Config):
        default = defaults[field.name]
        if typing.get_origin(hints[field.name]) is tuple:
            default = ",".join(str(v) for v in default)
        elif _is_mapping(hints[field.name]):
            default = json.dumps(default)
        meaning = help_by_name.get(field.name, "").replace("``", "`").replace("|", "\\|")
        rows.append(f"| `--{field.name}` | `{default}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
