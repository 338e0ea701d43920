"""Tests of the claims made in docs/reinforce.md, from the REINFORCE update to the code.

Each test checks one step of the derivation against a formula, on the library's own
pieces (heads, losses, returns, learner): the surrogate is the return-weighted
cross-entropy; its gradient reaches every logit as G * (onehot(a) - pi); the Gaussian
scores; the score has zero mean (so a state baseline adds no bias); the exact expected
estimator of a two-step MDP with and without the gamma^t factor and a baseline; the value
loss's minimizer; and one compiled update of the learner against the formula.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import pg_keras
from pg_keras import losses, returns
from pg_keras.heads import make_head
from toy_envs import CounterEnv, vector_env

tfb = tfp.bijectors
tfd = tfp.distributions


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _small_policy_model(d, n, seed):
    """Input -> Dense(8, tanh) -> Dense(n) logits, seeded."""
    return keras.Sequential([
        keras.Input((d,)),
        keras.layers.Dense(8, activation="tanh",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                           bias_initializer=keras.initializers.RandomNormal(seed=seed + 1)),
        keras.layers.Dense(n, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
                           bias_initializer=keras.initializers.RandomNormal(seed=seed + 3)),
    ])


# ---------------------------------------------------------------------------------------
# Softmax policy: surrogate = return-weighted cross-entropy; gradient on every logit
# ---------------------------------------------------------------------------------------

def test_surrogate_gradient_equals_return_weighted_sparse_cross_entropy():
    rng = np.random.default_rng(0)
    T, B, d, n = 3, 4, 5, 3
    model = _small_policy_model(d, n, seed=10)
    head = make_head(gym.spaces.Discrete(n))
    x = rng.normal(size=(T * B, d)).astype(np.float32)
    actions = rng.integers(0, n, size=T * B).astype(np.int32)
    G = rng.normal(2.0, 3.0, size=(T, B)).astype(np.float32)  # both signs
    assert (G > 0).any() and (G < 0).any()

    def surrogate_and_grads(mask):
        with tf.GradientTape() as tape:
            log_probs = tf.reshape(head.distribution(model(x)).log_prob(actions), [T, B])
            loss = losses.policy_gradient_loss(log_probs, G, mask)
        return loss, tape.gradient(loss, model.trainable_variables)

    # All steps valid: Keras's default reduction divides the weighted sum by T*B, as the
    # surrogate's mean does.
    ones = np.ones((T, B), np.float32)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        ce = cross_entropy(actions, model(x), sample_weight=G.reshape(-1))
    ce_grads = tape.gradient(ce, model.trainable_variables)
    loss, grads = surrogate_and_grads(ones)
    np.testing.assert_allclose(loss.numpy(), ce.numpy(), rtol=1e-5)
    for g, c in zip(grads, ce_grads):
        np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=1e-4, atol=1e-7)

    # With padding, the surrogate averages over valid steps only: the same as a summed
    # cross-entropy with sample_weight = G * mask, divided by the number of valid steps.
    mask = (rng.uniform(size=(T, B)) < 0.6).astype(np.float32)
    mask[0, 0], mask[-1, -1] = 1.0, 0.0
    summed = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    with tf.GradientTape() as tape:
        ce = summed(actions, model(x), sample_weight=(G * mask).reshape(-1)) / mask.sum()
    ce_grads = tape.gradient(ce, model.trainable_variables)
    loss, grads = surrogate_and_grads(mask)
    np.testing.assert_allclose(loss.numpy(), ce.numpy(), rtol=1e-5)
    for g, c in zip(grads, ce_grads):
        np.testing.assert_allclose(g.numpy(), c.numpy(), rtol=1e-4, atol=1e-7)


def test_gradient_reaches_every_logit_and_the_last_layer_times_its_features():
    rng = np.random.default_rng(1)
    N, d, n = 6, 5, 4
    model = _small_policy_model(d, n, seed=20)
    hidden, output = model.layers
    head = make_head(gym.spaces.Discrete(n))
    x = rng.normal(size=(N, d)).astype(np.float32)
    actions = rng.integers(0, n, size=N).astype(np.int32)
    G = np.array([3.0, -2.0, 0.5, -0.7, 1.5, -4.0], np.float32)

    with tf.GradientTape(persistent=True) as tape:
        features = hidden(x)
        logits = output(features)
        tape.watch(logits)
        log_probs = tf.reshape(head.distribution(logits).log_prob(actions), [1, N])
        loss = losses.policy_gradient_loss(log_probs, G[None, :], tf.ones([1, N]))
    # The ascent direction of each row, per logit: -N * d loss / d logits.
    ascent = -N * tape.gradient(loss, logits).numpy().astype(np.float64)
    pi = _softmax(logits.numpy().astype(np.float64))
    onehot = np.eye(n)[actions]
    np.testing.assert_allclose(ascent, G[:, None] * (onehot - pi), rtol=1e-4, atol=1e-6)

    # Every logit gets gradient, not only the taken action's: the taken one moves with the
    # sign of G, every other one against it.
    assert np.all(ascent != 0.0)
    np.testing.assert_array_equal(np.sign(ascent[np.arange(N), actions]), np.sign(G))
    others = np.sign(ascent)[onehot == 0].reshape(N, n - 1)
    np.testing.assert_array_equal(others, -np.sign(G)[:, None] * np.ones((1, n - 1)))

    # Last layer: kernel gradient = -(1/N) sum_i outer(features_i, G_i (onehot_i - pi_i)),
    # bias gradient = -(1/N) sum_i G_i (onehot_i - pi_i); and it flows on into the torso.
    h = features.numpy().astype(np.float64)
    g_kernel, g_bias = tape.gradient(loss, [output.kernel, output.bias])
    np.testing.assert_allclose(-g_kernel.numpy(), h.T @ ascent / N, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(-g_bias.numpy(), ascent.mean(axis=0), rtol=1e-4, atol=1e-6)
    assert np.abs(tape.gradient(loss, hidden.kernel).numpy()).max() > 1e-3


# ---------------------------------------------------------------------------------------
# Gaussian policy
# ---------------------------------------------------------------------------------------

def test_state_dependent_gaussian_scores_for_mean_and_log_std():
    # The network outputs [mu, log_sigma]; d log pi / d mu = (a - mu) / sigma^2 and
    # d log pi / d log_sigma = (a - mu)^2 / sigma^2 - 1, per dimension.
    rng = np.random.default_rng(2)
    N, d = 7, 2
    head = make_head(gym.spaces.Box(-1.0, 1.0, (d,)), state_dependent_std=True)
    mu = rng.normal(size=(N, d))
    log_sigma = rng.uniform(-1.0, 0.5, size=(N, d))
    a = mu + rng.normal(size=(N, d)) * np.exp(log_sigma) * 1.5
    params = tf.constant(np.concatenate([mu, log_sigma], axis=1), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = tf.reduce_sum(head.distribution(params).log_prob(a.astype(np.float32)))
    g_mu, g_log_sigma = np.split(tape.gradient(log_prob, params).numpy(), 2, axis=1)
    sigma2 = np.exp(2.0 * log_sigma)
    np.testing.assert_allclose(g_mu, (a - mu) / sigma2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_log_sigma, (a - mu) ** 2 / sigma2 - 1.0, rtol=1e-4, atol=1e-5)

    # The head clips a predicted log-std to [-5, 2]; beyond the clip it gets no gradient.
    outside = tf.constant([[0.0, 0.0, 3.0, -6.0]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(outside)
        log_prob = tf.reduce_sum(head.distribution(outside).log_prob([[0.5, 0.5]]))
    np.testing.assert_array_equal(tape.gradient(log_prob, outside).numpy()[0, 2:], [0.0, 0.0])


def test_gaussian_score_has_zero_mean_on_the_raw_sample_but_not_on_the_clipped_one():
    # E_a~pi[grad log pi(a)] = 0 holds for the distribution the action was sampled from.
    # The clipped action the environment receives is not a sample of that Gaussian: the
    # same formula evaluated on it has a clearly non-zero mean (a bias).
    n = 100_000
    mu, log_sigma = 0.8, -0.5  # mean close to the upper bound 1
    sigma = np.exp(log_sigma)
    head = make_head(gym.spaces.Box(-1.0, 1.0, (1,)), state_dependent_std=True)
    params = tf.constant(np.tile([[mu, log_sigma]], (n, 1)), tf.float32)
    raw = head.distribution(params).sample(seed=(7, 11))
    clipped = tf.reshape(head.to_env(raw), [n, 1])
    assert np.any(raw.numpy() > 1.0) and np.all(clipped.numpy() <= 1.0)

    def mean_scores(actions):
        with tf.GradientTape() as tape:
            tape.watch(params)
            log_prob = tf.reduce_sum(head.distribution(params).log_prob(actions))
        return tape.gradient(log_prob, params).numpy().astype(np.float64).mean(axis=0)

    # Standard errors of the two score means: Var[(a-mu)/sigma^2] = 1/sigma^2 and
    # Var[z^2 - 1] = 2 for z ~ N(0, 1).
    stderr = np.array([1.0 / sigma, np.sqrt(2.0)]) / np.sqrt(n)
    on_raw = mean_scores(raw)
    assert np.all(np.abs(on_raw) < 4.0 * stderr), (on_raw, stderr)
    on_clipped = mean_scores(clipped)
    assert np.all(np.abs(on_clipped) > 20.0 * stderr), (on_clipped, stderr)


def test_tanh_squash_leaves_the_parameter_gradient_unchanged():
    # The squashed action y = tanh(u) has log-density log N(u) - log|dy/du|, and the
    # Jacobian term depends on u only: the gradient w.r.t. (mu, log_sigma) is the
    # Gaussian's, evaluated at the stored raw sample u.
    rng = np.random.default_rng(3)
    N, d = 6, 2
    head = make_head(gym.spaces.Box(-1.0, 1.0, (d,)), state_dependent_std=True,
                     action_bounds="tanh")
    mu = rng.normal(scale=0.5, size=(N, d))
    log_sigma = rng.uniform(-1.0, 0.0, size=(N, d))
    u = np.clip(mu + rng.normal(size=(N, d)) * np.exp(log_sigma), -1.5, 1.5)
    np.testing.assert_allclose(head.to_env(u.astype(np.float32)).numpy(), np.tanh(u),
                               rtol=1e-5, atol=1e-6)

    params = tf.constant(np.concatenate([mu, log_sigma], axis=1), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(params)
        head_log_prob = head.distribution(params).log_prob(u.astype(np.float32))
        total = tf.reduce_sum(head_log_prob)
    head_grad = tape.gradient(total, params).numpy()

    mu64, log_sigma64 = tf.Variable(mu), tf.Variable(log_sigma)
    with tf.GradientTape() as tape:
        squashed = tfd.TransformedDistribution(
            tfd.Independent(tfd.Normal(mu64, tf.exp(log_sigma64)), reinterpreted_batch_ndims=1),
            tfb.Tanh())
        squashed_log_prob = squashed.log_prob(np.tanh(u))
        total = tf.reduce_sum(squashed_log_prob)
    squashed_grad = np.concatenate([g.numpy() for g in tape.gradient(total,
                                                                     [mu64, log_sigma64])], 1)
    np.testing.assert_allclose(head_grad, squashed_grad, rtol=1e-4, atol=1e-5)
    # The values differ by the log-Jacobian: only the gradients coincide.
    np.testing.assert_allclose(squashed_log_prob.numpy() - head_log_prob.numpy(),
                               -np.log(1.0 - np.tanh(u) ** 2).sum(axis=1), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------
# The score has zero mean: why a state baseline adds no bias
# ---------------------------------------------------------------------------------------

def test_categorical_score_has_zero_mean_exactly():
    # sum_a pi(a) grad log pi(a) = grad sum_a pi(a) = grad 1 = 0, so for any b(s),
    # sum_a pi(a) grad log pi(a) b(s) = 0; an action-dependent b(a) does not cancel.
    n = 5
    head = make_head(gym.spaces.Discrete(n))
    logits = tf.Variable([0.3, -1.2, 2.0, 0.1, -0.4])
    with tf.GradientTape() as tape:
        log_probs = head.distribution(tf.tile(logits[None, :], [n, 1])).log_prob(tf.range(n))
    scores = tape.jacobian(log_probs, logits).numpy().astype(np.float64)  # [a, logit]
    pi = _softmax(logits.numpy().astype(np.float64))
    np.testing.assert_allclose(scores, np.eye(n) - pi[None, :], atol=1e-6)
    assert np.abs(scores).min() > 0.01  # no single score is zero...
    np.testing.assert_allclose(pi @ scores, np.zeros(n), atol=1e-6)  # ...their mean is
    np.testing.assert_allclose(pi @ (scores * 7.5), np.zeros(n), atol=1e-5)
    q = np.array([1.0, 4.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(pi @ (scores * q[:, None]), pi * (q - pi @ q), atol=1e-6)
    assert np.abs(pi * (q - pi @ q)).max() > 0.1


# A two-step MDP whose every trajectory can be enumerated. State 0 at t=0; action a0
# leads to state 1 + a0 at t=1; action a1 ends the episode (terminated). Tabular softmax
# policy logits = theta[s]. A large reward offset makes a baseline matter.
_THETA = np.array([[0.4, -0.3], [-0.5, 0.9], [0.2, 0.7]], np.float32)
_REWARD = np.array([[10.0, 12.0], [13.0, 9.0], [8.0, 14.0]], np.float32)
_GAMMA = 0.5


def _trajectories():
    """(probability, states, actions, rewards) of the four trajectories."""
    pi = _softmax(_THETA.astype(np.float64))
    for a0, a1 in itertools.product(range(2), range(2)):
        states = np.array([0, 1 + a0])
        actions = np.array([a0, a1], np.int32)
        rewards = _REWARD[states, actions].astype(np.float32)
        yield pi[0, a0] * pi[1 + a0, a1], states, actions, rewards


def _estimate(states, actions, rewards, gamma_weighting, baseline=None):
    """sum_t [gamma^t] (G_t - b(s_t)) grad_theta log pi(a_t|s_t) for one trajectory,
    through the library: returns.*, the Discrete head and policy_gradient_loss."""
    theta = tf.Variable(_THETA)
    head = make_head(gym.spaces.Discrete(2))
    rewards = rewards[:, None]                               # [T=2, B=1]
    continues = np.array([[1.0], [0.0]], np.float32)         # terminated at t=1
    bootstrap = np.zeros((2, 1), np.float32)
    if baseline is None:
        weights = returns.discounted_returns(rewards, continues, bootstrap, _GAMMA)
    else:  # GAE with lambda = 1: G_t - b(s_t)
        weights, _ = returns.generalized_advantages(
            rewards, baseline.astype(np.float32)[:, None], continues, bootstrap, _GAMMA, 1.0)
    step_weights = (returns.step_discounts(np.array([[0], [1]]), _GAMMA)
                    if gamma_weighting else None)
    with tf.GradientTape() as tape:
        log_probs = head.distribution(tf.gather(theta, states)).log_prob(actions)[:, None]
        loss = losses.policy_gradient_loss(log_probs, weights, tf.ones([2, 1]), step_weights)
    # The loss is a mean over the T=2 steps: -2 * its gradient is the summed estimate.
    return -2.0 * tf.convert_to_tensor(tape.gradient(loss, theta)).numpy().astype(np.float64), \
        loss.numpy()


def _objective_gradient():
    """J(theta) = E[r_0 + gamma r_1] and its exact gradient by autodiff."""
    theta = tf.Variable(_THETA.astype(np.float64))
    with tf.GradientTape() as tape:
        pi = tf.nn.softmax(theta)
        reward = _REWARD.astype(np.float64)
        value_1 = tf.reduce_sum(pi[1:] * reward[1:], axis=1)             # V(1), V(2)
        J = tf.reduce_sum(pi[0] * (reward[0] + _GAMMA * value_1))
    return J.numpy(), tape.gradient(J, theta).numpy()


def test_expected_estimate_is_the_gradient_of_the_discounted_objective_with_gamma_t():
    J, grad_J = _objective_gradient()
    weighted = sum(p * _estimate(s, a, r, True)[0] for p, s, a, r in _trajectories())
    np.testing.assert_allclose(weighted, grad_J, rtol=1e-5, atol=1e-6)

    # Without the gamma^t factor (the common practice) the step-1 terms lose their
    # gamma: the rows of the t=1 states are grad J / gamma, the t=0 row is unchanged.
    plain = sum(p * _estimate(s, a, r, False)[0] for p, s, a, r in _trajectories())
    np.testing.assert_allclose(plain[0], grad_J[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain[1:], grad_J[1:] / _GAMMA, rtol=1e-5, atol=1e-6)
    assert np.abs(plain[1:] - grad_J[1:]).max() > 0.1

    # The surrogate's value is not the objective: its expectation is not -J.
    expected_loss = sum(p * _estimate(s, a, r, True)[1] for p, s, a, r in _trajectories())
    assert abs(expected_loss + J) > 1.0, (expected_loss, J)


def test_state_baseline_keeps_the_expected_estimate_and_lowers_its_variance():
    pi = _softmax(_THETA.astype(np.float64))
    v1 = (pi * _REWARD).sum(axis=1)                          # V(1), V(2) (one step left)
    v0 = (pi[0] * (_REWARD[0] + _GAMMA * v1[1:])).sum()      # V(0)
    baselines = {
        "none": None,
        "arbitrary b(s)": lambda s: np.array([7.0, -3.0, 20.0])[s],
        "V(s)": lambda s: np.array([v0, v1[1], v1[2]])[s],
    }
    stats = {}
    for name, b in baselines.items():
        probs, estimates = [], []
        for p, s, a, r in _trajectories():
            probs.append(p)
            estimates.append(_estimate(s, a, r, True, None if b is None else b(s))[0].ravel())
        probs, estimates = np.array(probs), np.array(estimates)
        mean = probs @ estimates
        variance = probs @ ((estimates - mean) ** 2).sum(axis=1)   # trace of the covariance
        stats[name] = mean, variance

    _, grad_J = _objective_gradient()
    for name, (mean, _) in stats.items():
        np.testing.assert_allclose(mean, grad_J.ravel(), rtol=1e-5, atol=1e-5, err_msg=name)
    assert stats["V(s)"][1] < 0.1 * stats["none"][1], stats

    # An action-dependent "baseline" b(s, a) = r(s, a) is biased: it changes the mean.
    biased = sum(p * _estimate(s, a, r, True, _REWARD[s, a].astype(np.float64))[0]
                 for p, s, a, r in _trajectories())
    assert np.abs(biased - grad_J).max() > 0.5 * np.abs(grad_J).max()


# ---------------------------------------------------------------------------------------
# The value model
# ---------------------------------------------------------------------------------------

def test_value_loss_minimizer_is_the_mean_return_of_each_state():
    # value_loss = mean[(G - V(s))^2]; for a tabular V its gradient w.r.t. V(s) is
    # 2 n_s / N (V(s) - mean of G over the valid steps in s): the minimizer is the mean
    # return (not, say, the median, which an absolute error would give).
    rng = np.random.default_rng(4)
    T, B = 40, 5
    states = rng.integers(0, 2, size=(T, B))
    G = (rng.exponential(3.0, size=(T, B)) + 5.0 * states).astype(np.float32)  # skewed
    mask = (rng.uniform(size=(T, B)) < 0.8).astype(np.float32)
    n_valid = mask.sum()
    means = np.array([G[(states == s) & (mask == 1)].mean() for s in range(2)])
    medians = np.array([np.median(G[(states == s) & (mask == 1)]) for s in range(2)])
    assert np.abs(means - medians).min() > 0.3

    def loss_and_grad(v0):
        v = tf.Variable(np.asarray(v0, np.float32))
        with tf.GradientTape() as tape:
            loss = losses.value_loss(tf.gather(v, states), G, mask)
        return loss.numpy(), tape.gradient(loss, v)

    v_any = np.array([1.0, 2.0])
    counts = np.array([((states == s) & (mask == 1)).sum() for s in range(2)])
    _, grad = loss_and_grad(v_any)
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(),
                               2.0 * counts / n_valid * (v_any - means), rtol=1e-4)
    at_mean, grad = loss_and_grad(means)
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(), [0.0, 0.0], atol=1e-4)
    at_median, _ = loss_and_grad(medians)
    assert at_mean < at_median


# ---------------------------------------------------------------------------------------
# Episode boundaries
# ---------------------------------------------------------------------------------------

def test_a_step_both_terminated_and_truncated_bootstraps_nothing():
    # Column 0 terminates at its 2nd step exactly when its time limit of 2 also fires;
    # column 1 only hits the time limit. V(s) = 10 s + 100, so a bootstrap shows.
    envs = vector_env([
        lambda: gym.wrappers.TimeLimit(CounterEnv(terminate_at=2), max_episode_steps=2),
        lambda: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=2)])
    value = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, kernel_initializer=keras.initializers.Constant(10.0),
        bias_initializer=keras.initializers.Constant(100.0))])
    config = pg_keras.Config(num_envs=2, steps_per_update=3, baseline=True, eval_every=0)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space,
                                     value_network=value)
    batch, _ = pg_keras.Collector(envs, learner.policy, config).collect()
    np.testing.assert_array_equal(batch.terminated[1], [True, False])
    np.testing.assert_array_equal(batch.truncated[1], [True, True])
    # Final observation 2 in both columns: V = 120 for the truncation only.
    np.testing.assert_allclose(batch.bootstrap[1], [0.0, 120.0])


# ---------------------------------------------------------------------------------------
# The learner's compiled update is the formula
# ---------------------------------------------------------------------------------------

def test_learner_update_is_the_advantage_weighted_score_and_a_value_regression_step():
    """One update with SGD: delta theta = alpha_theta * mean[(G - V) grad log pi] and
    delta w = -alpha_w * grad mean[(G - V_w)^2], with G computed here from the batch."""
    envs = vector_env([lambda: gym.wrappers.TimeLimit(CounterEnv(), max_episode_steps=3),
                       lambda: CounterEnv(terminate_at=2)])
    T, B, gamma, lr_pi, lr_v = 5, 2, 0.5, 0.1, 0.01
    config = pg_keras.Config(num_envs=B, steps_per_update=T, gamma=gamma, baseline=True,
                             gae_lambda=1.0, normalize_advantages=False, optimizer="sgd",
                             policy_learning_rate=lr_pi, value_learning_rate=lr_v,
                             hidden_sizes=(4,), value_hidden_sizes=(4,), eval_every=0)
    keras.utils.set_random_seed(0)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    batch, _ = pg_keras.Collector(envs, learner.policy, config).collect()
    assert batch.terminated.any() and batch.truncated.any()

    # Return-to-go by a plain loop: a termination stops at 0, a truncation and the
    # segment's cut continue with the collector's bootstrap value.
    G = np.zeros((T, B))
    for b in range(B):
        for t in reversed(range(T)):
            ends = batch.terminated[t, b] or batch.truncated[t, b] or t == T - 1
            beyond = batch.bootstrap[t, b] if ends else G[t + 1, b]
            G[t, b] = batch.rewards[t, b] + gamma * beyond
    np.testing.assert_array_equal(batch.bootstrap[batch.terminated], 0.0)
    obs = tf.reshape(batch.observations, [T * B, 1])
    V = learner.policy.value(obs, learner.policy.initial_state(T * B)).numpy().astype(np.float64).reshape(T, B)
    advantage = (G - V).reshape(-1)

    with tf.GradientTape(persistent=True) as tape:
        log_probs = learner.policy.distribution(obs).log_prob(tf.reshape(batch.actions, [-1]))
        value_loss = tf.reduce_mean(
            tf.square(G.reshape(-1) - tf.reshape(learner.policy.value_network(obs), [-1])))
    expected_policy = [
        lr_pi * np.tensordot(advantage, tape.jacobian(log_probs, v).numpy(), axes=1) / (T * B)
        for v in learner.policy_variables]
    expected_value = [-lr_v * g.numpy()
                      for g in tape.gradient(value_loss, learner.value_variables)]

    before = [v.numpy() for v in learner.policy_variables + learner.value_variables]
    learner.update(batch)
    after = [v.numpy() for v in learner.policy_variables + learner.value_variables]
    for b0, b1, want in zip(before, after, expected_policy + expected_value):
        np.testing.assert_allclose(b1 - b0, want, rtol=1e-3, atol=1e-7)
    assert max(np.abs(w).max() for w in expected_policy) > 1e-4
    assert max(np.abs(w).max() for w in expected_value) > 1e-4
