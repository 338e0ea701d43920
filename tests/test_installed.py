"""The installed commands: pg-keras-train, pg-keras-export and pg-keras-evaluate.

The fast tests read setup.cfg and the package's source; the slow one installs the package
into a fresh virtual environment outside the checkout and runs the commands from there.
"""

from __future__ import annotations

import ast
import configparser
import glob
import importlib
import json
import os
import subprocess
import sys
import sysconfig
import time

import pytest

import launchers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"pg-keras-train": "pg_keras.cli.train", "pg-keras-export": "pg_keras.cli.export",
            "pg-keras-evaluate": "pg_keras.cli.evaluate"}


def _console_scripts() -> dict:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_the_console_scripts_name_the_commands_launch_functions():
    scripts = _console_scripts()
    assert scripts == {name: f"{module}:launch" for name, module in COMMANDS.items()}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
        assert callable(getattr(importlib.import_module(module), "run")), module


def test_the_commands_import_nothing_of_the_checkout():
    """pg_keras/cli is installed without experiments/, benchmarks/ or examples/."""
    found = []
    for path in glob.glob(os.path.join(ROOT, "pg_keras", "cli", "*.py")):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{os.path.basename(path)}: {name}" for name in names
                      if name.split(".")[0] in ("experiments", "benchmarks", "examples")]
    assert found == []


def test_importing_the_commands_starts_no_tensorflow():
    """Flags are parsed and checked before TensorFlow is imported."""
    script = ("import sys\n"
              "import pg_keras.cli.train, pg_keras.cli.export, pg_keras.cli.evaluate\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('tensorflow', 'keras', 'experiments')))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]"


def _fresh_venv(base: str) -> str:
    """A new virtual environment with pg_keras installed from a copy of the checkout.

    Offline: the dependencies come from this interpreter's site-packages, which a .pth
    file puts after the new environment's own (its .pth files are not run, so this
    environment's editable pg_keras stays out); pip installs pg_keras itself, non-editable.
    """
    venv = os.path.join(base, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python = os.path.join(venv, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    with open(os.path.join(purelib, "pg_keras_test_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    source = launchers.copy_of_checkout(os.path.join(base, "source"), untracked=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", source], check=True, timeout=600,
                   cwd=base)
    return venv


def _command(venv: str, name: str, *args: str, cwd: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    run = subprocess.run([os.path.join(venv, "bin", name), *args], capture_output=True,
                         text=True, timeout=1800, cwd=cwd, env=env)
    assert run.returncode == 0, (name, run.stdout[-2000:], run.stderr[-3000:])
    return run.stdout


@pytest.mark.slow
def test_pip_install_gives_commands_that_train_export_and_evaluate(tmp_path):
    started = time.monotonic()
    venv = _fresh_venv(str(tmp_path))
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import pg_keras; print(pg_keras.__file__)"], capture_output=True,
                           text=True, check=True, cwd=work).stdout.strip()
    assert where.startswith(venv), where
    installed = time.monotonic()
    out = _command(venv, "pg-keras-train", "--env_id=CartPole-v1", "--total_steps=20000",
                   f"--root_dir={work / 'run'}", f"--export_dir={work / 'export'}", "--quiet",
                   cwd=str(work))
    assert "final evaluation return" in out, out
    assert os.path.exists(work / "export" / "saved_model.pb")
    trained = time.monotonic()
    _command(venv, "pg-keras-export", f"--root_dir={work / 'run'}",
             f"--export_dir={work / 'again'}", cwd=str(work))
    result = json.loads(_command(venv, "pg-keras-evaluate", f"--saved_model={work / 'export'}",
                                 "--episodes=5", cwd=str(work)).strip().splitlines()[-1])
    assert result["episodes"] == 5 and result["env"] == "CartPole-v1"
    print(f"install {installed - started:.0f} s, train {trained - installed:.0f} s, "
          f"export and evaluate {time.monotonic() - trained:.0f} s")
