"""The run directory records which models it was trained with, so it can be rebuilt.

A factory named ``module:factory`` (Config field or launcher flag, or a factory given in
Python that is importable by that name) is rebuilt by restore_learner and the export
launcher when the caller names it again (a run directory names code but never runs it); a
model given as any other Python object is recorded as such, and the launchers refuse the
run in one line saying what it needs.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
import toy_models
from pg_keras.run_dir import restore_learner

TESTS = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}
CONFIG = pg_keras.Config(total_steps=512, num_envs=4, steps_per_update=32, eval_every=512,
                         eval_episodes=2)
OBSERVATIONS = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)


def _recorded(root):
    with open(os.path.join(root, "config.json")) as f:
        config = json.load(f)
    return config["policy_network"], config["value_network"]


def _assert_same_policy(learner, result):
    for a, b in zip(learner.policy_variables, result.learner.policy_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(learner.policy.predict(OBSERVATIONS)[0],
                                  result.policy.predict(OBSERVATIONS)[0])


def test_a_named_factory_is_recorded_and_rebuilt(tmp_path):
    config = CONFIG.replace(policy_network="toy_models:small", value_network="toy_models:small")
    result = pg_keras.train(config, root_dir=str(tmp_path / "a"))
    assert _recorded(tmp_path / "a") == ("toy_models:small", "toy_models:small")
    assert [v.shape for v in result.learner.policy_variables][:2] == [(4, 16), (16,)]
    with pytest.raises(pg_keras.InputError, match="pass --policy_network=toy_models:small"):
        restore_learner(str(tmp_path / "a"))
    _assert_same_policy(restore_learner(str(tmp_path / "a"), "toy_models:small",
                                        "toy_models:small"), result)
    resumed = pg_keras.train(config, root_dir=str(tmp_path / "a"))  # the finished run
    _assert_same_policy(resumed.learner, result)
    # A factory given in Python that its module defines is recorded by its name.
    result = pg_keras.train(CONFIG, root_dir=str(tmp_path / "b"), policy_network=toy_models.small)
    assert _recorded(tmp_path / "b") == ("toy_models:small", "")
    _assert_same_policy(restore_learner(str(tmp_path / "b"), "toy_models:small"), result)


def test_a_python_object_run_is_restored_from_python_and_refused_by_launchers(tmp_path):
    root = str(tmp_path / "run")

    def factory(shape, units):
        return toy_models.small(shape, units)

    result = pg_keras.train(CONFIG, root_dir=root, policy_network=factory)
    assert _recorded(root) == ("<python object test_a_python_object_run_is_restored_from_python"
                               "_and_refused_by_launchers.<locals>.factory>", "")
    _assert_same_policy(restore_learner(root, policy_network=factory), result)
    needs = "was trained with a policy network given as a Python object"
    with pytest.raises(pg_keras.InputError, match=needs):
        restore_learner(root)
    with pytest.raises(pg_keras.InputError, match=needs):
        pg_keras.train(CONFIG, root_dir=root)  # resuming without it
    again = pg_keras.train(CONFIG, root_dir=root, policy_network=factory)  # with it
    assert int(again.learner.updates.numpy()) == int(result.learner.updates.numpy())

    before = sorted(os.listdir(root))
    # Both launchers, one after the other, in one fresh interpreter (tests/launchers.py keeps
    # their flags apart): each answers in a line of its own, and nothing more reaches the
    # process's stderr.
    runs = [("experiments.export", [f"--root_dir={root}", f"--export_dir={tmp_path / 'export'}"]),
            ("experiments.train", [f"--root_dir={root}", "--total_steps=512", "--num_envs=4",
                                   "--eval_every=512", "--eval_episodes=2"])]
    probe = ("import json, launchers\n"
             f"runs = [launchers.run(module, *args) for module, args in {runs!r}]\n"
             "print(json.dumps([[run.returncode, run.stderr] for run in runs]))\n")
    process = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=300, env=ENV)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "Traceback" not in process.stderr and "WARNING:tensorflow" not in process.stderr
    for (module, _), (code, stderr) in zip(runs, json.loads(process.stdout.splitlines()[-1])):
        assert code == 2, stderr[-2000:]
        name = module.split(".")[1]
        lines = [line for line in stderr.splitlines() if line.startswith(f"{name}: error:")]
        assert len(lines) == 1 and needs in lines[0] and "restore_learner" in lines[0], lines
        assert "Traceback" not in stderr and "WARNING:tensorflow" not in stderr
    assert sorted(os.listdir(root)) == before and not (tmp_path / "export").exists()


def test_an_unrecorded_custom_model_is_refused_in_one_line(tmp_path):
    """A run trained with its own model before the run directory recorded models."""
    root = tmp_path / "run"
    pg_keras.train(CONFIG, root_dir=str(root), policy_network=toy_models.small)
    config = json.loads((root / "config.json").read_text())
    del config["policy_network"], config["value_network"]
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(pg_keras.InputError, match=r"holds another policy network than the one "
                                                  r"built for it \(variable shapes \[\[4, 16\]"):
        restore_learner(str(root))


@pytest.mark.parametrize("reference, message", [
    ("no_colon", "policy_network must be 'module:factory'"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz' of "
                             "policy_network='no_such_module_xyz:f': ModuleNotFoundError"),
    ("toy_models:missing", "module 'toy_models' has no attribute 'missing'"),
    ("toy_models:NOT_A_FACTORY", "policy_network must name a factory (observation_shape, "
                                 "output_units) -> keras.Model; received "
                                 "policy_network='toy_models:NOT_A_FACTORY', a int"),
    ("toy_models:takes_nothing", "policy_network factory must take (observation_shape, "
                                 "output_units)"),
    ("toy_models:wrong_output", "policy_network must map [B, 4] to [B, 2]; received output "
                                "shape [B, 3]"),
])
def test_a_bad_reference_is_refused_before_anything_is_written(tmp_path, reference, message):
    root = tmp_path / "run"
    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.train(CONFIG.replace(policy_network=reference), root_dir=str(root))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not root.exists()


def test_a_model_given_twice_differently_is_refused():
    with pytest.raises(pg_keras.InputError, match="policy_network is given twice"):
        pg_keras.train(CONFIG.replace(policy_network="toy_models:small"),
                       policy_network=lambda shape, units: toy_models.small(shape, units))


# tests/test_launcher.py's train-and-re-export test (default suite) trains the same named
# models through the launcher, checks the record and compares the two exports.
@pytest.mark.slow
def test_launchers_train_and_export_a_named_model(tmp_path):
    root, first, second = tmp_path / "run", tmp_path / "export_a", tmp_path / "export_b"
    command = ["--policy_network=examples.custom_model:policy",
               "--value_network=examples.custom_model:value", "--total_steps=512",
               "--num_envs=4", "--eval_every=512", "--eval_episodes=2", "--quiet",
               f"--root_dir={root}", f"--export_dir={first}"]
    run = launchers.run("experiments.train", *command)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _recorded(root) == ("examples.custom_model:policy",
                               "examples.custom_model:value")
    run = launchers.run("experiments.export", f"--root_dir={root}", f"--export_dir={second}",
                        "--policy_network=examples.custom_model:policy",
                        "--value_network=examples.custom_model:value")
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = tf.saved_model.load(str(first)), tf.saved_model.load(str(second))
    np.testing.assert_array_equal(a(OBSERVATIONS).numpy(), b(OBSERVATIONS).numpy())
