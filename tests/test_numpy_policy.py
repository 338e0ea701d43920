"""The NumPy twin of the policy that acts in the gymnasium collector."""

import gymnasium as gym
import keras
import numpy as np
import pytest

import pg_keras
from pg_keras.collect import NumpyPolicy

SPACES = {
    "discrete": (gym.spaces.Discrete(3, start=-1), {}),
    "multi_discrete": (gym.spaces.MultiDiscrete([3, 2, 4], start=[0, 1, -2]), {}),
    "multi_binary": (gym.spaces.MultiBinary([2, 2]), {}),
    "box_clip": (gym.spaces.Box(-1.0, 1.0, (2,), np.float32), {"init_log_std": -0.5}),
    "box_tanh": (gym.spaces.Box(-2.0, 0.5, (2,), np.float32), {"action_bounds": "tanh"}),
    "box_state_std": (gym.spaces.Box(-1.0, 1.0, (3,), np.float64),
                      {"state_dependent_std": True, "init_log_std": -1.0}),
}
OBS_SPACE = gym.spaces.Box(-5.0, 5.0, (4,), np.float32)


def make(name, seed=0):
    space, options = SPACES[name]
    config = pg_keras.Config(normalize_observations=True, activation="relu", seed=seed,
                             **options)
    keras.utils.set_random_seed(seed)
    learner = pg_keras.build_learner(config, OBS_SPACE, space)
    # Non-trivial weights and normalizer statistics.
    rng = np.random.default_rng(seed)
    for v in learner.policy_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    learner.normalizer.update(rng.normal(2.0, 3.0, size=(64, 4)).astype(np.float32))
    return learner, space


@pytest.mark.parametrize("name", sorted(SPACES))
def test_numpy_params_match_tensorflow(name):
    learner, _ = make(name)
    assert NumpyPolicy.supports(learner.policy)
    numpy_policy = NumpyPolicy(learner.policy, seed=0)
    obs = np.random.default_rng(1).normal(0, 4, size=(32, 4)).astype(np.float32)
    np.testing.assert_allclose(numpy_policy.params(obs), learner.policy.params(obs).numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_numpy_samples_follow_the_tensorflow_distribution(name):
    learner, space = make(name)
    numpy_policy = NumpyPolicy(learner.policy, seed=0)
    obs = np.tile(np.array([[0.5, 1.0, -2.0, 3.0]], np.float32), (20_000, 1))
    raw, env_actions = numpy_policy(obs)
    distribution = learner.policy.distribution(obs[:1])
    assert raw.shape == (20_000,) + tuple(learner.head.raw_shape)
    assert raw.dtype == learner.head.raw_dtype.as_numpy_dtype
    assert env_actions.dtype == space.dtype
    assert all(space.contains(a) for a in env_actions[:500])
    # The env action is the head's own post-processing of the raw sample.
    np.testing.assert_allclose(env_actions[:100], learner.head.to_env(raw[:100]).numpy(),
                               rtol=1e-5, atol=1e-6)
    if name.startswith("box"):
        mean = distribution.mean().numpy()[0]
        std = distribution.stddev().numpy()[0]
        np.testing.assert_allclose(raw.mean(axis=0), mean, atol=4 * std.max() / np.sqrt(20_000))
        np.testing.assert_allclose(raw.std(axis=0), std, rtol=0.03)
    else:
        # The log-probability of every sampled action under the TF distribution, averaged,
        # is minus the entropy when the samples follow that distribution.
        log_probs = learner.policy.distribution(obs[:4000]).log_prob(raw[:4000]).numpy()
        entropy = distribution.entropy().numpy()[0]
        standard_error = log_probs.std() / np.sqrt(len(log_probs))
        assert abs(-log_probs.mean() - entropy) < 4 * standard_error + 1e-4
        if name == "discrete":
            expected = distribution.probs_parameter().numpy()[0]
            frequencies = np.bincount(raw, minlength=3) / len(raw)
            np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_a_subclassed_model_falls_back_to_tensorflow():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    config = pg_keras.Config(num_envs=2)
    learner = pg_keras.build_learner(config, OBS_SPACE, gym.spaces.Discrete(2),
                                     policy_network=Custom())
    assert not NumpyPolicy.supports(learner.policy)
    envs = pg_keras.make_vector_env("CartPole-v1", 2)
    collector = pg_keras.Collector(envs, learner.policy, config)
    assert collector.numpy_policy is None
    batch, _ = collector.collect()
    assert batch.actions.shape == (32, 2)


def test_an_unsupported_activation_falls_back_to_tensorflow():
    learner = pg_keras.build_learner(pg_keras.Config(activation="gelu"), OBS_SPACE,
                                     gym.spaces.Discrete(2))
    assert not NumpyPolicy.supports(learner.policy)
