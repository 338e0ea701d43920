"""Run directories: files, checkpoints, resume after a crash, config mismatches."""

import glob
import json
import os
import shutil

import numpy as np
import pytest

import pg_keras
from pg_keras.config import FORMAT_VERSION

CONFIG = pg_keras.Config(total_steps=3072, num_envs=4, steps_per_update=32, eval_every=1024,
                         eval_episodes=2, normalize_observations=True)


def _state(result):
    learner = result.learner
    variables = (learner.policy_variables + learner.value_variables
                 + list(learner.policy_optimizer.variables) + list(learner.value_optimizer.variables)
                 + list(learner.normalizer.weights))
    return [np.asarray(v.numpy()) for v in variables]


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(run directory, result) of CONFIG trained to the end; tests that write to a run
    directory write to a copy."""
    root = tmp_path_factory.mktemp("finished") / "run"
    return str(root), pg_keras.train(CONFIG, root_dir=str(root))


def _copy(finished, tmp_path):
    root = str(tmp_path / "run")
    shutil.copytree(finished[0], root)
    return root


def test_resume_after_a_crash_matches_an_uninterrupted_run(finished, tmp_path):
    _, uninterrupted = finished

    updates = []

    def crash_after_13(record):
        updates.append(record)
        if len(updates) == 13:  # past the checkpoint at 1024 steps (update 8)
            raise Crash

    with pytest.raises(Crash):
        pg_keras.train(CONFIG, root_dir=str(tmp_path / "b"), callbacks=[
            pg_keras.LambdaCallback(on_update_end=crash_after_13)])
    resumed = pg_keras.train(CONFIG, root_dir=str(tmp_path / "b"))

    for a, b in zip(_state(uninterrupted), _state(resumed)):
        np.testing.assert_array_equal(a, b)
    assert uninterrupted.evaluations == resumed.evaluations
    # The metrics file holds each update once: the updates redone after the crash replace
    # the ones written before it.
    steps = [r["env_steps"] for r in resumed.history]
    assert steps == [128 * (i + 1) for i in range(24)]
    a_losses = [r["loss"] for r in uninterrupted.history]
    assert [r["loss"] for r in resumed.history] == a_losses


def test_run_directory_files(finished):
    root, result = finished
    with open(os.path.join(root, "config.json")) as f:
        assert pg_keras.Config.from_dict(json.load(f)) == CONFIG
    with open(os.path.join(root, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 24 and records[-1]["env_steps"] == 3072
    for key in ("wall_seconds", "loss", "policy_loss", "value_loss", "entropy",
                "policy_grad_norm", "steps_per_second"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert any("return_mean" in r for r in records)
    with open(os.path.join(root, "evaluations.jsonl")) as f:
        evaluations = [json.loads(line) for line in f]
    assert [e["env_steps"] for e in evaluations] == [1024, 2048, 3072]
    with open(os.path.join(root, "summary.json")) as f:
        summary = json.load(f)
    assert summary["env_steps"] == 3072 and summary["final_return_mean"] == result.final_return
    assert summary["steps_per_second"] > 0 and summary["updates"] == 24
    assert glob.glob(os.path.join(root, "tensorboard", "events.out.tfevents.*"))
    assert os.path.exists(os.path.join(root, "checkpoints", "checkpoint"))
    # Three checkpoints are kept, each with its loop state (JSON) and its environments.
    kept = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "checkpoints",
                                                                        "*-*.*"))
                  if not os.path.basename(p).startswith("ckpt-"))
    assert kept == [f"{kind}-{n}.{ext}" for kind, ext in (("environments", "pkl"),
                                                          ("loop", "json"))
                    for n in (16, 24, 8)]
    with open(os.path.join(root, "checkpoints", "loop-24.json")) as f:
        loop = json.load(f)
    assert loop["env_steps"] == 3072 and loop["format_version"] == FORMAT_VERSION
    assert [e["env_steps"] for e in loop["evaluations"]] == [1024, 2048, 3072]


def test_a_finished_run_resumes_without_training_more(finished, tmp_path):
    _, first = finished
    again = pg_keras.train(CONFIG, root_dir=_copy(finished, tmp_path))
    assert int(again.learner.updates.numpy()) == 24
    for a, b in zip(_state(first), _state(again)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_a_gaussian_policy_run_resumes_and_restores(tmp_path, state_dependent_std):
    # A state-independent log-std is both the head's variable and the policy's: the
    # checkpoint stores it once, and the model check must still find it.
    config = CONFIG.replace(env_id="Pendulum-v1", total_steps=512, eval_every=0,
                            state_dependent_std=state_dependent_std)
    root = str(tmp_path / "run")
    first = pg_keras.train(config, root_dir=root)
    again = pg_keras.train(config, root_dir=root)
    restored = pg_keras.run_dir.restore_learner(root)
    for a, b, c in zip(_state(first), _state(again), [*(
            v.numpy() for v in restored.policy_variables + restored.value_variables)]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_different_config_is_refused_and_named(finished, tmp_path):
    root = _copy(finished, tmp_path)
    before = sorted(os.listdir(root))
    with pytest.raises(ValueError, match=r"different config \(gamma: 0\.99 -> 0\.9\)"):
        pg_keras.train(CONFIG.replace(gamma=0.9), root_dir=root)
    assert sorted(os.listdir(root)) == before
    result = pg_keras.train(CONFIG.replace(gamma=0.9), root_dir=root, callbacks=[
        pg_keras.Checkpointing(overwrite=True)])
    assert int(result.learner.updates.numpy()) == 24  # started over, not resumed
    with open(os.path.join(root, "config.json")) as f:
        assert json.load(f)["gamma"] == 0.9


def test_a_new_best_clears_an_earlier_write_that_was_killed(finished, tmp_path):
    # A kill during a checkpoint write leaves TensorFlow's temporary directory behind.
    checkpointer = pg_keras.checkpoint.Checkpointer(str(tmp_path), finished[1].learner)
    best = tmp_path / pg_keras.checkpoint.BEST
    (best / "ckpt-1024_temp").mkdir(parents=True)
    (best / "ckpt-1024_temp" / "part-00000-of-00001.index").write_bytes(b"")
    evaluation = {"env_steps": 2048, "mean_return": 1.0, "std_return": 0.0}
    checkpointer.save_best(evaluation)
    assert sorted(p.name for p in best.iterdir()) == [
        "ckpt-2048.data-00000-of-00001", "ckpt-2048.index", "evaluation.json"]
