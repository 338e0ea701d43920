"""Export the policy of a run directory as a self-contained SavedModel, TFLite or ONNX.

    pg-keras-export --root_dir=runs/CartPole-v1-seed0 \\
        --export_dir=saved_models/cartpole [--format=saved_model|tflite|onnx]

The latest checkpoint is restored and written with ``pg_keras.export_policy`` (atomically:
a crash leaves the previous export, never half of one). The run directory is read as data
(config.json, spaces.json, the checkpoint): no env is made and nothing it names is
imported. A run trained with a model of your own (``--policy_network=module:factory``)
needs the same flag here, which imports it; without it the export stops in one line that
names the flag to pass. ``--format=tflite`` writes
``policy.tflite`` (all signatures in one file), ``--format=onnx`` one ``<signature>.onnx``
per signature; both need the deploy extra (``pip install -e ".[deploy]"``).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("export")

import pg_keras  # noqa: E402  (TensorFlow is imported once the flags are checked)
from pg_keras.convert import check_format  # noqa: E402
from pg_keras.paths import check_writable  # noqa: E402


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines the command's flags on ``flag_values``."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string("root_dir", None, "Run directory to export.", required=True, **define)
    flags.DEFINE_string("export_dir", None, "Where to write; default: saved_models/<run name>.",
                        **define)
    flags.DEFINE_bool("overwrite", False, "Replace an existing export (atomically).", **define)
    flags.DEFINE_string("policy_network", None, "The module:factory the run was trained with, "
                        "as its config.json records it: a run directory names code but never "
                        "runs it, so a model of your own is imported only when you name it here "
                        "(never from inside --root_dir).", **define)
    flags.DEFINE_string("value_network", None, "The same for the value model.", **define)
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite", "onnx"],
                      "saved_model; tflite (export_dir/policy.tflite, every signature); onnx "
                      "(export_dir/<signature>.onnx). tflite and onnx need the deploy extra.",
                      **define)


def default_export_dir(root_dir: str) -> str:
    return os.path.join("saved_models", os.path.basename(os.path.normpath(root_dir)))


def check(flag_values: flags.FlagValues) -> None:
    """Refuses what can be refused before TensorFlow is imported."""
    check_format(flag_values.format)  # a missing converter is named before any work
    check_writable(flag_values.export_dir or default_export_dir(flag_values.root_dir),
                   "export_dir")


def main(flag_values: flags.FlagValues) -> None:
    from pg_keras.run_dir import restore_learner

    export_dir = flag_values.export_dir or default_export_dir(flag_values.root_dir)
    learner = restore_learner(flag_values.root_dir, flag_values.policy_network,
                              flag_values.value_network)
    path = pg_keras.export_policy(learner.policy, export_dir, config=learner.config,
                                  overwrite=flag_values.overwrite, format=flag_values.format)
    print(f"exported the policy of {flag_values.root_dir} to {path} ({flag_values.format})")


def run(argv: Sequence[str]) -> int:
    """Runs the command on ``argv`` (program name first); returns its exit code."""
    return cli.execute("export", argv, define_flags, main, usage=__doc__,
                       bad_input=(pg_keras.InputError,), check=check)


def launch() -> None:
    """The `pg-keras-export` command: runs on sys.argv and exits with its status."""
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    launch()
