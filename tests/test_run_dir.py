"""The run directory's API: pg_keras.train(root_dir=..., export_dir=...) leaves a run that
restores, and a SavedModel that serves, without the launcher."""

import json

import numpy as np
import tensorflow as tf

import pg_keras
from pg_keras import run_dir
from pg_keras.config import FORMAT_VERSION


def test_train_exports_a_savedmodel_whose_greedy_signature_acts(tmp_path):
    config = pg_keras.Config(env_id="CartPole-v1", total_steps=2048, num_envs=4,
                             steps_per_update=32, eval_every=1024, eval_episodes=2, seed=3)
    root, export = tmp_path / "run", tmp_path / "export"
    result = pg_keras.train(config, root_dir=str(root), export_dir=str(export))

    loaded = tf.saved_model.load(str(export))
    observations = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
    actions = loaded.signatures["serving_default"](
        observations=tf.constant(observations))["actions"].numpy()
    assert actions.shape == (16,) and set(actions.tolist()) <= {0, 1}, actions
    np.testing.assert_array_equal(actions, loaded.greedy(observations).numpy())
    np.testing.assert_array_equal(actions, result.policy.predict(observations)[0])
    # The export and the run directory are of the one format, and the run restores.
    for path in (export / "config.json", root / "config.json", root / "spaces.json"):
        assert json.loads(path.read_text())["format_version"] == FORMAT_VERSION, path
    restored = run_dir.restore_learner(str(root))
    np.testing.assert_array_equal(restored.policy.predict(observations)[0], actions)
