"""Policy.predict: one call for every policy, fresh draws unless seeded."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import pg_keras

OBSERVATIONS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
SMALL = pg_keras.Config(hidden_sizes=(8,), value_hidden_sizes=(8,))


@pytest.fixture(scope="module")
def policies():
    """A feed-forward policy of 5 discrete actions and a recurrent one of a 2-d box."""
    return {
        "feed-forward": pg_keras.build_learner(SMALL, OBSERVATIONS,
                                               gym.spaces.Discrete(5)).policy,
        "recurrent": pg_keras.build_learner(
            SMALL.replace(recurrent_cell="gru", recurrent_units=8), OBSERVATIONS,
            gym.spaces.Box(-1.0, 1.0, (2,), np.float32)).policy,
    }


def _observations(n=256, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(np.float32)


@pytest.mark.parametrize("kind", ["feed-forward", "recurrent"])
def test_unseeded_draws_are_fresh_and_seeded_draws_repeat(policies, kind):
    policy, observations = policies[kind], _observations()
    first, _ = policy.predict(observations, deterministic=False)
    second, _ = policy.predict(observations, deterministic=False)
    # 256 draws of a barely trained policy: the same twice only if the noise repeated.
    assert not np.array_equal(first, second)
    seeded = [policy.predict(observations, deterministic=False, seed=7)[0] for _ in range(2)]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    other, _ = policy.predict(observations, deterministic=False, seed=8)
    assert not np.array_equal(seeded[0], other)


def test_deterministic_is_the_greedy_action_and_feed_forward_state_stays_none(policies):
    policy, observations = policies["feed-forward"], _observations()
    actions, state = policy.predict(observations)
    assert state is None
    expected, _ = policy.greedy(tf.constant(observations), policy.all_legal(len(observations)),
                                policy.initial_state(len(observations)))
    np.testing.assert_array_equal(actions, expected.numpy())
    again, _ = policy.predict(observations, deterministic=True, seed=3)  # seed unused
    np.testing.assert_array_equal(actions, again)


def test_sampled_actions_follow_the_policy(policies):
    policy = policies["feed-forward"]
    observation = _observations(1)
    probabilities = tf.nn.softmax(policy.params(tf.constant(observation))[0]).numpy()
    draws = np.concatenate([policy.predict(np.repeat(observation, 500, 0),
                                           deterministic=False)[0] for _ in range(8)])
    frequencies = np.bincount(draws, minlength=5) / draws.size
    # 4000 draws: each frequency within 5 standard errors of its probability.
    np.testing.assert_allclose(frequencies, probabilities,
                               atol=5 * np.sqrt(0.25 / draws.size))


def test_the_recurrent_state_threads_through_predict(policies):
    policy, observations = policies["recurrent"], _observations(6 * 3).reshape(6, 3, 4)
    state = policy.initial_state(3)
    fresh, _ = policy.predict(observations[0])
    carried = None
    for step in range(6):
        actions, carried = policy.predict(observations[step], state=carried)
        expected, state = policy.greedy(tf.constant(observations[step]), policy.all_legal(3),
                                        state)
        np.testing.assert_allclose(actions, expected.numpy(), rtol=1e-6)
        # The graph function's next state continues the episode as it is (reset 0).
        np.testing.assert_array_equal(state["reset"].numpy(), np.zeros(3))
        assert carried["reset"].shape == (3,) and not carried["reset"].any()
        if step == 0:
            np.testing.assert_array_equal(actions, fresh)  # None is the initial state
    # The state carries memory: the same observation after another history acts otherwise.
    later, _ = policy.predict(observations[0], state=carried)
    assert not np.allclose(later, fresh)


def test_predict_acts_only_among_the_actions_the_mask_allows():
    observation_space = gym.spaces.Dict({"observation": OBSERVATIONS,
                                         "action_mask": gym.spaces.MultiBinary(5)})
    policy = pg_keras.build_learner(SMALL, observation_space, gym.spaces.Discrete(5)).policy
    mask = np.zeros((256, 5), np.int8)
    mask[:, [1, 3]] = 1
    observations = {"observation": _observations(), "action_mask": mask}
    sampled, _ = policy.predict(observations, deterministic=False, seed=0)
    assert set(np.unique(sampled)) == {1, 3}  # both legal actions drawn, nothing else
    unmasked = {"observation": observations["observation"]}
    greedy, _ = policy.predict(unmasked, action_mask=mask)
    assert set(np.unique(greedy)) <= {1, 3}
    with pytest.raises(pg_keras.InputError, match=r"action mask must have shape \[B, 5\]"):
        policy.predict(unmasked, action_mask=mask[:, :4])


def _graph_functions(policy):
    return sorted(name for name, value in vars(policy).items()
                  if isinstance(value, tf.types.experimental.GenericFunction)
                  and not name.startswith("_"))


def test_every_policy_has_the_same_three_graph_functions(policies):
    masked = pg_keras.build_learner(SMALL.replace(baseline=False), OBSERVATIONS,
                                    gym.spaces.MultiDiscrete([2, 3])).policy
    for policy in [*policies.values(), masked]:
        assert _graph_functions(policy) == ["greedy", "sample", "value"]


def test_the_graph_functions_take_a_mask_and_a_state_for_every_policy(policies):
    observations = tf.constant(_observations(6))
    for policy in policies.values():
        mask, state = policy.all_legal(6), policy.initial_state(6)
        greedy, after = policy.greedy(observations, mask, state)
        np.testing.assert_array_equal(greedy.numpy(), policy.predict(observations.numpy())[0])
        raw, actions, _ = policy.sample(observations, tf.constant([3, 0]), mask, state)
        assert actions.shape[0] == 6 and raw.shape[0] == 6
        assert sorted(after) == ["policy", "reset", "value"]
        if not policy.recurrent:  # a feed-forward policy's state comes back as it went in
            assert after["policy"] == () and after["value"] == ()
    # A Discrete head's mask: only the allowed action is taken, sampled or greedy.
    policy = policies["feed-forward"]
    only_two = np.zeros((6, 5), bool)
    only_two[:, 2] = True
    state = policy.initial_state(6)
    np.testing.assert_array_equal(policy.greedy(observations, only_two, state)[0].numpy(), 2)
    np.testing.assert_array_equal(
        policy.sample(observations, tf.constant([1, 2]), only_two, state)[1].numpy(), 2)


def test_value_of_a_policy_without_a_value_network_says_so_in_one_line():
    policy = pg_keras.build_learner(SMALL.replace(baseline=False), OBSERVATIONS,
                                    gym.spaces.Discrete(5)).policy
    assert not policy.has_value
    with pytest.raises(pg_keras.InputError, match="no value network") as raised:
        policy.value(tf.constant(_observations(2)), policy.initial_state(2))
    assert "\n" not in str(raised.value)
