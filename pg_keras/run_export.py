"""A run's export: the check of ``export_dir`` before training, the export after.

:func:`pg_keras.train` (``export_dir=...``) and the train command call these, so that
hours of training never end in a refused export: an ``export_dir`` that cannot be
written, or that holds another config's policy, is refused before the first update.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from pg_keras.config import Config, InputError, TrainingError
from pg_keras.paths import check_writable


def check(export_dir: Optional[str], config: Config, overwrite: bool) -> bool:
    """Refuses an ``export_dir`` the run could not export to.

    Args:
        export_dir: Where the run's policy goes, or None (nothing to check).
        config: The run's config.
        overwrite: Replace whatever ``export_dir`` holds.

    Returns:
        Whether the export may replace what ``export_dir`` holds.

    Raises:
        InputError: if ``export_dir`` cannot be written, or holds anything but an export
            of ``config`` (or of the same run stopped earlier) and ``overwrite`` is off.
    """
    if not export_dir:
        return False
    check_writable(export_dir, "export_dir")
    return overwrite or _holds_export_of(export_dir, config)


def _holds_export_of(export_dir: str, config: Config) -> bool:
    """Whether ``export_dir`` holds an export made with ``config``, or by the same run
    stopped earlier (safe to replace); refuses anything else it holds."""
    if not os.path.lexists(export_dir):
        return False
    path = os.path.join(export_dir, "config.json")
    advice = ("pass Checkpointing(overwrite=True) (--overwrite) to replace it, or choose "
              "another export_dir")
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        raise InputError(f"export_dir {export_dir!r} exists and holds no pg_keras export "
                         f"(no readable config.json); {advice}") from None
    # The export of the same run, stopped earlier, is replaced by the run continued.
    differing = config.differences_to_resume(stored, path)
    if differing:
        raise InputError(f"export_dir {export_dir!r} holds the policy of another config "
                         f"({', '.join(differing)}); {advice}")
    return True


def export(policy, config: Config, export_dir: str, replace: bool,
           root_dir: Optional[str] = None) -> str:
    """Exports ``policy`` as a SavedModel with its config; a failure names the command
    that exports the run again.

    Args:
        policy: The policy to export.
        config: The run's config (written beside the model).
        export_dir: The directory to write.
        replace: Replace what ``export_dir`` holds (as :func:`check` decided).
        root_dir: The run directory, or None.

    Returns:
        ``export_dir``.

    Raises:
        TrainingError: if the export fails (the run directory is kept).
    """
    from pg_keras.export import export_policy  # TensorFlow: imported when exporting

    try:
        return export_policy(policy, export_dir, config=config, overwrite=replace)
    except (OSError, InputError) as error:
        if not root_dir:
            raise TrainingError(f"the export to export_dir {export_dir!r} failed ({error})") \
                from None
        models = "".join(f" --{name}={getattr(config, name)}"
                         for name in ("policy_network", "value_network")
                         # code: named again, never read from the run directory
                         if getattr(config, name).partition(":")[1])
        again = (f"pg-keras-export --root_dir={root_dir} --export_dir={export_dir}{models}"
                 + (" --overwrite" if replace else ""))
        raise TrainingError(
            f"the export to export_dir {export_dir!r} failed ({error}); the run directory "
            f"{root_dir!r} is kept, and `{again}` exports it again") from None
