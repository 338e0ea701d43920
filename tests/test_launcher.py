"""The train launcher end to end: kill its process, run it again, same weights; and the
other launchers, run in this process (tests/launchers.py) where a process of their own adds
nothing to what is checked."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import launchers

FLAGS = ["--total_steps=12288", "--num_envs=4", "--steps_per_update=32", "--eval_every=2048",
         "--eval_episodes=2", "--nouse_progress_bar", "--quiet", "--noexport"]


def _train(root_dir):
    return subprocess.Popen([sys.executable, "-m", "experiments.train", f"--root_dir={root_dir}"]
                            + FLAGS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_variables(root_dir):
    reader = tf.train.load_checkpoint(os.path.join(root_dir, "checkpoints"))
    names = sorted(n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n
                   and not n.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter")))
    return {n: reader.get_tensor(n) for n in names}


# tests/test_reliability.py's random kills (default suite) kill the same launcher after a
# checkpoint, resume it, and compare every variable with an uninterrupted run.
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    reference = launchers.run("experiments.train", f"--root_dir={tmp_path / 'reference'}",
                              *FLAGS)
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    run = _train(killed_dir)
    marker = killed_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be killed"
    time.sleep(0.3)
    run.send_signal(signal.SIGKILL)
    run.wait()

    resumed = launchers.run("experiments.train", f"--root_dir={killed_dir}", *FLAGS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "final evaluation return" in resumed.stdout

    expected, actual = _final_variables(tmp_path / "reference"), _final_variables(killed_dir)
    assert expected.keys() == actual.keys() and len(expected) > 10
    for name in expected:
        np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)


def _fake_run(path, seed, gamma, returns):
    import json

    import pg_keras

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(pg_keras.Config(seed=seed, gamma=gamma).to_dict()))
    (path / "evaluations.jsonl").write_text("".join(
        json.dumps({"env_steps": 1000 * (i + 1), "mean_return": r, "std_return": 0.0}) + "\n"
        for i, r in enumerate(returns)))
    return str(path)


def test_plot_groups_seeds_and_writes_a_png(tmp_path):
    from experiments.plot import group_by_config, read_curve

    runs = [_fake_run(tmp_path / "a0", 0, 0.99, [10, 50, 90]),
            _fake_run(tmp_path / "a1", 1, 0.99, [30, 70, 110]),
            _fake_run(tmp_path / "b0", 0, 0.9, [5, 6, 7])]
    groups = group_by_config(runs)
    assert groups == {"gamma=0.99 (2 seeds)": runs[:2], "gamma=0.9": runs[2:]}
    assert read_curve(runs[1], "eval") == ([1000, 2000, 3000], [30, 70, 110])

    out = tmp_path / "curves.png"
    run = launchers.run("experiments.plot", f"--root_dirs={','.join(runs)}", f"--out={out}")
    assert run.returncode == 0, run.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_train_exports_and_export_launcher_reexports_the_same_policy(tmp_path):
    root, first, second = tmp_path / "run", tmp_path / "export_a", tmp_path / "export_b"
    # Models named by flags: the run records them, and the export launcher rebuilds them
    # when its own flags name them again (never from the record alone).
    run = launchers.run("experiments.train", "--total_steps=1024", "--eval_episodes=2",
                        "--policy_network=examples.custom_model:policy",
                        "--value_network=examples.custom_model:value",
                        "--quiet", f"--root_dir={root}", f"--export_dir={first}")
    assert run.returncode == 0, run.stderr[-2000:]
    with open(root / "config.json") as f:
        recorded = json.load(f)
    assert (recorded["policy_network"], recorded["value_network"]) == (
        "examples.custom_model:policy", "examples.custom_model:value")
    run = launchers.run("experiments.export", f"--root_dir={root}", f"--export_dir={second}")
    assert run.returncode == 2 and "pass --policy_network=examples.custom_model:policy" \
        in run.stderr, run.stderr[-2000:]
    run = launchers.run("experiments.export", f"--root_dir={root}", f"--export_dir={second}",
                        "--policy_network=examples.custom_model:policy",
                        "--value_network=examples.custom_model:value")
    assert run.returncode == 0, run.stderr[-2000:]
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    a, b = tf.saved_model.load(str(first)), tf.saved_model.load(str(second))
    np.testing.assert_array_equal(a(observations).numpy(), b(observations).numpy())
    np.testing.assert_allclose(a.distribution(observations)["logits"].numpy(),
                               b.distribution(observations)["logits"].numpy(), rtol=1e-6)
    # Another config may not replace that export without --overwrite; nothing is trained
    # (a process of its own: the refusal comes before TensorFlow starts).
    run = subprocess.run([sys.executable, "-m", "experiments.train", "--total_steps=1024",
                          "--gamma=0.5", f"--root_dir={tmp_path / 'other'}",
                          f"--export_dir={first}"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "holds the policy of another config" in run.stderr
    assert not (tmp_path / "other").exists()


def test_the_flags_page_is_the_generated_one():
    from experiments import flags_doc

    with open(flags_doc.PAGE) as f:
        assert f.read() == flags_doc.page(), (
            "docs/flags.md is stale: run `python -m experiments.flags_doc`")


def test_committed_cartpole_savedmodel_solves_cartpole_through_the_evaluate_command():
    """The shipped model, run by the evaluate command (that the command needs TensorFlow
    alone, without pg_keras, is checked in a fresh interpreter by tests/test_export.py)."""
    model = os.path.join(os.path.dirname(__file__), "..", "saved_models", "cartpole-v1")
    run = launchers.run("experiments.evaluate", f"--saved_model={model}", "--env=CartPole-v1",
                        "--episodes=20", "--seed=123")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["mean_return"] >= 475, result


def test_custom_model_example_trains_and_exports(tmp_path):
    export = tmp_path / "custom"
    run = subprocess.run([sys.executable, "-m", "examples.custom_model", "--total_steps=2000",
                          f"--export_dir={export}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "final evaluation return" in run.stdout
    # Its factories, defined in the script run with -m, are recorded by their module's name.
    with open(export / "config.json") as f:
        assert json.load(f)["policy_network"] == "examples.custom_model:policy"
    policy = tf.saved_model.load(str(export))
    actions = policy(np.zeros((3, 4), np.float32)).numpy()
    assert actions.shape == (3,) and set(actions.tolist()) <= {0, 1}


def test_env_registered_by_an_imported_module_trains(tmp_path, monkeypatch):
    """`--env_id=module:Env-v0` imports the module that registers the env."""
    (tmp_path / "my_envs_pkg.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyCartPole-v7', entry_point='gymnasium.envs.classic_control:CartPoleEnv',"
        " max_episode_steps=50)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my_envs_pkg" not in sys.modules
    try:
        run = launchers.run("experiments.train", "--env_id=my_envs_pkg:MyCartPole-v7",
                            "--total_steps=512", "--eval_episodes=2", "--quiet", "--noexport",
                            f"--root_dir={tmp_path / 'run'}")
    finally:
        sys.modules.pop("my_envs_pkg", None)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "MyCartPole-v7" in run.stdout


def test_solve_rate_reports_each_seed_and_a_summary(tmp_path):
    import json

    out = tmp_path / "rows.jsonl"
    # The seeds train the model the flag names.
    run = launchers.run("experiments.solve_rate", "--seeds=0,1", "--total_steps=2048",
                        "--eval_every=1024", "--eval_episodes=2",
                        "--policy_network=examples.custom_model:policy", "--target=5",
                        f"--output={out}")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("seed") for r in rows[:2]] == [0, 1] and rows[2]["summary"]
    # Every CartPole episode lasts more than 5 steps: both seeds "solve" at the first evaluation.
    assert [r["solved_at"] for r in rows[:2]] == [1024, 1024]
    assert rows[2]["solved"] == 2 and rows[2]["median_solved_at"] == 1024
    bad = subprocess.run([sys.executable, "-m", "experiments.solve_rate", "--seeds=a"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "received --seeds=a" in bad.stderr
