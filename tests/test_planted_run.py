"""A run directory is data: export, restore and evaluate import nothing it names or holds.

A real run is trained, then its config.json is edited as an attacker would: every field
that names code (env_id, env_wrappers, policy_network, value_network) names a module,
either one planted inside the run directory (``runs/x/payload.py``, importable as
``runs.x.payload`` because the working directory is on the import path) or an installed
one imported for its side effects (``this``). Importing the payload writes a marker file.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
from pg_keras import imports
from pg_keras.config import InputError
from pg_keras.run_dir import restore_learner

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
CONFIG = pg_keras.Config(total_steps=256, num_envs=2, steps_per_update=32, eval_every=0,
                         eval_episodes=1, hidden_sizes=(8,), value_hidden_sizes=(8,))
OBSERVATIONS = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
PAYLOAD = """
import pathlib
pathlib.Path({marker!r}).write_text("imported " + __name__)

def wrap(env):
    return env

def policy(shape, units):
    raise AssertionError("called")

value = policy
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(a finished run directory, its result)."""
    root = tmp_path_factory.mktemp("trained") / "run"
    return root, pg_keras.train(CONFIG, root_dir=str(root))


def _plant(trained_root, base, env_id, models=True, package=False):
    """The trained run copied to ``base/runs/x`` with a payload in it (and, as a
    ``package``, an ``__init__.py`` that is one too) and a config.json naming it; returns
    (the run directory, the marker file)."""
    root, marker = base / "runs" / "x", base / "marker"
    shutil.copytree(trained_root, root)
    for name in ("payload.py", "__init__.py") if package else ("payload.py",):
        (root / name).write_text(PAYLOAD.format(marker=str(marker)))
    config = json.loads((root / "config.json").read_text())
    config.update(env_id=env_id, env_wrappers=["runs.x.payload:wrap"])
    if models:
        config.update(policy_network="runs.x.payload:policy",
                      value_network="runs.x.payload:value")
    (root / "config.json").write_text(json.dumps(config))
    return root, marker


@pytest.fixture
def watched(monkeypatch, tmp_path):
    """``tmp_path`` on the import path, as the working directory is; yields a check that
    nothing was imported from it, nor ``this``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "this" not in sys.modules
    before = set(sys.modules)

    def nothing_imported(marker):
        assert not marker.exists(), marker.read_text()
        added = set(sys.modules) - before
        assert not [m for m in added if m == "this" or m.split(".")[0] == "runs"], added
    return nothing_imported


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("env_id", ["this:CartPole-v1", "runs.x.payload:CartPole-v1"])
def test_restore_of_a_planted_run_imports_nothing_and_says_what_to_pass(trained, tmp_path,
                                                                        watched, env_id):
    root, marker = _plant(trained[0], tmp_path, env_id)
    # The payload is where an import of the recorded name would find it.
    assert [os.path.realpath(p) for p in imports.module_files("runs.x.payload")] == [
        os.path.realpath(root / "payload.py")]
    with pytest.raises(InputError) as error:
        restore_learner(str(root))
    assert "pass --policy_network=runs.x.payload:policy" in _one_line(error)
    with pytest.raises(InputError) as error:  # named by the caller: still refused
        restore_learner(str(root), "runs.x.payload:policy", "runs.x.payload:value")
    assert "lies inside the run directory" in _one_line(error)
    with pytest.raises(InputError) as error:
        restore_learner(str(root), "toy_models:small", "runs.x.payload:value")
    assert "is not the model" in _one_line(error)
    assert "--policy_network=runs.x.payload:policy" in str(error.value)
    watched(marker)


def test_a_package_inside_the_run_directory_is_refused_before_its_init_runs(trained, tmp_path,
                                                                           watched):
    root, marker = _plant(trained[0], tmp_path, "CartPole-v1", package=True)
    config = json.loads((root / "config.json").read_text())
    config.update(policy_network="runs.x:policy", value_network="")
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as error:
        restore_learner(str(root), policy_network="runs.x:policy")
    assert f"whose file {root / '__init__.py'} lies inside" in _one_line(error)
    watched(marker)


@pytest.mark.parametrize("env_id", ["this:CartPole-v1", "NotRegisteredAnywhere-v3"])
def test_restore_and_export_need_no_env_and_import_no_env_code(trained, tmp_path, watched,
                                                               env_id):
    source, result = trained
    root, marker = _plant(source, tmp_path, env_id, models=False)
    learner = restore_learner(str(root))
    np.testing.assert_array_equal(learner.policy.predict(OBSERVATIONS)[0],
                                  result.policy.predict(OBSERVATIONS)[0])
    export = pg_keras.export_policy(learner.policy, tmp_path / "export", config=learner.config)
    served = tf.saved_model.load(export)
    np.testing.assert_array_equal(served(OBSERVATIONS).numpy(),
                                  result.policy.predict(OBSERVATIONS)[0])
    watched(marker)


def test_a_run_without_spaces_json_is_refused_until_resumed(trained, tmp_path):
    source, result = trained
    root = tmp_path / "run"
    shutil.copytree(source, root)
    os.remove(root / "spaces.json")
    with pytest.raises(InputError) as error:
        restore_learner(str(root))
    assert "has no spaces.json" in _one_line(error)
    assert "train it again, or resume it with this version" in str(error.value)
    pg_keras.train(CONFIG, root_dir=str(root))  # the finished run, resumed: records them
    learner = restore_learner(str(root))
    np.testing.assert_array_equal(learner.policy.predict(OBSERVATIONS)[0],
                                  result.policy.predict(OBSERVATIONS)[0])


PROBE = """
import json, sys, launchers
calls = [
    ("experiments.export", ["--root_dir=runs/x", "--export_dir=out/a"]),
    ("experiments.export", ["--root_dir=runs/x", "--export_dir=out/a",
                            "--policy_network=runs.x.payload:policy",
                            "--value_network=runs.x.payload:value"]),
    ("experiments.export", ["--root_dir=runs/y", "--export_dir=out/y"]),
    ("experiments.evaluate", ["--saved_model=out/y", "--episodes=2"]),
    ("experiments.evaluate", ["--saved_model=out/y", "--episodes=2", "--env=CartPole-v1"]),
    ("experiments.evaluate", ["--saved_model=out/y", "--episodes=2", "--env=CartPole-v1",
                              "--env_wrappers="]),
]
runs = [launchers.run(module, *args, cwd=".") for module, args in calls]
modules = [m for m in sys.modules if m == "this" or m.split(".")[0] == "runs"]
print(json.dumps({"runs": [[r.returncode, r.stderr] for r in runs], "modules": modules}))
"""


def test_the_launchers_on_planted_runs_import_nothing(trained, tmp_path):
    """export and evaluate, in a process whose working directory holds ``runs/``."""
    _, marker = _plant(trained[0], tmp_path, "runs.x.payload:CartPole-v1", package=True)
    planted_y = tmp_path / "y"
    _plant(trained[0], planted_y, "this:CartPole-v1", models=False)
    shutil.move(planted_y / "runs" / "x", tmp_path / "runs" / "y")
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, TESTS])}
    process = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path, env=environ)
    assert process.returncode == 0, process.stderr[-3000:]
    out = json.loads(process.stdout.splitlines()[-1])
    assert out["modules"] == [] and not marker.exists() and not (planted_y / "marker").exists()
    wanted = [(2, "pass --policy_network=runs.x.payload:policy"),
              (2, "lies inside the run directory"), (0, ""),
              (2, "pass --env=this:CartPole-v1 to import it"),
              (2, "pass --env_wrappers=runs.x.payload:wrap to import them"), (0, "")]
    for (code, stderr), (want_code, needle) in zip(out["runs"], wanted):
        assert code == want_code and needle in stderr, stderr[-2000:]
        assert "Traceback" not in stderr
        if code:
            assert len([line for line in stderr.splitlines() if "error:" in line]) == 1, stderr


def test_the_suite_report_imports_no_module_a_run_records():
    """The target of a task without one is the env's threshold: looked up by the
    flagfile's env id, or the record's without its module."""
    from experiments import flagfiles

    assert "this" not in sys.modules
    task = flagfiles.Flagfile("/x/task.cfg", "task", ["--total_steps=100"], {})
    named = flagfiles.Flagfile("/x/task.cfg", "task", ["--env_id=Acrobot-v1"], {})
    with launchers.loaded("experiments.suite") as suite:
        assert suite["task_view"](task, "this:CartPole-v1", "method", 0.9)["target"] == 475.0
        assert suite["task_view"](named, "this:CartPole-v1", "method", 0.9)["target"] == -100.0
    assert "this" not in sys.modules
