"""Running a launcher in the test process, as ``python -m <module> <args>`` runs it.

For tests whose subject is what a launcher does with its flags, not how a process starts:
they skip the new interpreter's imports of TensorFlow and pg_keras. An installed command
(train, export, evaluate) is the plain function ``pg_keras.cli.<name>.run(argv)``; a
research tool (suite, tune, plot, ...) runs its ``__main__`` block, executed afresh, so
its flags (a ``FlagValues`` of its own) start from their defaults. Neither touches absl's
global flags. The exit code, stdout and stderr come back as a ``subprocess`` result
would. The contracts that are about a process (a kill, TensorFlow's start-up lines,
nothing imported before the flags are checked) stay with real subprocesses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Completed:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would return."""

    args: list
    returncode: int
    stdout: str
    stderr: str


def run(module: str, *args: str, cwd: str = REPO) -> Completed:
    """Runs ``python -m module *args`` in this process, from ``cwd``.

    An installed command (``experiments.train`` or ``pg_keras.cli.train``: train, export,
    evaluate) is called as the plain function it is, ``run(argv)``; a research tool's
    ``__main__`` block runs."""
    out, err = io.StringIO(), io.StringIO()
    command = _command(module)
    with _process_state(module, args, cwd), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            if command is not None:
                code = command.run([module.rsplit(".", 1)[-1], *args])
            else:
                with warnings.catch_warnings():  # runpy's: the test imported the module
                    warnings.filterwarnings("ignore", "'.*' found in sys.modules",
                                            RuntimeWarning)
                    runpy.run_module(module, run_name="__main__", alter_sys=False)
                code = 0
        except SystemExit as stop:
            code = _exit_status(stop.code, err)
    return Completed([sys.executable, "-m", module, *args], code, out.getvalue(),
                     err.getvalue())


def run_processes(*commands: list, timeout: float = 300, **popen_kwargs) -> list:
    """Runs independent commands as processes at once (a test's processes that neither
    read what another writes): each one's ``subprocess.CompletedProcess``, in order."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, **popen_kwargs) for command in commands]
    outputs = [process.communicate(timeout=timeout) for process in processes]
    return [subprocess.CompletedProcess(process.args, process.returncode, out, err)
            for process, (out, err) in zip(processes, outputs)]


@contextlib.contextmanager
def loaded(module: str, *args: str):
    """The namespace of the research tool ``module`` imported afresh, its flags (its
    ``FLAGS``) parsed from ``args``, for a test that calls its functions."""
    namespace = runpy.run_module(module, run_name=module)
    namespace["FLAGS"]([module.rsplit(".", 1)[-1], *args])
    yield namespace


def _command(module: str):
    """The installed command ``module`` runs (``experiments.train``: pg_keras.cli.train),
    or None for a research tool."""
    package, _, name = module.rpartition(".")
    if package in ("experiments", "pg_keras.cli") and name in ("train", "export", "evaluate"):
        return importlib.import_module(f"pg_keras.cli.{name}")
    return None


def _exit_status(code, stderr) -> int:
    """The status ``sys.exit(code)`` gives a process (a message goes to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr.write(f"{code}\n")
    return 1


@contextlib.contextmanager
def _process_state(module, args, cwd):
    """argv, working directory and the SIGINT/SIGTERM handlers, put back afterwards."""
    argv, directory = sys.argv, os.getcwd()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = [module.rsplit(".", 1)[-1], *args]
    os.chdir(cwd)
    try:
        yield
    finally:
        sys.argv = argv
        os.chdir(directory)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def copy_of_checkout(destination, untracked: bool = False) -> str:
    """The checkout's tracked files (and, with ``untracked``, the new ones git does not
    ignore: what `pip install .` of the working tree sees) copied under ``destination``."""
    extra = ["--others", "--exclude-standard"] if untracked else []
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", *extra], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            os.makedirs(os.path.join(destination, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, name))
    return str(destination)
