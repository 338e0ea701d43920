"""Tests of pg_keras.losses: gradients against analytic REINFORCE gradients, and the
statistics of the Monte-Carlo estimate with and without a baseline.

The surrogate's value means nothing; its gradient is the policy-gradient estimate, so
every test here looks at gradients (computed eagerly with tf.GradientTape).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from pg_keras import losses
from pg_keras.heads import make_head


def _softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _mask(rng, shape, p_valid=0.7):
    """A random 0/1 mask with at least one valid and one masked step."""
    mask = (rng.uniform(size=shape) < p_valid).astype(np.float32)
    mask.flat[0], mask.flat[-1] = 1.0, 0.0
    return mask


# ---------------------------------------------------------------------------------------
# Discrete: linear softmax policy
# ---------------------------------------------------------------------------------------

def _softmax_policy_grad(x, W, actions, weights, mask, step_weights=None):
    """Gradient of policy_gradient_loss w.r.t. W for logits = x @ W, via the Discrete head."""
    T, B, d = x.shape
    head = make_head(gym.spaces.Discrete(W.shape[1]))
    W = tf.Variable(W)
    with tf.GradientTape() as tape:
        logits = tf.reshape(tf.constant(x), [T * B, d]) @ W
        log_probs = tf.reshape(head.distribution(logits).log_prob(actions.reshape(-1)), [T, B])
        loss = losses.policy_gradient_loss(log_probs, tf.constant(weights), tf.constant(mask),
                                           step_weights)
    return loss, tape.gradient(loss, W).numpy()


def _analytic_softmax_grad(x, W, actions, weights, mask):
    """-(1/N_valid) sum_valid G * outer(x, onehot(a) - pi), in float64."""
    n = W.shape[1]
    x64 = x.astype(np.float64)
    pi = _softmax(x64 @ W.astype(np.float64))
    score = np.eye(n)[actions] - pi                          # d log pi(a|s) / d logits
    coef = weights.astype(np.float64) * mask / mask.sum()    # [T, B]
    return -np.einsum("tb,tbi,tbj->ij", coef, x64, score)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_gradient_is_reinforce_gradient(seed):
    rng = np.random.default_rng(seed)
    T, B, d, n = 5, 4, 3, 4
    x = rng.normal(size=(T, B, d)).astype(np.float32)
    W = rng.normal(size=(d, n)).astype(np.float32)
    actions = rng.integers(0, n, size=(T, B)).astype(np.int32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))

    _, grad = _softmax_policy_grad(x, W, actions, G, mask)
    want = _analytic_softmax_grad(x, W, actions, G, mask)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)

    # One valid step alone: the ascent direction is G * outer(x, onehot(a) - pi).
    single = np.zeros_like(mask)
    single[0, 0] = 1.0
    _, grad1 = _softmax_policy_grad(x, W, actions, G, single)
    pi = _softmax(x[0, 0] @ W)
    np.testing.assert_allclose(-grad1, G[0, 0] * np.outer(x[0, 0], np.eye(n)[actions[0, 0]] - pi),
                               rtol=1e-4, atol=1e-6)


def test_masked_steps_contribute_nothing_and_mean_is_over_valid_steps():
    rng = np.random.default_rng(3)
    T, B, d, n = 6, 3, 2, 3
    x = rng.normal(size=(T, B, d)).astype(np.float32)
    W = rng.normal(size=(d, n)).astype(np.float32)
    actions = rng.integers(0, n, size=(T, B)).astype(np.int32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))
    loss, grad = _softmax_policy_grad(x, W, actions, G, mask)

    # Anything at masked steps (returns, observations, actions) changes nothing.
    G2, x2, a2 = G.copy(), x.copy(), actions.copy()
    G2[mask == 0] = 1e4
    x2[mask == 0] = rng.normal(size=x2[mask == 0].shape) * 10
    a2[mask == 0] = (a2[mask == 0] + 1) % n
    loss2, grad2 = _softmax_policy_grad(x2, W, a2, G2, mask)
    np.testing.assert_allclose(loss2.numpy(), loss.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad2, grad, rtol=1e-6, atol=1e-7)

    # The mean divides by the number of valid steps, not T*B: the loss is
    # -sum_valid(log pi * G) / N_valid.
    pi = _softmax(x.astype(np.float64) @ W.astype(np.float64))
    log_pi_a = np.log(np.take_along_axis(pi, actions[..., None], -1)[..., 0])
    np.testing.assert_allclose(loss.numpy(), -(log_pi_a * G * mask).sum() / mask.sum(),
                               rtol=1e-5)


def test_non_finite_padding_stays_out_of_loss_and_gradient():
    # Padded steps may hold NaN returns or -inf log-probs; they must not poison the
    # update (the learner skips any update whose loss or gradient is not finite).
    rng = np.random.default_rng(12)
    T, B, d, n = 4, 3, 2, 3
    x = rng.normal(size=(T, B, d)).astype(np.float32)
    W = rng.normal(size=(d, n)).astype(np.float32)
    actions = rng.integers(0, n, size=(T, B)).astype(np.int32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))
    G_nan = np.where(mask == 0, np.nan, G).astype(np.float32)
    _, grad = _softmax_policy_grad(x, W, actions, G_nan, mask)
    np.testing.assert_allclose(grad, _analytic_softmax_grad(x, W, actions, G, mask),
                               rtol=1e-4, atol=1e-6)

    log_probs = tf.Variable(np.where(mask == 0, -np.inf, -1.0).astype(np.float32))
    values = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    with tf.GradientTape() as tape:
        info = losses.reinforce_loss(log_probs, tf.ones((T, B)), G_nan, mask, 0.1, values,
                                     G_nan)
    g_lp, g_v = tape.gradient(info.total, [log_probs, values])
    assert all(np.isfinite(t.numpy()).all() for t in (info.total, g_lp, g_v))
    np.testing.assert_array_equal(g_lp.numpy()[mask == 0], 0.0)
    np.testing.assert_array_equal(g_v.numpy()[mask == 0], 0.0)
    np.testing.assert_allclose(g_v.numpy(), -2.0 * (G - values.numpy()) * mask / mask.sum(),
                               rtol=1e-5, atol=1e-7)


def test_step_weights_scale_each_term_and_get_no_gradient():
    rng = np.random.default_rng(4)
    T, B, d, n = 5, 2, 3, 3
    x = rng.normal(size=(T, B, d)).astype(np.float32)
    W = rng.normal(size=(d, n)).astype(np.float32)
    actions = rng.integers(0, n, size=(T, B)).astype(np.int32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))
    discounts = (0.9 ** np.arange(T, dtype=np.float32))[:, None] * np.ones((1, B), np.float32)

    _, grad = _softmax_policy_grad(x, W, actions, G, mask, tf.constant(discounts))
    want = _analytic_softmax_grad(x, W, actions, G * discounts, mask)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)

    step_weights = tf.Variable(discounts)
    log_probs = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = losses.policy_gradient_loss(log_probs, G, mask, step_weights)
    assert tape.gradient(loss, step_weights) is None


def test_weights_receive_no_gradient():
    # The advantage G - V(s) depends on the value weights; the policy loss must not push
    # them (the value model learns only from value_loss).
    rng = np.random.default_rng(5)
    T, B = 4, 3
    log_probs = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    v = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    G = tf.constant(rng.normal(size=(T, B)).astype(np.float32))
    mask = tf.ones((T, B))
    with tf.GradientTape(persistent=True) as tape:
        advantages = G - v
        loss = losses.policy_gradient_loss(log_probs, advantages, mask)
    assert tape.gradient(loss, v) is None
    assert tape.gradient(loss, advantages) is None
    # ... while log pi gets exactly -(G - V) / N.
    np.testing.assert_allclose(tape.gradient(loss, log_probs).numpy(),
                               -(G - v).numpy() / (T * B), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Box: diagonal Gaussian with a state-independent log-std
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bounds", ["clip", "tanh"])
def test_gaussian_gradients_are_analytic(bounds):
    rng = np.random.default_rng(6)
    T, B, d = 4, 3, 2
    head = make_head(gym.spaces.Box(-1.0, 1.0, (d,)), action_bounds=bounds)
    log_std = np.array([-0.4, 0.3], np.float32)
    head.log_std.assign(log_std)
    sigma2 = np.exp(2.0 * log_std.astype(np.float64))
    mu0 = rng.normal(size=(T * B, d)).astype(np.float32)
    # Raw actions, some outside the bounds: the log-prob is the plain Gaussian's in
    # both modes (clipping and squashing happen on the environment side).
    a = (mu0 + rng.normal(size=(T * B, d)) * np.exp(log_std) * 1.5).astype(np.float32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))
    coef = (G * mask / mask.sum()).reshape(-1, 1).astype(np.float64)  # G_i * m_i / N_valid

    mu = tf.Variable(mu0)
    with tf.GradientTape() as tape:
        log_probs = tf.reshape(head.distribution(mu).log_prob(a), [T, B])
        loss = losses.policy_gradient_loss(log_probs, G, mask)
    g_mu, g_log_std = tape.gradient(loss, [mu, head.log_std])

    diff = a.astype(np.float64) - mu0
    np.testing.assert_allclose(g_mu.numpy(), -coef * diff / sigma2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_log_std.numpy(),
                               (-coef * (diff ** 2 / sigma2 - 1.0)).sum(axis=0),
                               rtol=1e-4, atol=1e-6)
    # Masked steps: zero gradient on their means.
    assert np.all(g_mu.numpy()[mask.reshape(-1) == 0] == 0.0)


def test_gaussian_entropy_bonus_enters_with_minus_coef():
    # H of a diagonal Gaussian = sum_i log_std_i + const, so dH/dlog_std = 1 per dimension
    # and the entropy term adds -entropy_coef to each log_std's gradient.
    rng = np.random.default_rng(7)
    T, B, d = 3, 2, 2
    head = make_head(gym.spaces.Box(-1.0, 1.0, (d,)))
    mu = tf.constant(rng.normal(size=(T * B, d)).astype(np.float32))
    a = rng.normal(size=(T * B, d)).astype(np.float32)
    G = rng.normal(size=(T, B)).astype(np.float32)
    mask = _mask(rng, (T, B))
    coef = 0.3

    def log_std_grad(entropy_coef):
        with tf.GradientTape() as tape:
            dist = head.distribution(mu)
            info = losses.reinforce_loss(tf.reshape(dist.log_prob(a), [T, B]),
                                         tf.reshape(dist.entropy(), [T, B]), G, mask,
                                         entropy_coef)
        return tape.gradient(info.total, head.log_std).numpy()

    np.testing.assert_allclose(log_std_grad(coef) - log_std_grad(0.0), -coef * np.ones(d),
                               rtol=1e-5)


# ---------------------------------------------------------------------------------------
# value_loss and reinforce_loss
# ---------------------------------------------------------------------------------------

def test_value_loss_gradient():
    rng = np.random.default_rng(8)
    T, B = 5, 4
    V = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    targets = tf.Variable(rng.normal(size=(T, B)).astype(np.float32))
    mask = _mask(rng, (T, B))
    with tf.GradientTape() as tape:
        loss = losses.value_loss(V, targets, mask)
    g_v, g_t = tape.gradient(loss, [V, targets])
    assert g_t is None  # targets are constants
    n = mask.sum()
    np.testing.assert_allclose(g_v.numpy(), -2.0 * (targets - V).numpy() * mask / n,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss.numpy(),
                               ((targets - V).numpy() ** 2 * mask).sum() / n, rtol=1e-5)


def test_reinforce_loss_parts_and_gradients():
    rng = np.random.default_rng(9)
    T, B = 4, 5
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    log_probs, entropy, values = tf.Variable(f32(T, B)), tf.Variable(f32(T, B)), tf.Variable(
        f32(T, B))
    weights, targets, step_weights = f32(T, B), f32(T, B), rng.uniform(size=(T, B)).astype(
        np.float32)
    mask = _mask(rng, (T, B))
    coef = 0.05
    n = mask.sum()

    with tf.GradientTape() as tape:
        info = losses.reinforce_loss(log_probs, entropy, weights, mask, coef, values, targets,
                                     step_weights)
    g_lp, g_h, g_v = tape.gradient(info.total, [log_probs, entropy, values])

    assert isinstance(info, losses.LossInfo)
    np.testing.assert_allclose(info.policy.numpy(),
                               -(log_probs.numpy() * weights * step_weights * mask).sum() / n,
                               rtol=1e-5)
    np.testing.assert_allclose(info.entropy.numpy(), (entropy.numpy() * mask).sum() / n,
                               rtol=1e-5)
    np.testing.assert_allclose(info.value.numpy(),
                               ((targets - values.numpy()) ** 2 * mask).sum() / n, rtol=1e-5)
    np.testing.assert_allclose(info.total.numpy(),
                               info.policy.numpy() - coef * info.entropy.numpy()
                               + info.value.numpy(), rtol=1e-6)
    # The entropy bonus enters with -entropy_coef; each part's gradient is its own.
    np.testing.assert_allclose(g_h.numpy(), -coef * mask / n, rtol=1e-5)
    np.testing.assert_allclose(g_lp.numpy(), -weights * step_weights * mask / n, rtol=1e-5)
    np.testing.assert_allclose(g_v.numpy(), -2.0 * (targets - values.numpy()) * mask / n,
                               rtol=1e-5, atol=1e-7)

    # Without a baseline the value part is exactly 0.
    info = losses.reinforce_loss(log_probs, entropy, weights, mask, coef)
    assert info.value.numpy() == 0.0
    np.testing.assert_allclose(info.total.numpy(),
                               info.policy.numpy() - coef * info.entropy.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Baselines: unbiased, and lower variance
# ---------------------------------------------------------------------------------------

# A contextual bandit (one-step episodes): two equally likely states, three actions,
# a tabular softmax policy logits = theta[s], and G = mean_reward[s, a] + N(0, 1) noise.
# The large offset in the rewards is what makes a baseline matter.
_THETA = np.array([[0.3, -0.2, 0.5], [-0.4, 0.6, 0.1]], np.float32)
_MEAN_REWARD = np.array([[11.0, 12.5, 10.0], [4.0, 3.0, 5.5]])
_NUM_SAMPLES = 20_000


def _per_sample_gradients(states, actions, G, baseline):
    """The per-sample ascent estimates (G_i - b_i) * grad log pi(a_i|s_i) w.r.t. theta.

    They come from the library's loss: each sample gets its own copy of the logits, so
    the loss's gradient w.r.t. that copy is its term divided by N.

    Returns:
        [N, 2, 3] float64.
    """
    n = len(states)
    theta = tf.constant(_THETA)
    head = make_head(gym.spaces.Discrete(3))
    with tf.GradientTape() as tape:
        logits = tf.gather(theta, states)
        tape.watch(logits)
        log_probs = head.distribution(logits).log_prob(actions)[None, :]  # [T=1, B=N]
        loss = losses.policy_gradient_loss(log_probs, (G - baseline)[None, :].astype(np.float32),
                                           tf.ones([1, n]))
    per_logits = -n * tape.gradient(loss, logits).numpy().astype(np.float64)  # [N, 3]
    out = np.zeros((n,) + _THETA.shape)
    out[np.arange(n), states] = per_logits
    return out


def test_baseline_is_unbiased_and_reduces_variance():
    rng = np.random.default_rng(2024)
    pi = _softmax(_THETA.astype(np.float64))                       # [2, 3]
    p_state = np.array([0.5, 0.5])
    expected_g_given_s = (pi * _MEAN_REWARD).sum(axis=1)           # E[G | s]
    expected_g = (p_state * expected_g_given_s).sum()              # E[G]

    # Exact gradient: sum_s p(s) sum_a pi(a|s) grad log pi(a|s) E[G|s,a], with
    # d log pi(a|s) / d theta[s] = onehot(a) - pi(.|s) (zero for the other state's row).
    exact = np.zeros_like(pi)
    for s in range(2):
        for a in range(3):
            exact[s] += p_state[s] * pi[s, a] * (np.eye(3)[a] - pi[s]) * _MEAN_REWARD[s, a]

    states = rng.integers(0, 2, size=_NUM_SAMPLES)
    u = rng.uniform(size=_NUM_SAMPLES)
    actions = np.minimum((u[:, None] > np.cumsum(pi[states], axis=1)).sum(axis=1), 2)
    actions = actions.astype(np.int32)  # inverse-CDF sampling
    G = _MEAN_REWARD[states, actions] + rng.normal(size=_NUM_SAMPLES)

    baselines = {
        "none": np.zeros(_NUM_SAMPLES),
        "constant E[G]": np.full(_NUM_SAMPLES, expected_g),
        "constant, poor": np.full(_NUM_SAMPLES, 3.0),
        "state E[G|s]": expected_g_given_s[states],
    }
    stderrs, variances = {}, {}
    for name, b in baselines.items():
        g = _per_sample_gradients(states, actions, G, b)
        mean = g.mean(axis=0)
        stderr = g.std(axis=0, ddof=1) / np.sqrt(_NUM_SAMPLES)
        # Unbiased: every component within 4 standard errors of the exact gradient.
        assert np.all(np.abs(mean - exact) < 4.0 * stderr), (name, mean, exact, stderr)
        stderrs[name] = stderr
        variances[name] = g.var(axis=0, ddof=1).sum()  # trace of the covariance

    # The check above has power: the exact gradient is far from 0 in standard-error units,
    # and an action-dependent "baseline" b = E[G|s,a], which is biased (it cancels the
    # signal), fails it by a wide margin.
    assert np.max(np.abs(exact) / stderrs["none"]) > 5.0
    g_bad = _per_sample_gradients(states, actions, G, _MEAN_REWARD[states, actions])
    stderr_bad = g_bad.std(axis=0, ddof=1) / np.sqrt(_NUM_SAMPLES)
    assert np.max(np.abs(g_bad.mean(axis=0) - exact) / stderr_bad) > 20.0

    # Variance: a good baseline reduces it a lot; the state-dependent one reduces it most.
    assert variances["constant E[G]"] < 0.25 * variances["none"]
    assert variances["state E[G|s]"] < 0.5 * variances["constant E[G]"]
    assert variances["constant, poor"] < variances["none"]


def test_batch_gradient_is_mean_of_per_sample_estimates():
    # The loss's gradient w.r.t. the shared theta is the mean of the per-sample estimates
    # (what the learner actually applies), here on a small batch.
    rng = np.random.default_rng(11)
    n = 64
    states = rng.integers(0, 2, size=n)
    actions = rng.integers(0, 3, size=n).astype(np.int32)
    G = rng.normal(size=n)
    theta = tf.Variable(_THETA)
    head = make_head(gym.spaces.Discrete(3))
    with tf.GradientTape() as tape:
        log_probs = head.distribution(tf.gather(theta, states)).log_prob(actions)[None, :]
        loss = losses.policy_gradient_loss(log_probs, G[None, :].astype(np.float32),
                                           tf.ones([1, n]))
    np.testing.assert_allclose(
        -tf.convert_to_tensor(tape.gradient(loss, theta)).numpy(),  # gather gives IndexedSlices
        _per_sample_gradients(states, actions, G, np.zeros(n)).mean(axis=0),
        rtol=1e-4, atol=1e-6)
