"""The suite's statistics against hand-computed values and the laws of samples."""

import numpy as np
import pytest

from experiments import stats


@pytest.mark.parametrize("scores, expected", [
    ([5.0], 5.0),
    ([1, 2, 3], 2.0),                      # n < 4: nothing trimmed
    ([4, 1, 3, 2], 2.5),                   # n = 4: one from each end -> mean(2, 3)
    ([10, 1, 3, 100, 4], 17 / 3),          # n = 5: mean of the middle three (3, 4, 10)
    ([6, 5, 4, 3, 2, 1], 3.5),             # n = 6: mean(2, 3, 4, 5)
    ([0, 6, 1, 5, 2, 4, 3], 3.0),          # n = 7: mean(1..5)
    ([8, 7, 6, 5, 4, 3, 2, 1], 4.5),       # n = 8: mean(3, 4, 5, 6)
    ([-500, 9, 11, 10, 1e6, 12, 8, 7, 13], 10.0),  # n = 9: mean(8..12), outliers out
])
def test_iqm_trims_floor_n_over_4_from_each_end(scores, expected):
    assert stats.iqm(scores) == pytest.approx(expected)


def test_iqm_along_an_axis_is_the_iqm_of_each_row():
    rows = np.array([[10, 1, 3, 100, 4], [1, 1, 1, 1, 1], [5, 4, 3, 2, 1]], dtype=float)
    np.testing.assert_allclose(stats.iqm(rows, axis=-1), [17 / 3, 1.0, 3.0])
    np.testing.assert_allclose(stats.iqm(rows.T, axis=0), [17 / 3, 1.0, 3.0])


def test_iqm_of_nothing_is_refused():
    with pytest.raises(ValueError, match="no scores"):
        stats.iqm([])


def test_bootstrap_of_a_constant_is_that_constant():
    assert stats.stratified_bootstrap_ci([[7.0] * 5], reps=200) == (7.0, 7.0)


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    scores = [480.0, 500.0, 362.0, 500.0, 420.0]
    first = stats.stratified_bootstrap_ci([scores], reps=2000, seed=3)
    assert first == stats.stratified_bootstrap_ci([scores], reps=2000, seed=3)
    assert min(scores) <= first[0] <= stats.iqm(scores) <= first[1] <= max(scores)
    assert first[0] < first[1]


def test_bootstrap_resamples_within_each_stratum():
    # Each replicate keeps three zeros' worth of the first stratum and the single 10 of
    # the second, so the mean over both never moves; pooled resampling would spread it.
    ci = stats.stratified_bootstrap_ci([[0.0, 0.0, 0.0], [10.0]], statistic=np.mean, reps=500)
    assert ci == pytest.approx((2.5, 2.5))


@pytest.mark.parametrize("statistic", [np.mean, stats.iqm])
def test_bootstrap_interval_covers_the_true_center_about_95_percent(statistic):
    # Normal(3, 1): the mean and the IQM of the distribution are both 3. The percentile
    # bootstrap with 20 runs undercovers a little; far below 0.95 would be a wrong interval.
    rng = np.random.default_rng(0)
    trials = 300
    hits = sum(low <= 3.0 <= high for low, high in (
        stats.stratified_bootstrap_ci([rng.normal(3.0, 1.0, 20)], statistic=statistic,
                                      reps=1000, seed=t) for t in range(trials)))
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    few = stats.stratified_bootstrap_ci([rng.normal(0, 1, 5)], reps=2000)
    many = stats.stratified_bootstrap_ci([rng.normal(0, 1, 200)], reps=2000)
    assert many[1] - many[0] < (few[1] - few[0]) / 3


def test_bootstrap_refuses_a_bad_confidence_and_an_empty_stratum():
    with pytest.raises(ValueError, match="confidence"):
        stats.stratified_bootstrap_ci([[1.0, 2.0]], confidence=95)
    with pytest.raises(ValueError, match="stratum"):
        stats.stratified_bootstrap_ci([[1.0], []])


@pytest.mark.parametrize("solved_at, expected", [
    ([10, 20, 30], 20),
    ([30, None, 10], 30),          # the unsolved seed counts as the latest
    ([10, 20, 30, None], 25),
    ([10, None], None),            # half unsolved: the median is infinite
    ([None, None, 10], None),
    ([], None),
])
def test_median_steps_counts_unsolved_runs_as_never(solved_at, expected):
    assert stats.median_steps(solved_at) == expected
