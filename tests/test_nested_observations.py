"""Dict and Tuple observations end to end: learner, update, checkpoint, export."""

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from earlier_defaults import with_earlier_defaults
import toy_envs
from pg_keras import spaces
from pg_keras.export import export_policy, load_policy
from pg_keras.learner import build_learner

SPACE = gym.spaces.Dict({
    "cue": gym.spaces.Discrete(2),
    "pair": gym.spaces.Tuple((gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                              gym.spaces.MultiDiscrete([3, 2]))),
    "image": gym.spaces.Box(0, 255, (8, 8, 1), np.uint8),
})
CONFIG = pg_keras.Config(num_envs=4, steps_per_update=8, normalize_observations=True,
                         hidden_sizes=(16,), value_hidden_sizes=(16,))


def _observations(n, seed=0):
    """A vector env's batch of nested observations."""
    SPACE.seed(seed)
    samples = [SPACE.sample() for _ in range(n)]
    return gym.vector.utils.concatenate(SPACE, samples, gym.vector.utils.create_empty_array(SPACE, n))


def _batch(learner, seed=0):
    rng = np.random.default_rng(seed)
    spec = learner.batch_spec
    fields = {name: np.zeros(s.shape, s.dtype.as_numpy_dtype)
              for name, s in spec._asdict().items() if name != "observations"}
    steps, envs = spec.rewards.shape
    flat = [spaces.as_numpy(SPACE, _observations(envs, seed * 100 + t)) for t in range(steps)]
    fields["observations"] = {name: np.stack([row[name] for row in flat]) for name in flat[0]}
    fields["actions"] = rng.integers(0, 3, spec.actions.shape).astype(np.int32)
    fields["rewards"] = rng.normal(size=(steps, envs)).astype(np.float32)
    fields["mask"][:] = 1.0
    fields["action_masks"][:] = True
    return pg_keras.batch.Batch(**fields)


@pytest.fixture(scope="module")
def learner():
    learner = build_learner(CONFIG, SPACE, gym.spaces.Discrete(3))
    for seed in range(3):
        learner.update(_batch(learner, seed))
    return learner


def test_the_learner_updates_on_nested_batches_and_normalizes_vector_leaves(learner):
    assert learner.normalizer.leaves == ["pair/0"]
    assert float(learner.normalizer.normalizers[0].count.numpy()) == 3 * 8 * 4
    assert int(learner.updates.numpy()) == 3
    names = sorted(t.name for t in learner.policy.network.inputs)
    assert names == ["cue", "image", "pair_0", "pair_1"]


def test_checkpoint_round_trip_gives_the_same_policy(learner, tmp_path):
    path = tf.train.Checkpoint(learner=learner).write(str(tmp_path / "ckpt"))
    restored = build_learner(CONFIG, SPACE, gym.spaces.Discrete(3))
    tf.train.Checkpoint(learner=restored).read(path).assert_consumed()
    observations = _observations(16, seed=7)
    np.testing.assert_array_equal(restored.policy.predict(observations)[0],
                                  learner.policy.predict(observations)[0])
    for a, b in zip(learner.normalizer.weights, restored.normalizer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.fixture(scope="module")
def export_dir(learner, tmp_path_factory):
    """The learner's policy exported (read only by the tests)."""
    return export_policy(learner.policy, tmp_path_factory.mktemp("nested") / "model")


def test_exported_policy_takes_one_input_per_leaf_and_equals_act(learner, export_dir,
                                                                 tmp_path):
    observations = _observations(16, seed=9)
    expected = learner.policy.predict(observations)[0]
    flat = spaces.as_numpy(SPACE, observations)
    # Served with TensorFlow alone, in a fresh process.
    script = ("import sys, numpy as np, tensorflow as tf\n"
              "m = tf.saved_model.load(sys.argv[1]); d = np.load(sys.argv[2])\n"
              "f = m.signatures['serving_default']\n"
              "print(sorted(f.structured_input_signature[1]))\n"
              "out = f(**{k: tf.constant(d[k]) for k in d.files})['actions'].numpy()\n"
              "print(' '.join(map(str, out)))\n")
    inputs = {"cue": flat["cue"].astype(np.int32), "pair_0": flat["pair/0"],
              "pair_1": flat["pair/1"].astype(np.int32), "image": flat["image"].astype(np.uint8)}
    np.savez(tmp_path / "obs.npz", **inputs)
    run = subprocess.run([sys.executable, "-c", script, export_dir, str(tmp_path / "obs.npz")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stderr[-2000:]
    names, actions = run.stdout.strip().splitlines()[-2:]
    assert names == "['cue', 'image', 'pair_0', 'pair_1']"
    np.testing.assert_array_equal(np.array(actions.split(), int), expected)
    loaded = load_policy(export_dir)
    np.testing.assert_array_equal(loaded.greedy(flat).numpy(), expected)
    assert loaded.sample(flat, tf.constant([1, 2])).shape == (16,)
    # The Keras model takes the leaves by leaf name, in their serving dtypes.
    by_leaf = {"cue": inputs["cue"], "pair/0": inputs["pair_0"], "pair/1": inputs["pair_1"],
               "image": inputs["image"]}
    keras_logits = learner.policy.keras_model()(by_leaf)
    np.testing.assert_allclose(keras_logits["logits"], loaded.distribution(flat)["logits"],
                               atol=1e-5)


def test_exported_policy_names_the_leaf_of_a_bad_observation(export_dir):
    loaded = load_policy(export_dir)
    flat = spaces.as_numpy(SPACE, _observations(4))
    flat["pair/0"][1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"observations\[pair/0\] must be finite"):
        loaded.greedy(flat)
    flat = spaces.as_numpy(SPACE, _observations(4))
    flat["image"] = flat["image"][:, :4]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"observations\[image\] must have shape \[None, 8, 8, 1\]"):
        loaded.greedy(flat)


# ------------------------------------------------------------------ collection, training


def _cue_envs(num_envs, max_steps=None):
    def make():
        env = toy_envs.CuePositionEnv()
        return gym.wrappers.TimeLimit(env, max_steps) if max_steps else env
    return toy_envs.vector_env([make] * num_envs)


@pytest.mark.parametrize("mode", ["steps", "episodes"])
def test_collectors_store_the_observation_each_action_was_taken_in(mode):
    from pg_keras.collect import Collector
    config = pg_keras.Config(num_envs=3, steps_per_update=12, collect_mode=mode)
    # Episodes of 8 cut at 5 by a time limit: the cut ones bootstrap from V(final obs).
    envs = _cue_envs(3, max_steps=5)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    for _ in range(2):
        batch, _ = collector.collect()
        observations = batch.observations
        assert set(observations) == {"cue", "position"}
        assert observations["cue"].shape == (12, 3) and observations["position"].shape == (12, 3, 1)
        valid = batch.mask > 0
        paid = np.vectorize(lambda c, p: toy_envs.CuePositionEnv.rewarded_action(c, [p]))(
            observations["cue"], observations["position"][..., 0])
        np.testing.assert_array_equal(batch.rewards[valid], (batch.actions == paid)[valid])
        assert batch.truncated[valid].any()
        assert np.all(batch.bootstrap[batch.truncated & valid] != 0.0)
        learner.update(batch)


def test_a_dict_observation_run_resumes_and_restores(tmp_path):
    from pg_keras.run_dir import restore_learner
    config = pg_keras.Config(env_id="PgkCuePosition-v0", total_steps=256, num_envs=4,
                             steps_per_update=16, eval_every=256, eval_episodes=2,
                             normalize_observations=True)
    result = pg_keras.train(config, root_dir=str(tmp_path / "run"))
    restored = restore_learner(str(tmp_path / "run"))
    observations = {"cue": np.array([0, 1, 1, 0]),
                    "position": np.array([[0.3], [-0.2], [0.9], [-0.7]], np.float32)}
    np.testing.assert_array_equal(restored.policy.predict(observations)[0],
                                  result.policy.predict(observations)[0])
    for a, b in zip(restored.normalizer.weights, result.learner.normalizer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_a_policy_reading_both_keys_learns_the_cue_position_task():
    """Only a policy that combines both keys beats 4 (chance) of the 8 points."""
    from pg_keras.collect import evaluate
    # gamma 0: each step's reward depends on that step's action alone, and the later
    # rewards would only add noise to its return.
    config = pg_keras.Config(**with_earlier_defaults(
        env_id="PgkCuePosition-v0", total_steps=60_000, num_envs=8, steps_per_update=16,
        eval_every=0, hidden_sizes=(64,), value_hidden_sizes=(64,), activation="relu",
        gamma=0.0, policy_learning_rate=1e-2, seed=0))
    result = pg_keras.train(config)
    assert evaluate(result.policy, "PgkCuePosition-v0", episodes=50, seed=123).mean() >= 7.0
