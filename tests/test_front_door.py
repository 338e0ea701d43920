"""What a new user meets first: stored configs of older versions, the launchers' start-up
and their one-line refusals of bad input, made before TensorFlow or training starts."""

import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
import types

import gymnasium as gym
import keras
import numpy as np
import pytest

import launchers
import pg_keras
from earlier_defaults import EARLIER_DEFAULT_FLAGS
from pg_keras.config import FORMAT_VERSION
from pg_keras.env_limits import MAX_NUM_ENVS, check_num_envs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
ENV.pop("PG_KERAS_TF_LOGS", None)
ENV.pop("PG_KERAS_MAX_NUM_ENVS", None)


def _fixture_config() -> dict:
    with open(os.path.join(FIXTURES, "cartpole-run", "config.json")) as f:
        return json.load(f)


# Stored configs: one rule for run directories and exports.

def test_a_stored_config_of_an_earlier_format_is_refused_in_one_line():
    stored = {**_fixture_config(), "format_version": 1}
    message = (r"run/config.json was written by an earlier version of pg_keras "
               r"\(format_version 1; this version reads format 3 only\): train again")
    with pytest.raises(pg_keras.InputError, match=message):
        pg_keras.Config.from_dict(stored, "run/config.json")


def test_the_stored_format_version_is_written_read_and_a_later_one_refused():
    config = pg_keras.Config()
    stored = config.to_stored()
    assert stored["format_version"] == FORMAT_VERSION == 3
    assert pg_keras.Config.from_dict(json.loads(json.dumps(stored))) == config
    assert config.differences(stored) == []
    later = {**stored, "format_version": FORMAT_VERSION + 1}
    message = (r"run/config.json was written by a later version of pg_keras \(format_version "
               r"4; this version reads format 3 only\): upgrade pg_keras")
    with pytest.raises(pg_keras.InputError, match=message):
        pg_keras.Config.from_dict(later, "run/config.json")
    with pytest.raises(pg_keras.InputError, match=message):
        config.differences(later, "run/config.json")


def test_an_unknown_stored_field_is_a_difference():
    stored = {**pg_keras.Config().to_stored(), "trust_radius": 0.2}
    assert pg_keras.Config().differences(stored) == ["trust_radius: 0.2 -> (absent)"]


def test_the_run_directory_has_one_format_version():
    from pg_keras import checkpoint, run_dir, space_json
    from pg_keras.cli import evaluate

    for module in (evaluate, run_dir, space_json):
        assert module.FORMAT_VERSION is FORMAT_VERSION, module
    assert not hasattr(checkpoint, "FORMAT_VERSION")  # its loop state is run_dir's
    assert run_dir.LoopState().to_dict()["format_version"] == FORMAT_VERSION


def test_a_run_directory_of_a_later_version_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(
        {**pg_keras.Config().to_stored(), "format_version": 99}))
    config = pg_keras.Config(total_steps=256, eval_every=0)
    with pytest.raises(pg_keras.InputError, match="format_version 99; this version reads format"):
        pg_keras.train(config, root_dir=str(run_dir))
    assert sorted(os.listdir(run_dir)) == [".lock", "config.json"]


def test_an_export_of_a_later_version_is_refused_by_evaluate_in_one_line(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(json.dumps({"format_version": 7,
                                                    "env_id": "CartPole-v1"}))
    run = _launch("experiments.evaluate", f"--saved_model={export}", cwd=tmp_path)
    _assert_one_line(run, "evaluate", "was written by a later version of pg_keras "
                     "(format_version 7; this version reads format 3 only)")


# The launchers: quiet start, bad flags before TensorFlow, one line for bad input.

def _launch(module, *args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd or ROOT, env=env or ENV)


def _assert_one_line(run, name, message):
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), run.stderr[-3000:]
    assert message in lines[0], lines[0]
    return lines[0]


BAD_FLAGS = [
    (["--gamma=abc"], "flag --gamma=abc: could not convert string to float: 'abc'"),
    (["--optimizer=sgdd"], "received optimizer='sgdd'"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--hidden_sizes=abc"], "hidden_sizes must be a tuple of positive integers; received "
                             "hidden_sizes='abc'"),
    (["--value_hidden_sizes=abc"], "value_hidden_sizes must be a tuple of positive integers; "
                                   "received value_hidden_sizes='abc'"),
    (["--num_envs=100000", "--total_steps=100000000"],
     "received num_envs=100000. Use fewer, or several processes (--strategy=multi_worker), "
     "or set PG_KERAS_MAX_NUM_ENVS=100000 to go past it"),
    (["--root_dir=/proc/foo"], "root_dir '/proc/foo' cannot be written: a directory cannot be "
                               "created in '/proc'"),
    (["--export_dir=/proc/x/sm"], "export_dir '/proc/x/sm' cannot be written: a directory "
                                  "cannot be created in '/proc'"),
    # The fixture export's learning settings (today's defaults differ), so that the message
    # names the differences in size alone (a run continued to a larger total_steps, or with
    # another eval_every, replaces the export of the run it continues).
    ([f"--export_dir={os.path.join(FIXTURES, 'cartpole-export')}", *EARLIER_DEFAULT_FLAGS],
     "holds the policy of another config (eval_episodes: 2 -> 20, "
     "hidden_sizes: [8] -> [64, 64], num_envs: 4 -> 8"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Each of BAD_FLAGS given to the train launcher's main block, each from an empty
    directory of its own, one after the other in one fresh interpreter (each run parses
    flags of its own): {"runs": [[exit code, stderr, files written]], "tensorflow":
    whether any imported it}. The process itself must write nothing to stderr."""
    base = tmp_path_factory.mktemp("bad_flags")
    probe = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        import launchers
        runs = []
        for i, args in enumerate({[args for args, _ in BAD_FLAGS]!r}):
            directory = os.path.join({str(base)!r}, str(i))
            os.mkdir(directory)
            run = launchers.run("experiments.train", *args, cwd=directory)
            runs.append([run.returncode, run.stderr, os.listdir(directory)])
        print(json.dumps({{"runs": runs, "tensorflow": "tensorflow" in sys.modules}}))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, cwd=base, env=ENV)
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)),
                         ids=[" ".join(args)[:40] for args, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_before_tensorflow_and_write_nothing(bad_flag_runs, case):
    args, message = BAD_FLAGS[case]
    code, stderr, written = bad_flag_runs["runs"][case]
    _assert_one_line(types.SimpleNamespace(returncode=code, stderr=stderr), "train", message)
    assert written == []
    assert bad_flag_runs["tensorflow"] is False


def test_an_env_id_of_a_package_not_imported_says_how_to_import_it(tmp_path, monkeypatch):
    # In this process: that a refusal is one line from a process is checked above. An
    # earlier test may have imported minigrid here: its ids are set aside for this one.
    for env_id in [k for k in gym.registry if k.startswith("MiniGrid-")]:
        monkeypatch.delitem(gym.registry, env_id)
    run = launchers.run("experiments.train", "--env_id=MiniGrid-Empty-5x5-v0", cwd=str(tmp_path))
    # The hint names the package when it is installed (minigrid is in the experiments extra).
    package = "minigrid" if importlib.util.find_spec("minigrid") else "package"
    _assert_one_line(run, "train", "env_id 'MiniGrid-Empty-5x5-v0' is not a registered "
                     "gymnasium environment: Environment `MiniGrid-Empty-5x5` doesn't exist; "
                     f"if a package registers it, --env_id={package}:MiniGrid-Empty-5x5-v0 "
                     "imports that package first")
    assert os.listdir(tmp_path) == []
    # A near miss of a registered id gets gymnasium's suggestion, not the package hint.
    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.make_vector_env("CartPol-v1", 1)
    assert "Did you mean" in str(error.value) and "package:" not in str(error.value)


def test_the_launchers_print_none_of_tensorflows_start_up_lines(fixture_run_exported):
    run, _ = fixture_run_exported  # the export launcher, without TF_CPP_MIN_LOG_LEVEL
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr == ""
    assert run.stdout.startswith("exported the policy of")


def test_the_start_up_filter_drops_tensorflows_lines_and_keeps_others():
    from pg_keras.cli.common import _STARTUP_NOISE

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 00:00:1796031433.345678    4586 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.",
        "E0000 00:00:1796031439.353453    4586 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "I0000 00:00:1796031838.267585    7080 cpu_feature_guard.cc:227] This TensorFlow binary "
        "is optimized to use available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.",
    ]
    kept = ["E0000 00:00:1796031439.353453    4586 gpu_device.cc:2] Could not load cuDNN",
            "Traceback (most recent call last):",
            "UserWarning: something the user should see"]
    assert all(_STARTUP_NOISE.match(line) for line in noise)
    assert not any(_STARTUP_NOISE.match(line) for line in kept)


def test_tf_logs_shows_tensorflows_start_up_lines(tmp_path):
    """With the switch, the start writes to stderr exactly what TensorFlow writes."""
    script = ("import os, sys\n"
              "from pg_keras.cli import common as cli\n"
              "cli.start_tensorflow(show_logs=bool(int(sys.argv[1])))\n"
              "os.write(2, b'after\\n')\n")
    quiet, loud, raw = launchers.run_processes(
        [sys.executable, "-c", script, "0"], [sys.executable, "-c", script, "1"],
        [sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
        cwd=ROOT, env=ENV)
    assert quiet.stderr == "after\n"
    assert len(loud.stderr.splitlines()) == len(raw.stderr.splitlines()) + 1


def test_an_export_that_fails_at_the_end_names_the_command_that_exports_again(tmp_path):
    from pg_keras.run_dir import restore_learner

    learner = restore_learner(os.path.join(FIXTURES, "cartpole-run"))
    target = tmp_path / "export"
    target.write_text("")  # a file where the export directory should go
    from pg_keras import run_dir

    with pytest.raises(pg_keras.TrainingError) as error:
        run_dir.export(learner.policy, learner.config, str(target), False, "runs/r")
    assert str(error.value).startswith("the export to export_dir"), error.value
    assert (f"the run directory 'runs/r' is kept, and `pg-keras-export "
            f"--root_dir=runs/r --export_dir={target}` exports it again") in str(error.value)


# The library's side of the same inputs.

def test_more_envs_than_the_bound_are_refused_before_any_is_built(monkeypatch):
    check_num_envs(MAX_NUM_ENVS)
    with pytest.raises(pg_keras.InputError, match="received num_envs=4097"):
        pg_keras.make_vector_env("CartPole-v1", MAX_NUM_ENVS + 1)
    monkeypatch.setenv("PG_KERAS_MAX_NUM_ENVS", "8")
    with pytest.raises(pg_keras.InputError, match="num_envs must be at most 8"):
        check_num_envs(9)
    monkeypatch.setenv("PG_KERAS_MAX_NUM_ENVS", "5000")
    check_num_envs(MAX_NUM_ENVS + 1)


def test_an_unwritable_root_dir_is_refused_by_the_library(tmp_path):
    with pytest.raises(pg_keras.InputError, match="root_dir '/proc/foo' cannot be written"):
        pg_keras.train(pg_keras.Config(total_steps=256, eval_every=0), root_dir="/proc/foo")


def _custom_activation(x):
    return keras.ops.tanh(x) * 1.5


def _custom_policy(shape, units):
    return keras.Sequential([keras.Input(shape),
                             keras.layers.Dense(16, activation=_custom_activation),
                             keras.layers.Dense(units)])


def test_a_custom_activation_falls_back_to_tensorflow_sampling():
    from pg_keras.collect.numpy_policy import NumpyPolicy

    config = pg_keras.Config(total_steps=256, num_envs=4, eval_every=0, eval_episodes=1)
    result = pg_keras.train(config, policy_network=_custom_policy)
    assert NumpyPolicy.supports(result.policy) is False
    assert result.env_steps == 256
    assert result.learner.policy.network.layers[0].activation is _custom_activation


def _unseeded_policy(shape, units):
    """Keras draws these initializers' seeds from Python's random module."""
    return keras.Sequential([keras.Input(shape), keras.layers.Dense(8, activation="tanh"),
                             keras.layers.Dense(units)])


def test_train_leaves_the_callers_random_streams_alone_and_seeds_the_weights():
    config = pg_keras.Config(total_steps=128, num_envs=4, eval_every=0, eval_episodes=1,
                             seed=5)
    weights = []
    for caller_seed in (1, 2):
        random.seed(caller_seed)
        np.random.seed(caller_seed)
        expected = (random.random(), np.random.rand())
        random.seed(caller_seed)
        np.random.seed(caller_seed)
        result = pg_keras.train(config, policy_network=_unseeded_policy)
        assert (random.random(), np.random.rand()) == expected
        weights.append([v.numpy() for v in result.learner.policy_variables])
    # Same config seed, whatever the caller's streams: the same weights after training.
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_stored_config_without_a_format_version_is_refused_in_one_line():
    stored = {k: v for k, v in _fixture_config().items() if k != "format_version"}
    with pytest.raises(pg_keras.InputError, match=r"\(format_version 1; this version reads "):
        pg_keras.Config().differences(stored, "run/config.json")
    with pytest.raises(pg_keras.InputError, match="run/config.json was written by an earlier"):
        pg_keras.Config.from_stored(stored, "run/config.json")
    assert pg_keras.Config.from_dict(stored) == pg_keras.Config.from_dict(_fixture_config())
