"""What the commands share: flags of their own (:func:`execute`), and bad input as one line
on stderr and exit code 2.

Imports absl alone, so the evaluate command needs nothing of pg_keras's models, and flags
are parsed and checked before TensorFlow is imported: a bad flag costs a fraction of a
second. The
lines TensorFlow's C++ runtime prints while it starts (before its logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` cannot silence them: ``cudart_stub``, ``cuInit`` on a machine
without a GPU, CPU feature notices) are held back; ``--tf_logs`` or ``PG_KERAS_TF_LOGS=1``
shows them.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
from typing import Callable, Optional, Sequence, Tuple, Type

from absl import flags, logging

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
TF_LOGS_ENV = "PG_KERAS_TF_LOGS"

# TensorFlow's start-up lines: glog-style INFO and WARNING lines, the notice that logging
# is not yet set up, the CPU-instructions notice, and the ERROR lines a CPU-only machine
# always gets (no CUDA driver to initialize, CUDA plugins registered twice). Any other
# line written during the start (a real error, a Python warning) is shown.
_STARTUP_NOISE = re.compile(
    r"^(?:[IW]\d{4} \S+ +\d+ \S+:\d+\] "
    r"|E\d{4} \S+ +\d+ \S+:\d+\] (?:failed call to cuInit"
    r"|Unable to register cu\w+ factory)"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow)")


def fail(name: str, message: str, code: int = EXIT_BAD_INPUT):
    """Prints ``name: error: message`` (one line) to stderr and exits with ``code``."""
    sys.exit(_refuse(name, message, code))


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


def start_tensorflow(show_logs: bool = False) -> None:
    """Imports TensorFlow and finds its devices, holding back its start-up lines.

    The C++ runtime writes them to file descriptor 2 directly, so Python's ``sys.stderr``
    cannot catch them: fd 2 is pointed at a temporary file for the start, then restored,
    and every line of it that is not start-up noise is written to stderr after all.
    """
    if show_logs or "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # initializes the devices: the cuInit line
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(l for l in lines if not _STARTUP_NOISE.match(l)))
            sys.stderr.flush()


def run(name: str, flag_values: flags.FlagValues, main: Callable, usage: str = "",
        bad_input: Tuple[Type[BaseException], ...] = (),
        failures: Tuple[Type[BaseException], ...] = (), check: Optional[Callable] = None,
        tensorflow: bool = True) -> None:
    """Runs a research tool on ``sys.argv`` and exits with its status.

    For tools that define their flags when imported, on a ``FlagValues`` of their own
    (never absl's global registry): :func:`execute`'s contract, with ``main`` and
    ``check`` reading the flags from there.

    Args:
        name: The tool's name in messages.
        flag_values: The tool's flags.
        main: Called with ``[name]``; returns the exit code (None: 0).
        usage, bad_input, failures, tensorflow: As for :func:`execute`.
        check: Called with no argument after the flags are parsed and before TensorFlow
            is imported, to refuse bad input in a fraction of a second.
    """
    sys.exit(_execute(name, sys.argv, flag_values, lambda values: main([name]), usage,
                      bad_input, failures, check and (lambda values: check()), tensorflow))


HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def execute(name: str, argv: Sequence[str], define: Callable[[flags.FlagValues], None],
            main: Callable[[flags.FlagValues], Optional[int]], usage: str = "",
            bad_input: Tuple[Type[BaseException], ...] = (),
            failures: Tuple[Type[BaseException], ...] = (),
            check: Optional[Callable[[flags.FlagValues], None]] = None,
            tensorflow: bool = True) -> int:
    """Runs a command on flags of its own: the plain function behind an installed command.

    The flags live in a new ``FlagValues`` (absl's global registry is left alone), so a
    test or a program can run a command in its own process as often as it likes.

    Args:
        name: The command's name in messages.
        argv: The command line, program name first (as ``sys.argv``).
        define: Defines the command's flags on the ``FlagValues`` it is given.
        main: The command's work, given the parsed flags; returns an exit code (None: 0).
        usage: Printed above the flags by ``--help``.
        bad_input: Exceptions that mean bad input: one line, exit code 2.
        failures: Exceptions that mean the work failed for a reason the message explains:
            one line, exit code 1 (anything else keeps its traceback).
        check: Given the parsed flags before TensorFlow is imported, to refuse bad input
            in a fraction of a second.
        tensorflow: Import TensorFlow (its start-up lines held back) before ``main``.

    Returns:
        The exit code.
    """
    values = flags.FlagValues()
    define(values)
    return _execute(name, argv, values, main, usage, bad_input, failures, check, tensorflow)


def _execute(name, argv, values, main, usage, bad_input, failures, check, tensorflow) -> int:
    """:func:`execute` on flags already defined on ``values``."""
    flags.DEFINE_bool("tf_logs", os.environ.get(TF_LOGS_ENV, "") not in ("", "0"),
                      "Show the lines TensorFlow prints while it starts (hidden by default; "
                      f"{TF_LOGS_ENV}=1 sets this too).", flag_values=values)
    if any(arg in HELP_ARGS for arg in argv[1:]):  # before parsing: a required flag may lack
        print(f"{usage.strip()}\n\nflags:\n{values.get_help()}".strip())
        return 0
    try:
        rest = values(list(argv))
    except flags.Error as error:
        return _refuse(name, str(error).strip().splitlines()[0])
    if len(rest) > 1:
        return _refuse(name, f"unexpected arguments: {' '.join(rest[1:])}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the output.
    try:
        if check is not None:
            check(values)
        if tensorflow:
            start_tensorflow(show_logs=values.tf_logs)
        code = main(values)
    except bad_input as error:
        return _refuse(name, str(error))
    except failures as error:
        return _refuse(name, str(error), EXIT_FAILED)
    return 0 if code is None else int(code)


def _refuse(name: str, message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Prints ``name: error: message`` (one line) to stderr; returns ``code``."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"{name}: error: {line}\n")
    sys.stderr.flush()
    return code
