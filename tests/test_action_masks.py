"""Action masks end to end: from the env (info or a Dict key) to collection and update."""

import pickle

import gymnasium as gym
import numpy as np
import pytest

import pg_keras
import toy_envs
from pg_keras.collect import Collector, make_vector_env
from pg_keras.config import InputError
from pg_keras.learner import build_learner


@pytest.mark.parametrize("mode", ["steps", "episodes"])
@pytest.mark.parametrize("numpy_actor", [True, False], ids=["numpy", "tensorflow"])
def test_taxis_info_masks_are_stored_and_obeyed(mode, numpy_actor):
    config = pg_keras.Config(env_id="Taxi-v4", num_envs=4, steps_per_update=40,
                             collect_mode=mode)
    envs = make_vector_env("Taxi-v4", 4)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    if not numpy_actor:
        collector.numpy_policy = None
    for _ in range(2):
        batch, _ = collector.collect()
        valid = batch.mask > 0
        assert batch.action_masks.shape == (40, 4, 6)
        legal = np.take_along_axis(batch.action_masks, batch.actions[..., None], -1)[..., 0]
        assert legal[valid].all()
        # Taxi's mask: the row's legal actions are what info said for that observation.
        taxi = gym.make("Taxi-v4").unwrapped
        for t, i in zip(*np.nonzero(valid)):
            expected = taxi.action_mask(int(batch.observations[t, i])).astype(bool)
            np.testing.assert_array_equal(batch.action_masks[t, i], expected)
        metrics = learner.update(batch)
        assert np.isfinite(float(metrics["loss"]))


def test_a_restored_collector_continues_with_the_envs_masks_and_the_same_draws():
    config = pg_keras.Config(env_id="Taxi-v4", num_envs=4, steps_per_update=40)
    envs = make_vector_env("Taxi-v4", 4)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    collector.collect()
    state = pickle.loads(pickle.dumps(collector.state()))
    expected, _ = collector.collect()
    fresh, _ = Collector(make_vector_env("Taxi-v4", 4), learner.policy, config).collect()
    assert not np.array_equal(fresh.action_masks[0], expected.action_masks[0])
    restored = Collector(make_vector_env("Taxi-v4", 4), learner.policy, config)
    assert restored.restore(state)
    batch, _ = restored.collect()  # the batch's arrays are the collector's own buffers
    for name in ("observations", "action_masks", "actions", "rewards", "terminated"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(expected, name))


def test_a_dict_observations_action_mask_key_goes_to_the_head():
    config = pg_keras.Config(env_id="PgkMaskedChoice-v0", num_envs=3, steps_per_update=12)
    envs = make_vector_env("PgkMaskedChoice-v0", 3)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    assert list(learner.batch_spec.observations) == ["observation"]
    collector = Collector(envs, learner.policy, config)
    for _ in range(3):
        batch, _ = collector.collect()
        assert np.all(batch.rewards == 1.0)  # never an illegal action
        learner.update(batch)
    assert sum(env.unwrapped.illegal_taken for env in envs.envs) == 0


def test_a_mask_allowing_no_action_names_the_env_step():
    class NoAction(toy_envs.MaskedChoiceEnv):
        def step(self, action):
            observation, *rest = super().step(action)
            if self.t == 2:
                observation["action_mask"][:] = 0
            return (observation, *rest)

    config = pg_keras.Config(num_envs=2, steps_per_update=8)
    envs = toy_envs.vector_env([NoAction] * 2)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    with pytest.raises(InputError, match=r"env step 4: environment 0 of .* gave an action "
                                         r"mask that allows no action; received \[0, 0, 0, 0\]"):
        collector.collect()


def test_the_exported_policy_takes_an_optional_action_mask(tmp_path):
    import tensorflow as tf
    from pg_keras.export import export_policy, load_policy
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    learner = build_learner(pg_keras.Config(hidden_sizes=(8,)), space,
                            gym.spaces.Discrete(4, start=1))
    for variable in learner.policy_variables:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape) * 2)
    loaded = load_policy(export_policy(learner.policy, tmp_path / "model"))
    rng = np.random.default_rng(1)
    observations = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    mask = rng.integers(0, 2, (500, 4)).astype(bool)
    mask[np.arange(500), rng.integers(0, 4, 500)] = True
    expected = learner.policy.greedy(observations, mask, learner.policy.initial_state(500))[0].numpy()
    np.testing.assert_array_equal(loaded.greedy_masked(observations, mask).numpy(), expected)
    # As a TF Serving client would call it: one input per name.
    serving = loaded.signatures["greedy_masked"]
    assert sorted(serving.structured_input_signature[1]) == ["action_mask", "observations"]
    actions = serving(observations=tf.constant(observations),
                      action_mask=tf.constant(mask))["actions"].numpy()
    np.testing.assert_array_equal(actions, expected)
    assert mask[np.arange(500), expected - 1].all()
    sampled = loaded.sample_masked(observations, tf.constant([3, 4]), mask).numpy()
    assert mask[np.arange(500), sampled - 1].all()
    assert not mask[np.arange(500), loaded.greedy(observations).numpy() - 1].all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="action mask allows no action"):
        loaded.greedy_masked(observations[:2], np.zeros((2, 4), bool))
