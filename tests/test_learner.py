"""The compiled update: every action space learns, no retracing, strategies, skipped updates."""

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from toy_envs import BanditEnv, vector_env

SPACES = {
    "discrete": (gym.spaces.Discrete(4, start=1), lambda a: float(a == 3), 3),
    "multi_discrete": (gym.spaces.MultiDiscrete([3, 4]),
                       lambda a: float(a[0] == 2) + float(a[1] == 1), [2, 1]),
    "multi_binary": (gym.spaces.MultiBinary(4),
                     lambda a: float(np.sum(a == np.array([1, 0, 1, 1]))), [1, 0, 1, 1]),
    "box_clip": (gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
                 lambda a: -float(np.sum((a - np.array([0.5, -0.3])) ** 2)), [0.5, -0.3]),
    "box_tanh": (gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                 lambda a: -float(np.sum((a - np.array([0.5, -0.3])) ** 2)), [0.5, -0.3]),
    "box_state_dependent_std": (gym.spaces.Box(-2.0, 2.0, (1,), np.float32),
                                lambda a: -float(np.sum((a - 1.0) ** 2)), [1.0]),
}


def bandit_setup(name, seed=0, **overrides):
    space, reward_fn, best = SPACES[name]
    envs = vector_env([lambda: BanditEnv(space, reward_fn)] * 8)
    # Box heads get a smaller step: a 64-unit layer moves the mean by about 64 * lr per
    # Adam step, and a clipped mean that leaves the box sees a flat reward.
    is_box = isinstance(space, gym.spaces.Box)
    options = dict(num_envs=8, steps_per_update=4, policy_learning_rate=0.005 if is_box else 0.05,
                   value_learning_rate=0.05, seed=seed,
                   action_bounds="tanh" if name == "box_tanh" else "clip",
                   state_dependent_std=name == "box_state_dependent_std",
                   # A narrow start: with a wide Gaussian, f(mean) of a squashed or clipped
                   # sample is not the best action yet.
                   init_log_std=-1.0 if is_box else 0.0)
    options.update(overrides)
    config = pg_keras.Config(**options)
    keras.utils.set_random_seed(seed)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    return envs, learner, pg_keras.Collector(envs, learner.policy, config), best


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_action_space_collects_trains_and_learns(name):
    envs, learner, collector, best = bandit_setup(name)
    for _ in range(100):
        batch, _ = collector.collect()
        metrics = learner.update(batch)
        assert np.isfinite(metrics["loss"].numpy())
    space = envs.single_action_space
    obs = np.tile(np.array([[0.5, -0.5, 1.0]], np.float32), (5, 1))
    greedy = learner.policy.predict(obs)[0]
    assert all(space.contains(a) for a in greedy), greedy
    sampled = learner.policy.predict(np.tile(obs[:1], (64, 1)), deterministic=False,
                                     seed=0)[0]
    assert all(space.contains(a) for a in sampled)
    assert all(env.bad_action is None for env in envs.envs)
    if isinstance(space, gym.spaces.Box):
        np.testing.assert_allclose(greedy[0], best, atol=0.2)
    else:
        np.testing.assert_array_equal(greedy[0], best)


def test_greedy_box_action_is_clipped_to_bounds():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    envs = vector_env([lambda: BanditEnv(space, lambda a: 0.0)])
    learner = pg_keras.build_learner(pg_keras.Config(num_envs=1), envs.single_observation_space,
                                     space)
    learner.policy.network.layers[-1].bias.assign([5.0, -5.0])  # mean far outside the box
    np.testing.assert_array_equal(learner.policy.predict(np.zeros((1, 3)))[0], [[1.0, -1.0]])


def test_update_traces_once():
    envs, learner, collector, _ = bandit_setup("discrete")
    for _ in range(4):
        learner.update(collector.collect()[0])
    assert learner.trace_count == 1
    assert collector.actor.steps.sample.experimental_get_tracing_count() <= 1
    assert int(learner.updates.numpy()) == 4


def _weights(learner):
    return [v.numpy() for v in learner.policy_variables + learner.value_variables]


def _hand_returns(batch, gamma):
    """Return-to-go by a plain loop: cut at each episode end and at the batch's last row,
    where the bootstrap value takes over."""
    steps, envs = batch.rewards.shape
    ends = batch.terminated | batch.truncated
    returns = np.zeros((steps, envs))
    for b in range(envs):
        following = 0.0
        for t in reversed(range(steps)):
            cut = ends[t, b] or t == steps - 1
            following = batch.rewards[t, b] + gamma * (batch.bootstrap[t, b] if cut else following)
            returns[t, b] = following
    return returns


def _hand_computed_sgd_step(kernel, bias, batch, gamma, lr, entropy_coef, normalize):
    """The SGD step of REINFORCE on a linear softmax policy, logits = x W + b, in float64.

    loss = -mean[Psi_t log pi(a_t|x_t)] - beta * mean[H(pi(.|x_t))] over valid steps, with
    d log pi(a|x) / d logits = onehot(a) - pi and dH / d logits = -pi * (log pi + H).
    """
    valid = batch.mask > 0
    psi = _hand_returns(batch, gamma)
    if normalize:
        psi = (psi - psi[valid].mean()) / np.sqrt(psi[valid].var() + 1e-8)
    x = batch.observations.astype(np.float64)
    logits = x @ kernel + bias
    logits -= logits.max(axis=-1, keepdims=True)
    pi = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    entropy = -(pi * np.log(pi)).sum(axis=-1, keepdims=True)
    onehot = np.eye(kernel.shape[1])[batch.actions]
    d_logits = (-psi[..., None] * (onehot - pi)
                + entropy_coef * pi * (np.log(pi) + entropy)) / valid.sum()
    d_logits = d_logits * valid[..., None]
    grad_kernel = np.einsum("tbi,tbj->ij", x, d_logits)
    grad_bias = d_logits.sum(axis=(0, 1))
    return kernel - lr * grad_kernel, bias - lr * grad_bias


def _linear_softmax_learner(steps, envs, **options):
    """A learner whose policy is logits = x W + b (2 features, 3 actions), with random W, b;
    and a hand-made batch: a termination, a truncation and the batch's end bootstrapped,
    one padded step."""
    config = pg_keras.Config(num_envs=envs, steps_per_update=steps, baseline=False,
                             optimizer="sgd", max_grad_norm=0.0, **options)
    network = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    learner = pg_keras.build_learner(config, gym.spaces.Box(-5.0, 5.0, (2,), np.float32),
                                     gym.spaces.Discrete(3), policy_network=network)
    rng = np.random.default_rng(4)
    network.layers[-1].kernel.assign(rng.normal(size=(2, 3)))
    network.layers[-1].bias.assign(rng.normal(size=3))
    terminated = np.zeros((steps, envs), bool)
    truncated = np.zeros((steps, envs), bool)
    terminated[1, 0], truncated[2, 1] = True, True
    bootstrap = np.zeros((steps, envs), np.float32)
    bootstrap[2, 1], bootstrap[-1] = 2.5, [1.0, -0.5, 3.0]
    mask = np.ones((steps, envs), np.float32)
    mask[3, 2] = 0.0
    batch = pg_keras.batch.Batch(
        observations=rng.normal(size=(steps, envs, 2)).astype(np.float32),
        actions=rng.integers(0, 3, size=(steps, envs)).astype(np.int32),
        rewards=rng.normal(size=(steps, envs)).astype(np.float32),
        terminated=terminated, truncated=truncated, bootstrap=bootstrap, mask=mask,
        episode_steps=np.zeros((steps, envs), np.int32))
    return learner, network.layers[-1], batch


@pytest.mark.parametrize("entropy_coef,normalize", [(0.0, False), (0.3, False), (0.3, True)])
def test_one_sgd_step_is_the_hand_computed_policy_gradient(entropy_coef, normalize):
    """One update of a linear softmax policy moves W and b by -lr * the formula's gradient."""
    gamma, lr = 0.9, 0.5
    learner, layer, batch = _linear_softmax_learner(
        4, 3, gamma=gamma, policy_learning_rate=lr, entropy_coef=entropy_coef,
        normalize_advantages=normalize)
    kernel, bias = layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    expected = _hand_computed_sgd_step(kernel, bias, batch, gamma, lr, entropy_coef, normalize)
    learner.update(batch)
    np.testing.assert_allclose(layer.kernel.numpy(), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected[1], rtol=1e-5, atol=1e-6)
    assert np.abs(expected[0] - kernel).max() > 1e-2  # the step is not negligible


def test_running_statistics_learn_the_batch_after_its_gradient():
    """The observation and return normalizers take the mean and variance of the batch's
    valid steps, after the gradient, which sees the statistics the batch was collected with
    (fresh ones: the identity)."""
    gamma, lr = 0.9, 0.5
    learner, layer, batch = _linear_softmax_learner(
        4, 3, gamma=gamma, policy_learning_rate=lr, normalize_advantages=False,
        normalize_observations=True, normalize_returns=True)
    kernel, bias = layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    expected = _hand_computed_sgd_step(kernel, bias, batch, gamma, lr, 0.0, False)
    learner.update(batch)
    np.testing.assert_allclose(layer.kernel.numpy(), expected[0], rtol=1e-5, atol=1e-6)
    valid = batch.mask > 0
    returns = _hand_returns(batch, gamma)[valid]
    observations = batch.observations[valid]
    np.testing.assert_allclose(learner.return_stats.mean.numpy(), returns.mean(), rtol=1e-5)
    np.testing.assert_allclose(learner.return_stats.variance.numpy(), returns.var(), rtol=1e-5)
    np.testing.assert_allclose(learner.normalizer.mean.numpy(), observations.mean(axis=0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(learner.normalizer.variance.numpy(), observations.var(axis=0),
                               rtol=1e-5)
    # The next update weighs each step by G_t / std(G): Psi in the returns' own scale.
    kernel = layer.kernel.numpy().astype(np.float64)
    scaled = batch._replace(rewards=batch.rewards / np.sqrt(returns.var() + 1e-8),
                            bootstrap=batch.bootstrap / np.sqrt(returns.var() + 1e-8))
    features = (batch.observations - observations.mean(axis=0)) / np.sqrt(
        observations.var(axis=0) + 1e-8)
    expected = _hand_computed_sgd_step(
        kernel, layer.bias.numpy().astype(np.float64),
        scaled._replace(observations=features), gamma, lr, 0.0, False)
    learner.update(batch)
    np.testing.assert_allclose(layer.kernel.numpy(), expected[0], rtol=1e-4, atol=1e-6)


def test_max_grad_norm_bounds_the_first_step():
    # With SGD, the first step moves the weights by exactly lr * clipped gradient.
    envs, learner, collector, _ = bandit_setup("discrete", optimizer="sgd", max_grad_norm=0.01,
                                               policy_learning_rate=1.0)
    before = [v.numpy() for v in learner.policy_variables]
    metrics = learner.update(collector.collect()[0])
    assert metrics["policy_grad_norm"].numpy() > 0.01
    step = np.sqrt(sum(np.sum((v.numpy() - b) ** 2)
                       for v, b in zip(learner.policy_variables, before)))
    np.testing.assert_allclose(step, 0.01, rtol=1e-4)


def test_non_finite_batch_skips_the_update():
    envs, learner, collector, _ = bandit_setup("discrete")
    learner.update(collector.collect()[0])  # optimizers now have non-trivial state
    batch, _ = collector.collect()
    weights = _weights(learner)
    slots = [v.numpy() for v in learner.policy_optimizer.variables + learner.value_optimizer.variables]
    rewards = batch.rewards.copy()
    rewards[0, 0] = np.nan
    metrics = learner.update(batch._replace(rewards=rewards))
    assert metrics["skipped"].numpy() == 1.0
    assert int(learner.skipped_updates.numpy()) == 1 and int(learner.updates.numpy()) == 1
    for before, after in zip(weights, _weights(learner)):
        np.testing.assert_array_equal(before, after)
    after_slots = [v.numpy() for v in learner.policy_optimizer.variables
                   + learner.value_optimizer.variables]
    for before, after in zip(slots, after_slots):
        np.testing.assert_array_equal(before, after)


def test_update_is_the_same_under_a_mirrored_strategy():
    envs, reference, collector, _ = bandit_setup("box_clip")
    batch, _ = collector.collect()
    reference.update(batch)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    space = envs.single_action_space
    keras.utils.set_random_seed(0)
    mirrored = pg_keras.build_learner(reference.config, envs.single_observation_space, space,
                                      strategy=strategy)
    mirrored.update(batch)
    for a, b in zip(_weights(reference), _weights(mirrored)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_value_model_fits_the_returns():
    """The value model regresses on the returns: on a bandit, V(s) -> E[reward]."""
    envs, learner, collector, _ = bandit_setup("multi_binary", policy_learning_rate=1e-6,
                                               value_learning_rate=3e-3)
    obs = np.array([[0.5, -0.5, 1.0]], np.float32)
    values = []
    for i in range(200):
        learner.update(collector.collect()[0])
        if i >= 150:
            values.append(learner.policy.value(obs, learner.policy.initial_state(1)).numpy()[0])
    # A near-frozen uniform policy over 4 bits scores 2 matches on average.
    assert abs(np.mean(values) - 2.0) < 0.2


def test_gamma_weighting_scales_each_step_by_gamma_to_the_t():
    """With SGD and one update, weighting step t by 0.5**t changes the gradient as predicted."""
    import gymnasium as gym
    from toy_envs import CounterEnv

    def one_update(weighting):
        envs = vector_env([lambda: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=4)])
        config = pg_keras.Config(num_envs=1, steps_per_update=4, gamma=0.5, baseline=False,
                                 normalize_advantages=False, optimizer="sgd",
                                 policy_learning_rate=1.0, gamma_weighting=weighting)
        keras.utils.set_random_seed(0)
        learner = pg_keras.build_learner(config, envs.single_observation_space,
                                         envs.single_action_space)
        batch, _ = pg_keras.Collector(envs, learner.policy, config).collect()
        with tf.GradientTape() as tape:
            log_probs = tf.reshape(learner.policy.distribution(
                tf.reshape(batch.observations, [4, 1])).log_prob(batch.actions[:, 0]), [4])
        per_step = tape.jacobian(log_probs, learner.policy_variables[-1])  # output bias
        before = learner.policy_variables[-1].numpy()
        learner.update(batch)
        return batch, per_step.numpy(), learner.policy_variables[-1].numpy() - before

    batch, per_step, delta = one_update(True)
    g = np.array([1 + 0.5 + 0.25 + 0.125, 1 + 0.5 + 0.25, 1 + 0.5, 1.0])  # returns-to-go
    expected = np.mean((0.5 ** np.arange(4) * g)[:, None] * per_step, axis=0)
    np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-7)
    _, _, unweighted = one_update(False)
    np.testing.assert_allclose(unweighted, np.mean(g[:, None] * per_step, axis=0), rtol=1e-4,
                               atol=1e-7)
