"""Run directories are data: reading one to export or evaluate never executes anything in it.

A crafted pickle (whose unpickling creates a marker file) is planted where the
environments' state lies; restoring, exporting and evaluating neither run it nor need it.
A run directory of checkpoint format 1 (``loop-N.pkl``) is refused without reading it.
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
from pg_keras.config import FORMAT_VERSION
from pg_keras.run_dir import Evaluation, LoopState, restore_learner

CONFIG = pg_keras.Config(total_steps=1024, num_envs=4, steps_per_update=32, eval_every=512,
                         eval_episodes=2)


class _Planted:
    """Unpickling this creates ``path``: the proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _plant(checkpoints, marker):
    """Puts the crafted pickle in place of every checkpoint's environments."""
    payload = pickle.dumps(_Planted(str(marker)))
    numbers = [p.split("-")[-1].split(".")[0] for p in glob.glob(f"{checkpoints}/loop-*.json")]
    assert numbers
    for number in numbers:
        with open(f"{checkpoints}/environments-{number}.pkl", "wb") as f:
            f.write(payload)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained") / "run"
    result = pg_keras.train(CONFIG, root_dir=str(root))
    return root, result


def test_restore_export_and_evaluate_never_unpickle_the_run_directory(tmp_path, trained_run):
    source, result = trained_run
    root, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(source, root)
    _plant(root / "checkpoints", marker)

    learner = restore_learner(str(root))
    observations = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(learner.policy.predict(observations)[0],
                                  result.policy.predict(observations)[0])
    returns = pg_keras.evaluate(learner.policy, CONFIG.env_id, episodes=2, seed=0)
    assert len(returns) == 2 and not marker.exists()

    export = tmp_path / "export"
    run = launchers.run("experiments.export", f"--root_dir={root}", f"--export_dir={export}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists()
    served = tf.saved_model.load(str(export))
    np.testing.assert_array_equal(served(observations).numpy(),
                                  result.policy.predict(observations)[0])


def test_restoring_weights_needs_no_loop_state_or_environments(tmp_path, trained_run):
    source, result = trained_run
    root = tmp_path / "run"
    shutil.copytree(source, root)
    for path in glob.glob(f"{root}/checkpoints/*.pkl") + glob.glob(f"{root}/checkpoints/*.json"):
        os.remove(path)
    learner = restore_learner(str(root))
    for a, b in zip(learner.policy_variables, result.learner.policy_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_finished_run_reports_its_result_without_unpickling_or_rewriting(tmp_path,
                                                                           trained_run):
    source, result = trained_run
    root, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(source, root)
    _plant(root / "checkpoints", marker)
    checkpoints = sorted((root / "checkpoints").rglob("*"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in checkpoints if p.is_file()}

    again = pg_keras.train(CONFIG, root_dir=str(root))

    assert not marker.exists()
    assert again.env_steps == result.env_steps and again.evaluations == result.evaluations
    assert int(again.learner.updates.numpy()) == int(result.learner.updates.numpy())
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in checkpoints if p.is_file()}
    assert after == before and sorted((root / "checkpoints").rglob("*")) == checkpoints


def test_a_format_1_run_directory_is_refused_in_one_line_without_reading_it(tmp_path,
                                                                             trained_run):
    source, _ = trained_run
    root, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(source, root)
    checkpoints = root / "checkpoints"
    for path in glob.glob(f"{checkpoints}/loop-*.json"):  # format 1: one loop-N.pkl each
        number = path.split("-")[-1].split(".")[0]
        os.remove(path)
        os.remove(f"{checkpoints}/environments-{number}.pkl")
        with open(f"{checkpoints}/loop-{number}.pkl", "wb") as f:
            f.write(pickle.dumps(_Planted(str(marker))))
    before = sorted(os.listdir(checkpoints))
    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.train(CONFIG, root_dir=str(root))
    message = str(error.value)
    assert "\n" not in message and "holds a checkpoint of format 1" in message, message
    assert "train again" in message and "release that wrote it" in message
    assert sorted(os.listdir(checkpoints)) == before and not marker.exists()


def test_loop_state_is_versioned_json_and_another_format_is_refused(tmp_path):
    state = LoopState(env_steps=640, collector_steps=640, next_eval=1024, next_checkpoint=1024,
                      evaluations=[Evaluation(512, 21.5, 3.25)], solved_at=None,
                      wall_seconds=1.5, consecutive_skips=1)
    text = json.dumps(state.to_dict())
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    assert LoopState.from_dict(json.loads(text), "loop-5.json") == state
    for version in (FORMAT_VERSION - 1, FORMAT_VERSION + 1):
        other = {**state.to_dict(), "format_version": version}
        with pytest.raises(pg_keras.InputError, match=(
                rf"^loop-5.json holds a checkpoint of format {version}; this version of "
                rf"pg_keras reads format {FORMAT_VERSION} only: train again .* release that "
                "wrote it$")):
            LoopState.from_dict(other, "loop-5.json")
