"""The README's quickstart commands, run as written, in a copy of the checkout.

The commands are read from README.md itself (train, resume, export, evaluate), so the
README cannot drift from what works. The fast test appends flags that shorten the run,
and runs the first command as a process of the copy, the others in this process from the
copy's directory (tests/launchers.py); the slow one runs them all verbatim as processes,
with the committed model in place as on a fresh clone.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

import launchers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--total_steps=2000", "--eval_every=1000", "--eval_episodes=2"]


def quickstart_commands() -> list:
    """The ``.venv/bin/python -m experiments.*`` commands of the README's quickstart."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    section = section.replace("\\\n", " ")  # continued lines
    commands = []
    for line in section.splitlines():
        if line.strip().startswith(".venv/bin/python -m experiments."):
            commands.append([sys.executable] + shlex.split(line, comments=True)[1:])
    return commands


def _the_four(commands) -> list:
    """Train, resume (the same command), export, evaluate: the quickstart's story."""
    wanted = [c for c in commands if c[2] in ("experiments.train", "experiments.export",
                                              "experiments.evaluate")]
    assert [c[2] for c in wanted] == ["experiments.train", "experiments.train",
                                      "experiments.export", "experiments.evaluate"], wanted
    assert wanted[0] == wanted[1], "the resume command must be the train command"
    return wanted


def _copy_of_the_checkout(destination) -> str:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.join(destination, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, name))
    return str(destination)


def _run(command, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200,
                         env=env)
    assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
    return run.stdout


def _run_here(command, cwd):
    """``command`` (``python -m module args``) run in this process, from ``cwd``."""
    run = launchers.run(command[2], *command[3:], cwd=cwd)
    assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
    return run.stdout


def test_quickstart_commands_are_read_from_the_readme():
    train, resume, export, evaluate = _the_four(quickstart_commands())
    assert "--flagfile=experiments/configs/cartpole.cfg" in train
    assert "--saved_model=saved_models/cartpole-v1" in evaluate


def test_quickstart_runs_as_written_on_a_short_run(tmp_path):
    """The README's commands with a shorter run appended (the committed model, of the full
    run's config, is removed from the copy: the short run exports there instead)."""
    tree = _copy_of_the_checkout(tmp_path / "clone")
    shutil.rmtree(os.path.join(tree, "saved_models", "cartpole-v1"))
    train, resume, export, evaluate = _the_four(quickstart_commands())
    out = _run(train + SHORT, tree)
    assert "2000 env steps" in out and "SavedModel: saved_models/cartpole-v1" in out, out
    again = _run_here(resume + SHORT, tree)
    assert "2000 env steps" in again, again
    _run_here(export, tree)
    assert os.path.exists(os.path.join(tree, "saved_models", "cp", "saved_model.pb"))
    result = json.loads(_run_here(evaluate, tree).strip().splitlines()[-1])
    assert result["episodes"] == 20 and result["env"] == "CartPole-v1"
    assert os.path.exists(os.path.join(tree, "videos", "episode_000.gif"))


@pytest.mark.slow
def test_quickstart_runs_verbatim_and_remakes_the_committed_model(tmp_path):
    tree = _copy_of_the_checkout(tmp_path / "clone")
    committed = os.path.join(ROOT, "saved_models", "cartpole-v1", "config.json")
    train, resume, export, evaluate = _the_four(quickstart_commands())
    out = _run(train, tree)
    assert "final evaluation return over 20 episodes: 500.00" in out, out
    again = _run(resume, tree)
    assert "500.00 +- 0.00 (CartPole-v1, 50000 env steps" in again, again
    _run(export, tree)
    with open(committed) as f, open(os.path.join(tree, "saved_models", "cartpole-v1",
                                                 "config.json")) as g:
        assert json.load(f) == json.load(g)
    result = json.loads(_run(evaluate, tree).strip().splitlines()[-1])
    assert result["mean_return"] == 500.0, result
