"""Bad input, bad data and faults: clear errors, nothing lost, nothing half-written."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
import run_files
import toy_envs  # noqa: F401  (registers the Pgk* envs)

TESTS = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "PYTHONPATH": TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")}


def launch(*args, env=None, module="experiments.train"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, env=env or ENV)


BAD_INPUT = [
    (["--policy_learning_rate=-1"], "policy_learning_rate must be a positive finite number; "
                                    "received policy_learning_rate=-1.0"),
    (["--num_envs=abc"], "flag --num_envs=abc"),
    (["--activation=swishy"], "received activation='swishy'"),
    (["--env_id=CartPol-v1"], "Did you mean: `CartPole`?"),
    (["--env_id=no_such_module:X-v0"], "names module 'no_such_module', which cannot be imported"),
    (["--env_id=toy_envs:PgkDictAction-v0"], "unsupported action space Dict"),
    (["--policy_network=toy_models:wrong_output"], "policy_network must map [B, 4] to [B, 2]; "
                                                   "received output shape [B, 3]"),
]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Each of BAD_INPUT given to the train launcher's main block, each with a run and an
    export directory of its own, one after the other in one fresh interpreter
    (tests/launchers.py keeps their flags apart): [[exit code, stderr, whether the run or
    the export directory exists]]. The process itself must write nothing to stderr."""
    base = tmp_path_factory.mktemp("bad_input")
    probe = textwrap.dedent(f"""
        import json, os
        import launchers
        runs = []
        for i, args in enumerate({[args for args, _ in BAD_INPUT]!r}):
            root, export = (os.path.join({str(base)!r}, f"{{name}}{{i}}")
                            for name in ("run", "export"))
            run = launchers.run("experiments.train", *args, f"--root_dir={{root}}",
                                f"--export_dir={{export}}")
            written = os.path.exists(root) or os.path.exists(export)
            runs.append([run.returncode, run.stderr, written])
        print(json.dumps(runs))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300, env=ENV)
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(BAD_INPUT)),
                         ids=[" ".join(args)[:40] for args, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_input_runs, case):
    message = BAD_INPUT[case][1]
    code, stderr, written = bad_input_runs[case]
    assert code == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("train: error:")]
    assert len(lines) == 1 and message in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not written


def test_keras_backend_other_than_tensorflow_is_refused():
    env = {**ENV, "KERAS_BACKEND": "jax"}
    run = launch("--total_steps=256", env=env)
    assert run.returncode == 2
    assert "received KERAS_BACKEND='jax'. Unset it or set KERAS_BACKEND=tensorflow" in run.stderr
    imported = subprocess.run([sys.executable, "-c", "import pg_keras"], capture_output=True,
                              text=True, env=env, timeout=120)
    assert imported.returncode != 0 and "KERAS_BACKEND='jax'" in imported.stderr


CONFIG = pg_keras.Config(total_steps=2048, num_envs=4, steps_per_update=32, eval_every=1024,
                         eval_episodes=2)


def test_root_dir_in_use_by_a_live_run_is_refused(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        with pytest.raises(pg_keras.InputError, match=r"in use by a live run \(pid 4242\)"):
            pg_keras.train(CONFIG, root_dir=str(root))
    assert sorted(os.listdir(root)) == [".lock"]
    pg_keras.train(CONFIG, root_dir=str(root))  # the lock died with its holder


def test_a_different_config_on_the_command_line_names_the_fields(tmp_path):
    root = tmp_path / "run"
    first = launchers.run("experiments.train", "--total_steps=512", "--eval_episodes=2",
                          "--noexport", f"--root_dir={root}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: os.path.getmtime(root / p) for p in os.listdir(root)}
    run = launch("--total_steps=512", "--eval_episodes=2", "--gamma=0.5", "--noexport",
                 f"--root_dir={root}")
    assert run.returncode == 2
    assert "different config (gamma: 0.99 -> 0.5)" in run.stderr and "--overwrite" in run.stderr
    assert {p: os.path.getmtime(root / p) for p in os.listdir(root)} == before


@pytest.mark.parametrize("env_id, field", [("PgkFaultyReward-v0", "reward (nan)"),
                                           ("PgkFaultyObservation-v0", "observation")])
def test_non_finite_env_data_stops_the_run_naming_step_and_field(tmp_path, env_id, field):
    config = pg_keras.Config(env_id=env_id, num_envs=2, steps_per_update=16, total_steps=4096,
                             eval_every=0, eval_episodes=1)
    root = tmp_path / "run"
    # The first episodes are clean: checkpoint after the first update, then the fault.
    with pytest.raises(pg_keras.TrainingError) as error:
        pg_keras.train(config, root_dir=str(root), callbacks=[pg_keras.Checkpointing(every=32)])
    message = str(error.value)
    assert f"returned a non-finite {field}" in message and "env step " in message
    assert "last checkpoint is intact" in message
    # What was saved before the fault restores, and holds finite weights.
    learner = pg_keras.run_dir.restore_learner(str(root))
    assert all(np.isfinite(v.numpy()).all() for v in learner.policy_variables)


def test_drop_mode_masks_and_counts_non_finite_episodes():
    config = pg_keras.Config(env_id="PgkFaultyReward-v0", num_envs=2, steps_per_update=16,
                             total_steps=1024, eval_every=0, eval_episodes=1,
                             on_nonfinite="drop")
    result = pg_keras.train(config)
    assert result.history[-1]["dropped_episodes"] > 0
    assert all(r["skipped"] == 0.0 for r in result.history)
    assert all(np.isfinite(v.numpy()).all() for v in result.learner.policy_variables)
    # Episodes are 10 steps of reward 1: no dropped NaN episode leaks into the returns.
    assert all(r.get("return_mean", 10.0) == 10.0 for r in result.history)


def test_consecutive_non_finite_updates_stop_the_run_with_remedies():
    config = pg_keras.Config(env_id="PgkHugeReward-v0", num_envs=2, steps_per_update=16,
                             total_steps=4096, eval_every=0, eval_episodes=1,
                             max_consecutive_skips=3, gamma=1.0)
    records = []
    with pytest.raises(pg_keras.TrainingError, match="3 consecutive updates were skipped.*"
                                                     "lower learning rate"):
        pg_keras.train(config, callbacks=[pg_keras.LambdaCallback(on_update_end=records.append)])
    assert [r["skipped"] for r in records] == [1.0, 1.0, 1.0]


def _final_variables(root):
    reader = tf.train.load_checkpoint(os.path.join(root, "checkpoints"))
    names = [n for n in reader.get_variable_to_shape_map()
             if not n.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))]
    return {n: reader.get_tensor(n) for n in names}


KILL_FIELDS = dict(total_steps=4096, num_envs=4, steps_per_update=32, eval_every=2048,
                   eval_episodes=2)
KILL_EVERY = 512
KILLED_RUN = textwrap.dedent("""
    import sys
    import pg_keras
    pg_keras.train(pg_keras.Config(**{fields!r}), root_dir=sys.argv[1], export_dir=sys.argv[2],
                   callbacks=[pg_keras.Checkpointing(every={every})])
""").format(fields=KILL_FIELDS, every=KILL_EVERY)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(run directory, export) of the run the killed ones must end as."""
    base = tmp_path_factory.mktemp("uninterrupted")
    pg_keras.train(pg_keras.Config(**KILL_FIELDS), root_dir=str(base / "run"),
                   export_dir=str(base / "export"),
                   callbacks=[pg_keras.Checkpointing(every=KILL_EVERY)])
    return base / "run", base / "export"


def _records(root):
    """metrics.jsonl without the wall-clock figures."""
    with open(os.path.join(root, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items()
                 if k not in ("wall_seconds", "steps_per_second")} for line in f]


# Each point is reached mid-run: the 14th update (1792 env steps) follows the checkpoint at
# 1536, the third checkpoint is that one, and the export comes once the run is over.
# The save cut short and the export are the delicate points; the others run with
# `make test-slow` (each kill costs a process start and two runs).
@pytest.mark.parametrize("fault", [
    pytest.param("collect:14", marks=pytest.mark.slow),
    pytest.param("update:14", marks=pytest.mark.slow), "checkpoint_save:3",
    pytest.param("checkpoint:3", marks=pytest.mark.slow), "export:1"])
def test_a_kill_at_each_point_of_the_loop_loses_neither_the_run_nor_the_export(
        uninterrupted, fault, tmp_path):
    reference, reference_export = uninterrupted
    killed, export = tmp_path / "killed", tmp_path / "export"
    # An export of this config that the kill must leave loadable (the run replaces it).
    shutil.copytree(reference_export, export)
    process = subprocess.run([sys.executable, "-c", KILLED_RUN, str(killed), str(export)],
                             capture_output=True, text=True, timeout=300,
                             env={**ENV, "PG_KERAS_FAULT": fault})
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    if (killed / "checkpoints" / "checkpoint").exists():
        assert tf.train.latest_checkpoint(str(killed / "checkpoints"))
    loaded = tf.saved_model.load(str(export))
    assert loaded(np.zeros((1, 4), np.float32)).shape == (1,)

    resumed = pg_keras.train(pg_keras.Config(**KILL_FIELDS), root_dir=str(killed),
                             export_dir=str(export),
                             callbacks=[pg_keras.Checkpointing(every=KILL_EVERY)])
    assert resumed.env_steps == KILL_FIELDS["total_steps"]
    expected, actual = _final_variables(reference), _final_variables(killed)
    assert sorted(expected) == sorted(actual)
    for name in expected:
        np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)
    assert _records(killed) == _records(reference)  # every record once, in order
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # no half-written export
    again = tf.saved_model.load(str(export))
    observations = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(again(observations).numpy(),
                                  resumed.policy.predict(observations)[0])


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory):
    """signal -> (run directory, exit code, stdout, stderr) of a long train process that
    got the signal once it had written its first records. The two processes run at once."""
    base = tmp_path_factory.mktemp("signalled")
    runs = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        root = base / signum.name
        runs[signum] = root, subprocess.Popen(
            [sys.executable, "-m", "experiments.train", "--total_steps=400000",
             "--eval_every=0", "--noexport", "--nouse_progress_bar", f"--root_dir={root}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 120
    for signum, (root, process) in runs.items():
        while not (root / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signum)
    results = {}
    for signum, (root, process) in runs.items():
        out, err = process.communicate(timeout=120)
        results[signum] = root, process.returncode, out, err
    return results


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_save_a_checkpoint_and_the_summary(signalled_runs, signum, code):
    root, returncode, out, err = signalled_runs[signum]
    assert returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert f"interrupted by {signal.Signals(signum).name}" in out
    with open(root / "summary.json") as f:
        summary = json.load(f)
    assert summary["interrupted"] == signal.Signals(signum).name
    assert 0 < summary["env_steps"] < 400000
    steps_at_checkpoint = summary["env_steps"]
    with open(root / "metrics.jsonl") as f:
        assert json.loads(f.readlines()[-1])["env_steps"] == steps_at_checkpoint
    assert tf.train.latest_checkpoint(str(root / "checkpoints")).endswith(
        f"ckpt-{steps_at_checkpoint // 256}")


def test_same_seed_same_weights_and_metrics_except_wall_clock():
    def run(**overrides):
        result = pg_keras.train(CONFIG.replace(**overrides))
        records = [{k: v for k, v in r.items() if k not in ("wall_seconds", "steps_per_second")}
                   for r in result.history]
        return [v.numpy() for v in result.learner.policy_variables], records

    weights_a, records_a = run()
    weights_b, records_b = run()
    assert records_a == records_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    weights_c, records_c = run(seed=1)
    assert records_c != records_a


def test_an_interrupted_and_resumed_run_logs_every_update_once(tmp_path):
    root = str(tmp_path / "run")
    first = []

    def interrupt_after_the_fifth(record):
        first.append(record)
        if len(first) == 5:  # the loop stops after the next update
            os.kill(os.getpid(), signal.SIGTERM)

    interrupted = pg_keras.train(CONFIG, root_dir=root, callbacks=[
        pg_keras.LambdaCallback(on_update_end=interrupt_after_the_fifth)])
    assert interrupted.interrupted == "SIGTERM" and interrupted.env_steps == 6 * 128
    second = []
    resumed = pg_keras.train(CONFIG, root_dir=root, callbacks=[
        pg_keras.LambdaCallback(on_update_end=second.append)])
    assert resumed.history == first + second
    with open(os.path.join(root, "metrics.jsonl")) as f:
        assert [json.loads(line) for line in f] == resumed.history
    assert [r["env_steps"] for r in resumed.history] == [128 * (i + 1) for i in range(16)]
    scalars = run_files.train_scalars(os.path.join(root, "tensorboard"))
    assert scalars["train/loss"] == [(r["env_steps"], float(np.float32(r["loss"])))
                                     for r in resumed.history]
    uninterrupted = pg_keras.train(CONFIG)
    wall = ("wall_seconds", "steps_per_second")
    assert ([{k: v for k, v in r.items() if k not in wall} for r in resumed.history]
            == [{k: v for k, v in r.items() if k not in wall} for r in uninterrupted.history])
