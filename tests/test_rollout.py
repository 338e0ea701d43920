"""Collection: exact batches from tiny envs with known episodes."""

import gymnasium as gym
import keras
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import pg_keras
from pg_keras import returns
from pg_keras.collect import (CollectorProtocol, EpisodesCollector, NonFiniteError,
                              NumpyPolicy, StepsCollector)
from toy_envs import CounterEnv, FaultyEnv, vector_env


def linear_value_model():
    """V(s) = 10 * s + 100, so bootstrapped values are known exactly."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, kernel_initializer=keras.initializers.Constant(10.0),
        bias_initializer=keras.initializers.Constant(100.0))])
    return model


def make_learner(envs, value_network=None, **overrides):
    config = pg_keras.Config(num_envs=envs.num_envs, **overrides)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space,
                                     value_network=value_network)
    return config, learner


def test_steps_mode_truncation_bootstrap_and_autoreset():
    # Column 0: a time limit of 3 (truncation); column 1: terminates after 2 steps.
    envs = vector_env([lambda: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=3),
                       lambda: CounterEnv(terminate_at=2)])
    config, learner = make_learner(envs, linear_value_model(), steps_per_update=5, gamma=0.5,
                                   baseline=True)
    collector = pg_keras.Collector(envs, learner.policy, config)
    assert type(collector) is StepsCollector and isinstance(collector, CollectorProtocol)
    batch, env_steps = collector.collect()

    assert env_steps == 10
    obs = batch.observations[..., 0]
    np.testing.assert_array_equal(obs, [[0, 0], [1, 1], [2, 0], [0, 1], [1, 0]])
    # Each observation is the step index within its episode: no transition crosses a reset.
    np.testing.assert_array_equal(batch.episode_steps, obs)
    np.testing.assert_array_equal(batch.terminated, [[0, 0], [0, 1], [0, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(batch.truncated, [[0, 0], [0, 0], [1, 0], [0, 0], [0, 0]])
    # Truncation bootstraps from V(final obs = 3) = 130; the cut rows from V(s_T);
    # terminations from 0.
    expected_bootstrap = np.zeros((5, 2))
    expected_bootstrap[2, 0] = 130.0
    expected_bootstrap[4, 0] = 120.0  # s_T = 2 in column 0
    expected_bootstrap[4, 1] = 110.0  # s_T = 1 in column 1
    np.testing.assert_allclose(batch.bootstrap, expected_bootstrap, rtol=1e-6)
    np.testing.assert_array_equal(batch.mask, np.ones((5, 2)))

    continues = 1.0 - (batch.terminated | batch.truncated)
    g = returns.discounted_returns(batch.rewards, continues, batch.bootstrap, 0.5).numpy()
    # Worked by hand with gamma = 0.5 and reward 1 per step.
    np.testing.assert_allclose(g[:, 0], [18.0, 34.0, 66.0, 31.5, 61.0], rtol=1e-6)
    np.testing.assert_allclose(g[:, 1], [1.5, 1.0, 1.5, 1.0, 56.0], rtol=1e-6)

    # The next batch continues where this one stopped.
    batch, _ = collector.collect()
    np.testing.assert_array_equal(batch.observations[0, :, 0], [2, 1])
    returns_, lengths = collector.pop_episodes()
    # Ten steps per env: column 0 ends episodes at steps 3, 6, 9; column 1 every 2 steps.
    assert sorted(zip(lengths, returns_)) == [(2, 2.0)] * 5 + [(3, 3.0)] * 3


def test_time_limit_without_baseline_is_an_episode_end():
    envs = vector_env([lambda: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=2)])
    config, learner = make_learner(envs, baseline=False, steps_per_update=4)
    batch, env_steps = pg_keras.Collector(envs, learner.policy, config).collect()
    assert env_steps == 2  # episodes mode: stops once the only env has finished
    np.testing.assert_array_equal(batch.truncated[:, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(batch.bootstrap, np.zeros((4, 1)))
    np.testing.assert_array_equal(batch.mask[:, 0], [1, 1, 0, 0])


def test_episodes_mode_one_whole_episode_per_env_with_padding():
    envs = vector_env([lambda: CounterEnv(terminate_at=2), lambda: CounterEnv(terminate_at=4)])
    config, learner = make_learner(envs, baseline=False, steps_per_update=6)
    assert config.resolved_collect_mode == "episodes"
    collector = pg_keras.Collector(envs, learner.policy, config)
    assert type(collector) is EpisodesCollector and isinstance(collector, CollectorProtocol)
    for _ in range(2):
        batch, env_steps = collector.collect()
        assert env_steps == 8  # stopped after the longer episode's 4 steps, not 6
        np.testing.assert_array_equal(batch.mask[:, 0], [1, 1, 0, 0, 0, 0])
        np.testing.assert_array_equal(batch.mask[:, 1], [1, 1, 1, 1, 0, 0])
        # Every update starts from a reset.
        np.testing.assert_array_equal(batch.observations[0, :, 0], [0, 0])
        np.testing.assert_array_equal(batch.observations[:4, 1, 0], [0, 1, 2, 3])
        # Rows after the stop are zero padding.
        assert not batch.rewards[4:].any() and not batch.observations[4:].any()
        returns_, lengths = collector.pop_episodes()
        # Only each env's first episode counts; column 0's second one is not in the batch.
        assert sorted(lengths) == [2, 4] and sorted(returns_) == [2.0, 4.0]
    assert collector.total_steps == 16


def test_episodes_mode_cap_bootstraps_with_baseline():
    envs = vector_env([lambda: CounterEnv()])
    config, learner = make_learner(envs, linear_value_model(), baseline=True,
                                   collect_mode="episodes", steps_per_update=3)
    batch, env_steps = pg_keras.Collector(envs, learner.policy, config).collect()
    assert env_steps == 3
    np.testing.assert_array_equal(batch.mask[:, 0], [1, 1, 1])
    np.testing.assert_allclose(batch.bootstrap[:, 0], [0.0, 0.0, 130.0])
    # The cap acts as a time limit: the episode is truncated there and counted.
    np.testing.assert_array_equal(batch.truncated[:, 0], [0, 0, 1])


def test_episodes_mode_cap_without_baseline_truncates_and_counts_the_episode():
    envs = vector_env([lambda: CounterEnv()])
    config, learner = make_learner(envs, baseline=False, steps_per_update=3)
    collector = pg_keras.Collector(envs, learner.policy, config)
    batch, _ = collector.collect()
    np.testing.assert_array_equal(batch.truncated[:, 0], [0, 0, 1])
    np.testing.assert_array_equal(batch.bootstrap, np.zeros((3, 1)))
    assert collector.pop_episodes() == ([3.0], [3])


def test_short_episode_cap_is_warned_about():
    config = pg_keras.Config(baseline=False, steps_per_update=32, total_steps=256,
                             eval_every=0, eval_episodes=1)
    with pytest.warns(UserWarning, match="steps_per_update=500 for whole episodes"):
        pg_keras.train(config)


def test_next_step_autoreset_env_is_rejected():
    envs = gym.vector.SyncVectorEnv([CounterEnv], autoreset_mode=AutoresetMode.NEXT_STEP)
    config, learner = make_learner(envs, baseline=True)
    with pytest.raises(ValueError, match="SAME_STEP"):
        pg_keras.Collector(envs, learner.policy, config)


def test_make_vector_env_uses_same_step_autoreset():
    envs = pg_keras.make_vector_env("CartPole-v1", 2)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    envs.close()


class _RandomLengthEnv(gym.Env):
    """Episodes of a length drawn at reset from 1-9; reward = action + 1 per step."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = int(self.np_random.integers(1, 10))
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.left -= 1
        return np.zeros(1, np.float32), float(action) + 1.0, self.left == 0, False, {}


gym.register("PgkRandomLength-v0", entry_point=_RandomLengthEnv)


def test_evaluate_returns_each_envs_first_episode():
    envs = vector_env([_RandomLengthEnv])
    # Logits (0, 1) everywhere: the greedy action is 1, worth 2 per step.
    network = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant([0., 1.]))])
    learner = pg_keras.build_learner(pg_keras.Config(num_envs=1), envs.single_observation_space,
                                     envs.single_action_space, policy_network=network)
    # The vector env seeds env i with seed + i: with seed 9 the episodes last 4, 7, 2 and 6
    # steps. Each env's first episode counts, whole, and nothing after it.
    result = pg_keras.evaluate(learner.policy, "PgkRandomLength-v0", episodes=4, seed=9)
    np.testing.assert_array_equal(result, [8.0, 14.0, 4.0, 12.0])
    capped = pg_keras.evaluate(learner.policy, "PgkRandomLength-v0", 4, seed=9, max_steps=3)
    np.testing.assert_array_equal(capped, [6.0, 6.0, 4.0, 6.0])


def reference_collect(envs, learner, config, policy, state):
    """One batch the plain way: every env of every step handled one at a time in Python.

    What the Collector must produce, written for clarity rather than speed. ``policy`` is a
    NumpyPolicy seeded as the Collector's; ``state`` carries the observations and the
    running episodes between calls, and collects the finished episodes.
    """
    steps, num = config.steps_per_update, envs.num_envs
    episodic = config.resolved_collect_mode == "episodes"
    baseline = learner.has_baseline
    spec = learner.batch_spec
    b = {name: np.zeros(s.shape, s.dtype.as_numpy_dtype) for name, s in spec._asdict().items()}
    b["action_masks"][:] = True  # the env gives no mask: every action is legal
    if not episodic:
        b["mask"][:] = 1.0
    else:
        state["obs"], _ = envs.reset()
        state["return"][:] = 0.0
        state["length"][:] = 0
    active = [True] * num
    policy.refresh()
    obs, taken = state["obs"], 0

    def value(observation):
        batch = np.asarray(observation, b["observations"].dtype)[None]
        return float(learner.policy.value(batch, learner.policy.initial_state(1)).numpy()[0])

    for t in range(steps):
        obs = np.asarray(obs, b["observations"].dtype)
        raw, env_action = policy(obs)
        next_obs, reward, terminated, truncated, info = envs.step(env_action)
        for i in range(num):
            b["observations"][t, i] = obs[i]
            b["actions"][t, i] = raw[i]
            b["rewards"][t, i] = reward[i]
            b["terminated"][t, i] = terminated[i]
            b["truncated"][t, i] = truncated[i]
            b["episode_steps"][t, i] = state["length"][i]
            if episodic:
                b["mask"][t, i] = active[i]
            state["return"][i] += reward[i]
            state["length"][i] += 1
            if terminated[i] or truncated[i]:
                if active[i] or not episodic:
                    state["finished"].append((float(state["return"][i]),
                                              int(state["length"][i])))
                state["return"][i] = 0.0
                state["length"][i] = 0
                if baseline and truncated[i] and not terminated[i]:
                    b["bootstrap"][t, i] = value(info["final_obs"][i])
                if episodic:
                    active[i] = False
        obs = next_obs
        taken += 1
        if episodic and not any(active):
            break
    if taken == steps:
        for i in range(num):
            if b["terminated"][-1, i] or b["truncated"][-1, i] or not active[i]:
                continue
            if episodic:
                b["truncated"][-1, i] = True
                state["finished"].append((float(state["return"][i]), int(state["length"][i])))
                state["return"][i] = 0.0
                state["length"][i] = 0
            if baseline:
                b["bootstrap"][-1, i] = value(obs[i])
    state["obs"] = obs
    return b, taken * num


@pytest.mark.parametrize("env_id, mode, baseline, steps, time_limit", [
    ("CartPole-v1", "steps", True, 16, 12),
    ("CartPole-v1", "episodes", False, 48, 40),  # envs end, restart and end again
    ("CartPole-v1", "episodes", True, 16, 40),  # the cap cuts episodes
    ("Pendulum-v1", "steps", True, 16, 12),
    ("FrozenLake-v1", "steps", True, 16, 12)])
def test_collector_batches_equal_the_plain_per_env_reference(env_id, mode, baseline, steps,
                                                             time_limit):
    config = pg_keras.Config(env_id=env_id, num_envs=5, steps_per_update=steps, seed=3,
                             collect_mode=mode, baseline=baseline)
    envs = pg_keras.make_vector_env(env_id, 5, max_episode_steps=time_limit)
    reference_envs = pg_keras.make_vector_env(env_id, 5, max_episode_steps=time_limit)
    keras.utils.set_random_seed(3)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    collector = pg_keras.Collector(envs, learner.policy, config)
    assert collector.numpy_policy is not None
    policy = NumpyPolicy(learner.policy, config.seed + 15485863)
    state = {"obs": reference_envs.reset(seed=config.seed)[0], "finished": [],
             "return": np.zeros(5), "length": np.zeros(5, np.int64)}
    kinds = set()
    for _ in range(6):
        batch, env_steps = collector.collect()
        expected, expected_steps = reference_collect(reference_envs, learner, config, policy,
                                                     state)
        assert env_steps == expected_steps
        for name in batch._fields:
            if name == "bootstrap":  # V from the NumPy twin here, from TensorFlow there
                np.testing.assert_allclose(batch.bootstrap, expected["bootstrap"], rtol=1e-5,
                                           atol=1e-5)
            elif name == "episode_steps":  # padding rows (mask 0) may count on
                valid = batch.mask > 0
                np.testing.assert_array_equal(batch.episode_steps[valid],
                                              expected["episode_steps"][valid])
            else:
                np.testing.assert_array_equal(getattr(batch, name), expected[name], name)
        kinds |= {"terminated"} if batch.terminated.any() else set()
        kinds |= {"truncated"} if batch.truncated.any() else set()
        learner.update(batch)  # the next batch comes from new weights
    returns_, lengths = collector.pop_episodes()
    assert list(zip(returns_, lengths)) == state["finished"]
    assert len(state["finished"]) >= 5
    if env_id == "CartPole-v1" and mode == "steps":
        assert kinds == {"terminated", "truncated"}


def _final_observation_nan_env():
    """10-step episodes; the third one's last observation is inf, which same-step
    autoreset shows only in ``info["final_obs"]`` (the step returns the next episode's
    finite first observation)."""
    return FaultyEnv(field="observation", nan_every=3, nan_step=10)


def test_a_non_finite_final_observation_stops_collection_naming_it():
    envs = vector_env([_final_observation_nan_env])
    config, learner = make_learner(envs, steps_per_update=40)
    with pytest.raises(NonFiniteError,
                       match="env step 30: environment 0 .* non-finite final observation"):
        pg_keras.Collector(envs, learner.policy, config).collect()


def test_an_episode_with_a_non_finite_final_observation_is_dropped():
    envs = vector_env([_final_observation_nan_env])
    config, learner = make_learner(envs, steps_per_update=40, on_nonfinite="drop")
    collector = pg_keras.Collector(envs, learner.policy, config)
    batch, _ = collector.collect()
    np.testing.assert_array_equal(batch.mask[:, 0], [1] * 20 + [0] * 10 + [1] * 10)
    np.testing.assert_array_equal(batch.rewards[:, 0], [1] * 20 + [0] * 10 + [1] * 10)
    assert collector.dropped_episodes == 1
    assert collector.pop_episodes() == ([10.0, 10.0, 10.0], [10, 10, 10])
