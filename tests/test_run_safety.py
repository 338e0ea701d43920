"""Run directories are data: reading one to export or evaluate never executes anything in it.

A crafted pickle (whose unpickling creates a marker file) is planted where the loop state
and the environments' state lie, in today's layout and in the format-1 layout
(``loop-N.pkl``); restoring, exporting and evaluating neither run it nor need it, and
resuming (which trusts the directory) restores exactly.
"""

import glob
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
from pg_keras.checkpoint import FORMAT_VERSION, Evaluation, LoopState
from pg_keras.training import restore_learner

CONFIG = pg_keras.Config(total_steps=1024, num_envs=4, steps_per_update=32, eval_every=512,
                         eval_episodes=2)


class _Planted:
    """Unpickling this creates ``path``: the proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _plant(checkpoints, marker, layout):
    """Puts the crafted pickle in place of every pickle a checkpoint has (or had)."""
    payload = pickle.dumps(_Planted(str(marker)))
    numbers = [p.split("-")[-1].split(".")[0] for p in glob.glob(f"{checkpoints}/loop-*.json")]
    assert numbers
    for number in numbers:
        if layout == "format 1":  # one loop-N.pkl, no JSON
            os.remove(f"{checkpoints}/loop-{number}.json")
            os.remove(f"{checkpoints}/environments-{number}.pkl")
        else:
            with open(f"{checkpoints}/environments-{number}.pkl", "wb") as f:
                f.write(payload)
        with open(f"{checkpoints}/loop-{number}.pkl", "wb") as f:
            f.write(payload)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained") / "run"
    result = pg_keras.train(CONFIG, root_dir=str(root))
    return root, result


@pytest.mark.parametrize("layout", ["format 2", "format 1"])
def test_restore_export_and_evaluate_never_unpickle_the_run_directory(tmp_path, trained_run,
                                                                      layout):
    source, result = trained_run
    root, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(source, root)
    _plant(root / "checkpoints", marker, layout)

    learner = restore_learner(str(root))
    observations = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(learner.policy.act(observations, greedy=True),
                                  result.policy.act(observations, greedy=True))
    returns = pg_keras.evaluate(learner.policy, CONFIG.env_id, episodes=2, seed=0)
    assert len(returns) == 2 and not marker.exists()

    if layout != "format 1":  # the launcher reads what restore_learner reads
        return
    export = tmp_path / "export"
    run = launchers.run("experiments.export", f"--root_dir={root}", f"--export_dir={export}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()
    served = tf.saved_model.load(str(export))
    np.testing.assert_array_equal(served(observations).numpy(),
                                  result.policy.act(observations, greedy=True))


def test_restoring_weights_needs_no_loop_state_or_environments(tmp_path, trained_run):
    source, result = trained_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    for path in glob.glob(f"{root}/checkpoints/*.pkl") + glob.glob(f"{root}/checkpoints/*.json"):
        os.remove(path)
    learner = restore_learner(str(root))
    for a, b in zip(learner.policy_variables, result.learner.policy_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


class Crash(Exception):
    pass


def _weights(result):
    learner = result.learner
    variables = (learner.policy_variables + learner.value_variables
                 + list(learner.policy_optimizer.variables)
                 + list(learner.value_optimizer.variables))
    return [np.asarray(v.numpy()) for v in variables] + [learner.rng.state.numpy()]


def _to_format_1(checkpoints):
    """Rewrites every checkpoint's loop state the way format 1 stored it: one pickle."""
    for path in glob.glob(f"{checkpoints}/loop-*.json"):
        number = path.split("-")[-1].split(".")[0]
        with open(path) as f:
            loop = json.load(f)
        with open(f"{checkpoints}/environments-{number}.pkl", "rb") as f:
            collector = pickle.load(f)
        old = {k: loop[k] for k in ("next_eval", "evaluations", "solved_at", "wall_seconds",
                                    "next_checkpoint", "consecutive_skips", "env_steps")}
        with open(f"{checkpoints}/loop-{number}.pkl", "wb") as f:
            pickle.dump({"loop": old, "collector": collector}, f)
        os.remove(path)
        os.remove(f"{checkpoints}/environments-{number}.pkl")


def test_a_format_1_run_directory_resumes_exactly(tmp_path):
    config = CONFIG.replace(total_steps=2048)
    uninterrupted = pg_keras.train(config, root_dir=str(tmp_path / "a"))
    updates = []

    def crash_after_6(record):
        updates.append(record)
        if len(updates) == 6:  # past the checkpoint at 512 steps (update 4)
            raise Crash

    with pytest.raises(Crash):
        pg_keras.train(config, root_dir=str(tmp_path / "b"), on_update=crash_after_6)
    _to_format_1(tmp_path / "b" / "checkpoints")
    resumed = pg_keras.train(config, root_dir=str(tmp_path / "b"))
    for a, b in zip(_weights(uninterrupted), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert resumed.evaluations == uninterrupted.evaluations
    # Its next checkpoints are written in today's format, and the old files are gone.
    names = sorted(os.listdir(tmp_path / "b" / "checkpoints"))
    assert "loop-16.json" in names and not [n for n in names if n.startswith("loop-")
                                            and n.endswith(".pkl")]


def test_loop_state_is_versioned_json_and_a_newer_format_is_refused(tmp_path):
    state = LoopState(env_steps=640, collector_steps=640, next_eval=1024, next_checkpoint=1024,
                      evaluations=[Evaluation(512, 21.5, 3.25)], solved_at=None,
                      wall_seconds=1.5, consecutive_skips=1)
    text = json.dumps(state.to_dict())
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    assert LoopState.from_dict(json.loads(text), "loop-5.json") == state
    newer = {**state.to_dict(), "format_version": FORMAT_VERSION + 1}
    with pytest.raises(pg_keras.InputError, match=r"loop-5.json has checkpoint format 3; .* "
                                                   "upgrade pg_keras"):
        LoopState.from_dict(newer, "loop-5.json")
