"""Research tooling (suite, tuner, solve rate, plots) and, for a checkout, the installed
commands as ``python -m experiments.train`` / ``export`` / ``evaluate``."""

import importlib
import sys


def launch(command: str) -> None:
    """Runs the installed command ``pg-keras-<command>`` on sys.argv and exits with its
    status; a Keras backend other than TensorFlow, which ``import pg_keras`` refuses, is
    one line and exit status 2, as every other bad input."""
    try:
        module = importlib.import_module(f"pg_keras.cli.{command}")
    except ImportError as error:
        if "KERAS_BACKEND" not in str(error):
            raise
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    module.launch()
