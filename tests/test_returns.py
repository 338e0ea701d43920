"""Tests of pg_keras.returns against plain Python loops and hand-computed numbers.

Conventions (from the module docstring): ``continues[t]`` is 1 where step t+1 belongs to
step t's episode; the last row is always a cut whatever ``continues[-1]`` says;
``bootstrap[t]`` is read only where the episode does not continue at step t.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pg_keras import returns

SEEDS = [0, 1, 2, 3, 4]
GAMMAS = [0.0, 0.9, 1.0]
LAMBDAS = [0.0, 0.5, 0.95, 1.0]


# ---------------------------------------------------------------------------------------
# Plain-loop references: one column at a time, walking backwards, in float64.
# ---------------------------------------------------------------------------------------

def _continues_at(continues, t, b):
    """The episode goes on past step t (the last row is always a cut)."""
    return t < continues.shape[0] - 1 and bool(continues[t, b])


def reference_returns(rewards, continues, bootstrap, gamma):
    T, B = rewards.shape
    out = np.zeros((T, B))
    for b in range(B):
        next_return = 0.0
        for t in reversed(range(T)):
            beyond = next_return if _continues_at(continues, t, b) else bootstrap[t, b]
            out[t, b] = rewards[t, b] + gamma * beyond
            next_return = out[t, b]
    return out


def reference_gae(rewards, values, continues, bootstrap, gamma, lam):
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        next_adv = 0.0
        for t in reversed(range(T)):
            if _continues_at(continues, t, b):
                next_value, carry = values[t + 1, b], next_adv
            else:
                next_value, carry = bootstrap[t, b], 0.0
            delta = rewards[t, b] + gamma * next_value - values[t, b]
            adv[t, b] = delta + gamma * lam * carry
            next_adv = adv[t, b]
    return adv


def random_batch(seed, T=13, B=6):
    """A [T, B] batch with terminations and truncations inside it.

    ``bootstrap`` follows the learner's contract where it is read (0 after a
    termination, a value after a truncation or at the final cut) and holds large finite
    garbage where the episode continues, so reading it there would show.
    """
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    u = rng.uniform(size=(T, B))
    terminated = u < 0.15
    truncated = (u >= 0.15) & (u < 0.27)
    # Make sure both kinds of boundary occur inside the batch for every seed.
    terminated[2, 0], truncated[2, 0] = True, False
    truncated[4, 1], terminated[4, 1] = True, False
    # Leave columns whose last row "continues" in the input: the function must cut anyway.
    terminated[-1, :2] = truncated[-1, :2] = False
    continues = (~(terminated | truncated)).astype(np.float32)
    bootstrap = (1e3 * rng.normal(size=(T, B))).astype(np.float32)
    bootstrap[terminated] = 0.0
    bootstrap[truncated] = rng.normal(size=truncated.sum())
    bootstrap[-1, ~(terminated[-1] | truncated[-1])] = rng.normal(
        size=(~(terminated[-1] | truncated[-1])).sum())
    return dict(rewards=rewards, values=values, continues=continues, bootstrap=bootstrap,
                terminated=terminated, truncated=truncated)


# ---------------------------------------------------------------------------------------
# discounted_returns
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_discounted_returns_matches_loop(seed, gamma):
    d = random_batch(seed)
    got = returns.discounted_returns(d["rewards"], d["continues"], d["bootstrap"], gamma)
    want = reference_returns(d["rewards"], d["continues"], d["bootstrap"], gamma)
    assert got.dtype == tf.float32 and got.shape == d["rewards"].shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_discounted_returns_hand_computed():
    # T=3, gamma=0.5, rewards 1, 2, 4 in each column.
    #   col 0: no boundary, cut at the end with V(s_T)=8:
    #          G2 = 4 + .5*8 = 8,   G1 = 2 + .5*8 = 6,   G0 = 1 + .5*6 = 4
    #   col 1: terminated at t=1 (bootstrap 0); a new episode at t=2 is cut with 8:
    #          G2 = 8,              G1 = 2 + .5*0 = 2,   G0 = 1 + .5*2 = 2
    #   col 2: truncated at t=0 with V(final obs)=10:
    #          G2 = 8,              G1 = 6,              G0 = 1 + .5*10 = 6
    rewards = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]
    continues = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    bootstrap = [[99.0, 99.0, 10.0], [99.0, 0.0, 99.0], [8.0, 8.0, 8.0]]
    got = returns.discounted_returns(rewards, continues, bootstrap, 0.5)
    np.testing.assert_allclose(got.numpy(), [[4.0, 2.0, 6.0], [6.0, 2.0, 6.0], [8.0, 8.0, 8.0]])


def test_discounted_returns_gamma_zero_is_reward_and_gamma_one_is_sum():
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    continues = np.ones_like(rewards)
    bootstrap = np.zeros_like(rewards)
    np.testing.assert_allclose(
        returns.discounted_returns(rewards, continues, bootstrap, 0.0).numpy(), rewards)
    np.testing.assert_allclose(
        returns.discounted_returns(rewards, continues, bootstrap, 1.0).numpy(),
        [[10.0], [9.0], [7.0], [4.0]])


def test_bool_continues_accepted():
    # The learner's flags are bool; the docstrings promise bool works (regression test:
    # a bool tensor used to be rejected by convert_to_tensor(..., tf.float32)).
    d = random_batch(7)
    as_bool = tf.constant(d["continues"] > 0.5)
    for cont in (as_bool, as_bool.numpy()):
        np.testing.assert_allclose(
            returns.discounted_returns(d["rewards"], cont, d["bootstrap"], 0.9).numpy(),
            returns.discounted_returns(d["rewards"], d["continues"], d["bootstrap"], 0.9).numpy())
        adv, ret = returns.generalized_advantages(d["rewards"], d["values"], cont,
                                                  d["bootstrap"], 0.9, 0.8)
        np.testing.assert_allclose(
            adv.numpy(),
            reference_gae(d["rewards"], d["values"], d["continues"], d["bootstrap"], 0.9, 0.8),
            rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# generalized_advantages
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("lam", LAMBDAS)
def test_gae_matches_loop(seed, gamma, lam):
    d = random_batch(seed)
    adv, ret = returns.generalized_advantages(d["rewards"], d["values"], d["continues"],
                                              d["bootstrap"], gamma, lam)
    want = reference_gae(d["rewards"], d["values"], d["continues"], d["bootstrap"], gamma, lam)
    np.testing.assert_allclose(adv.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), want + d["values"], rtol=1e-5, atol=1e-5)


def test_gae_hand_computed():
    # T=3, gamma=0.5, lambda=0.5 (so gamma*lambda=0.25), rewards 1, 2, 4, values 1, 2, 3.
    #   col 0: no boundary, cut with V(s_T)=8:
    #     d2 = 4 + .5*8 - 3 = 5,  d1 = 2 + .5*3 - 2 = 1.5,  d0 = 1 + .5*2 - 1 = 1
    #     A2 = 5,  A1 = 1.5 + .25*5 = 2.75,  A0 = 1 + .25*2.75 = 1.6875
    #   col 1: terminated at t=1:
    #     d1 = 2 + 0 - 2 = 0;  A2 = 5,  A1 = 0,  A0 = 1 + .25*0 = 1
    #   col 2: truncated at t=0 with V(final obs)=10:
    #     d0 = 1 + .5*10 - 1 = 5;  A2 = 5,  A1 = 2.75,  A0 = 5
    rewards = [[1.0] * 3, [2.0] * 3, [4.0] * 3]
    values = [[1.0] * 3, [2.0] * 3, [3.0] * 3]
    continues = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    bootstrap = [[99.0, 99.0, 10.0], [99.0, 0.0, 99.0], [8.0, 8.0, 8.0]]
    adv, ret = returns.generalized_advantages(rewards, values, continues, bootstrap, 0.5, 0.5)
    want = np.array([[1.6875, 1.0, 5.0], [2.75, 0.0, 2.75], [5.0, 5.0, 5.0]])
    np.testing.assert_allclose(adv.numpy(), want)
    np.testing.assert_allclose(ret.numpy(), want + np.asarray(values))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda_one_is_return_minus_value(seed, gamma):
    d = random_batch(seed)
    adv, ret = returns.generalized_advantages(d["rewards"], d["values"], d["continues"],
                                              d["bootstrap"], gamma, 1.0)
    g = returns.discounted_returns(d["rewards"], d["continues"], d["bootstrap"], gamma)
    np.testing.assert_allclose(adv.numpy(), g.numpy() - d["values"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), g.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_gae_lambda_zero_is_td_error(seed, gamma):
    d = random_batch(seed)
    adv, _ = returns.generalized_advantages(d["rewards"], d["values"], d["continues"],
                                            d["bootstrap"], gamma, 0.0)
    cont = d["continues"].copy()
    cont[-1] = 0.0
    next_values = np.concatenate([d["values"][1:], np.zeros_like(d["values"][:1])])
    next_values = np.where(cont > 0.5, next_values, d["bootstrap"])
    td = d["rewards"] + gamma * next_values - d["values"]
    np.testing.assert_allclose(adv.numpy(), td, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# masked_mean, normalize, step_discounts
# ---------------------------------------------------------------------------------------

def test_masked_mean():
    x = tf.constant([[1.0, 2.0], [3.0, 1e6]])
    mask = tf.constant([[1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(returns.masked_mean(x, mask).numpy(), 2.0)
    np.testing.assert_allclose(returns.masked_mean(x, mask > 0.5).numpy(), 2.0)
    # An empty mask gives 0, not NaN (an update with no valid step must stay finite).
    assert returns.masked_mean(x, tf.zeros_like(x)).numpy() == 0.0


def test_masked_mean_and_normalize_ignore_non_finite_padding():
    # Padding may hold anything; NaN * 0 is NaN, so a multiply-only mask would leak it.
    x = tf.constant([1.0, np.nan, 3.0, np.inf, -np.inf])
    mask = tf.constant([1.0, 0.0, 1.0, 0.0, 0.0])
    assert returns.masked_mean(x, mask).numpy() == 2.0
    got = returns.normalize(x, mask).numpy()
    np.testing.assert_allclose(got[[0, 2]], [-1.0, 1.0], rtol=1e-6)
    # ... and the gradient at the left-out entries is 0, not NaN.
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        mean = returns.masked_mean(v, mask)
    np.testing.assert_array_equal(tape.gradient(mean, v).numpy(), [0.5, 0, 0.5, 0, 0])


@pytest.mark.parametrize("seed", SEEDS)
def test_normalize_ignores_masked_entries(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 5.0, size=(11, 4)).astype(np.float32)
    mask = (rng.uniform(size=x.shape) < 0.7).astype(np.float32)
    x[mask == 0] = 1e5  # outliers that would dominate the statistics if they leaked in
    got = returns.normalize(tf.constant(x), tf.constant(mask)).numpy()
    valid = got[mask == 1]
    np.testing.assert_allclose(valid.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.std(), 1.0, rtol=1e-4)
    # Masked entries are standardized with the valid entries' statistics, as documented.
    mean, std = x[mask == 1].mean(), x[mask == 1].std()
    np.testing.assert_allclose(got, (x - mean) / std, rtol=1e-4)


def test_normalize_without_mask_and_constant_input():
    x = tf.constant([1.0, 2.0, 3.0, 4.0])
    got = returns.normalize(x).numpy()
    np.testing.assert_allclose(got, (np.arange(1, 5) - 2.5) / np.sqrt(1.25), rtol=1e-6)
    # Zero variance: epsilon keeps the result finite (all zeros).
    np.testing.assert_array_equal(returns.normalize(tf.fill([5], 7.0)).numpy(), np.zeros(5))


def test_step_discounts():
    steps = tf.constant([[0, 1, 2], [3, 0, 1]], tf.int32)
    got = returns.step_discounts(steps, 0.9)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), 0.9 ** steps.numpy(), rtol=1e-6)
    # gamma=0 weights only each episode's first step; gamma=1 weights every step equally.
    np.testing.assert_array_equal(returns.step_discounts(steps, 0.0).numpy(),
                                  [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(returns.step_discounts(steps, 1.0).numpy(), np.ones((2, 3)))


@pytest.mark.parametrize("factor", [0.0, 0.5, 0.97, 1.0])
def test_matrix_and_scan_forms_of_the_discounted_sum_agree(monkeypatch, factor):
    """Short batches use a masked matrix product, long ones a scan: both are the recursion."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 7)).astype(np.float32)
    continues = (rng.random((40, 7)) > 0.15).astype(np.float32)
    expected = np.zeros_like(x)
    following = np.zeros(7, np.float32)
    for t in reversed(range(40)):
        following = x[t] + factor * continues[t] * following
        expected[t] = following
    matrix = returns.discounted_reverse_cumsum(x, continues, factor).numpy()
    monkeypatch.setattr(returns, "_MATRIX_MAX_ELEMENTS", 0)
    scan = returns.discounted_reverse_cumsum(x, continues, factor).numpy()
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scan, expected, rtol=1e-5, atol=1e-5)
