"""Tests of the toy environments themselves: what a test that learns on them relies on."""

import itertools
import math

import gymnasium as gym
import numpy as np

import toy_envs
from pg_keras import spaces

LENGTH = 8


def _expected_step_reward(policy):
    """E[reward] of ``policy(cue, sign)`` -> action, exactly: cue and sign are independent
    fair coins (sign = position > 0, the position uniform on the Box's symmetric bounds)."""
    space = toy_envs.CuePositionEnv.observation_space["position"]
    p_positive = float(space.high[0]) / float(space.high[0] - space.low[0])
    assert p_positive == 0.5
    total = 0.0
    for cue, positive in itertools.product((0, 1), (False, True)):
        position = np.array([0.5 if positive else -0.5], np.float32)
        probability = 0.5 * (p_positive if positive else 1.0 - p_positive)
        rewarded = toy_envs.CuePositionEnv.rewarded_action(cue, position)
        total += probability * float(policy(cue, positive) == rewarded)
    return total


def test_only_a_policy_reading_both_keys_beats_chance():
    """The best policy of each single key, over every deterministic policy of that key
    (a stochastic one is a mixture of them), earns 1/2 a step; reading both earns 1."""
    tables = list(itertools.product((0, 1), repeat=2))  # action for key value 0, 1
    best_cue_only = max(_expected_step_reward(lambda c, s, t=t: t[c]) for t in tables)
    best_position_only = max(_expected_step_reward(lambda c, s, t=t: t[int(s)]) for t in tables)
    both = _expected_step_reward(lambda c, s: c ^ int(s))
    assert (best_cue_only, best_position_only, both) == (0.5, 0.5, 1.0)


def _play(policy, episodes=250, seed=0):
    """Episode returns and the observations seen, through the registered id."""
    env = gym.make("PgkCuePosition-v0")
    returns, seen = [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            seen.append((observation["cue"], float(observation["position"][0])))
            observation, reward, terminated, truncated, _ = env.step(policy(observation))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return np.array(returns), np.array(seen)


def test_the_env_draws_independent_fair_cues_and_signs_and_pays_as_documented():
    returns, seen = _play(lambda obs: toy_envs.CuePositionEnv.rewarded_action(**obs))
    assert np.all(returns == LENGTH)
    cue, positive = seen[:, 0].astype(int), seen[:, 1] > 0
    assert np.all(np.abs(seen[:, 1]) <= 1.0)
    counts = np.bincount(cue * 2 + positive, minlength=4)
    expected = len(seen) / 4
    assert float(((counts - expected) ** 2 / expected).sum()) < 16.27  # chi2(3), 0.1%
    # A key-blind policy (here: act on the cue alone) earns chance: LENGTH / 2 per episode.
    returns, _ = _play(lambda obs: int(obs["cue"]), seed=10_000)
    z = (returns.mean() - LENGTH / 2) / math.sqrt(LENGTH / 4 / len(returns))
    assert abs(z) < 3.29


def test_a_vector_of_them_flattens_by_key():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("PgkCuePosition-v0")] * 3)
    observations, _ = envs.reset(seed=1)
    flat = spaces.flatten(envs.single_observation_space, observations)
    assert set(flat) == {"cue", "position"}
    assert flat["cue"].shape == (3,) and flat["position"].shape == (3, 1)
    features = spaces.encode(envs.single_observation_space, flat)
    np.testing.assert_array_equal(features["cue"].numpy(), np.eye(2)[flat["cue"]])
