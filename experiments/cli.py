"""What the launchers share: bad input is one line on stderr and exit code 2.

Imports absl alone, so the evaluate launcher stays free of pg_keras.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Callable, Tuple, Type

from absl import app, flags, logging

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(name: str, message: str, code: int = EXIT_BAD_INPUT):
    """Prints ``name: error: message`` (one line) to stderr and exits with ``code``."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"{name}: error: {line}\n")
    sys.stderr.flush()
    sys.exit(code)


# Sleeps, then (if its parent is still the process that started it) prints the line and
# kills the parent. A process, not a thread: the call it guards holds the GIL.
_WATCHDOG = """
import os, sys, time
parent, seconds, line = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
if os.getppid() == parent:
    sys.stderr.write(line + "\\n")
    sys.stderr.flush()
    os.kill(parent, 9)
"""


@contextlib.contextmanager
def deadline(name: str, seconds: float, message: str):
    """Ends this process with ``name: error: message`` if the block runs past ``seconds``.

    For calls into TensorFlow that wait without limit and cannot be interrupted from
    Python (even SIGTERM waits for them); the process is killed (exit status -9).
    """
    line = f"{name}: error: " + " ".join(str(message).split())
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()),
                                 str(seconds), line])
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def free_ports(count: int) -> list:
    """``count`` TCP ports free on 127.0.0.1 a moment ago, for a group's TF_CONFIG."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def require_tensorflow_backend(name: str) -> None:
    """Exits with a one-line error if KERAS_BACKEND names another backend than TensorFlow."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        fail(name, f"pg_keras needs the TensorFlow backend of Keras; received "
                   f"KERAS_BACKEND={backend!r}. Unset it or set KERAS_BACKEND=tensorflow.")


def run(name: str, main: Callable, bad_input: Tuple[Type[BaseException], ...] = (),
        failures: Tuple[Type[BaseException], ...] = ()) -> None:
    """``absl.app.run`` with our error contract.

    Args:
        name: The launcher's name in messages.
        main: The absl main function.
        bad_input: Exceptions that mean bad input: one line, exit code 2.
        failures: Exceptions that mean the work failed for a reason the message explains:
            one line, exit code 1 (anything else keeps its traceback).
    """

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(name, str(error).strip().splitlines()[0])

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the output.
        if len(argv) > 1:
            fail(name, f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            return main(argv)
        except bad_input as error:
            fail(name, str(error))
        except failures as error:
            fail(name, str(error), EXIT_FAILED)

    app.run(wrapped, flags_parser=parse)
