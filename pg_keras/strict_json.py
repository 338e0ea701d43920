"""JSON text as the standard defines it: no ``NaN`` or ``Infinity`` tokens.

Python's ``json`` writes a non-finite float as a bare ``NaN``, which other readers (``jq``,
JavaScript, most JSON libraries) refuse. Every JSON file pg_keras writes goes through
:func:`dumps`: a non-finite float becomes ``null``, and the record that holds it says why
(e.g. an evaluation's ``nonfinite_episodes``).
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``; a non-finite value left anyway (a
    numpy scalar, say) raises ValueError instead of writing ``NaN``."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
