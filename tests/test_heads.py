"""Tests of pg_keras.heads: every supported action space against numpy references."""

import math

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from pg_keras import heads
from pg_keras.collect.masks import info_action_mask
from pg_keras.collect.numpy_policy import head_sampler
from pg_keras.config import InputError
from pg_keras.heads import make_head

B = 6
SEED = tf.constant([3, 7], tf.int32)


def _params(head, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(scale=scale, size=(B, head.param_size)), tf.float32)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _categorical_entropy(logits):
    logp = _log_softmax(logits)
    return -(np.exp(logp) * logp).sum(axis=-1)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _assert_in_space(space, env_actions):
    """Every row is an element of ``space``, in the space's dtype."""
    env_actions = np.asarray(env_actions)
    assert env_actions.shape == (B,) + tuple(space.shape)
    assert env_actions.dtype == space.dtype
    for row in env_actions:
        assert space.contains(np.asarray(row)), (row, space)


def _check_shapes(head, params):
    distribution = head.distribution(params)
    assert distribution.batch_shape.as_list() == [B]
    assert tuple(distribution.event_shape.as_list()) == tuple(head.raw_shape)
    sample = distribution.sample(seed=SEED)
    assert tuple(sample.shape) == (B,) + tuple(head.raw_shape)
    assert sample.dtype == head.raw_dtype
    return distribution, sample


# --------------------------------------------------------------------------- Discrete


@pytest.mark.parametrize("space", [gym.spaces.Discrete(4), gym.spaces.Discrete(3, start=-2),
                                   gym.spaces.Discrete(5, start=10)], ids=str)
def test_discrete(space):
    head = make_head(space)
    assert isinstance(head, heads.CategoricalHead)
    assert head.param_size == space.n
    assert head.raw_shape == ()
    params = _params(head)
    logits = params.numpy()
    distribution, sample = _check_shapes(head, params)

    actions = np.arange(B) % space.n
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(),
                               _log_softmax(logits)[np.arange(B), actions], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(distribution.entropy().numpy(), _categorical_entropy(logits),
                               rtol=1e-5, atol=1e-5)

    greedy = head.greedy(params).numpy()
    np.testing.assert_array_equal(greedy, logits.argmax(axis=-1))
    env_greedy = head.to_env(greedy).numpy()
    np.testing.assert_array_equal(env_greedy, logits.argmax(axis=-1) + space.start)
    _assert_in_space(space, env_greedy)
    _assert_in_space(space, head.to_env(sample).numpy())
    # Raw action 0 and n-1 are the ends of the space, start included.
    np.testing.assert_array_equal(head.to_env(tf.constant([0, space.n - 1])).numpy(),
                                  [space.start, space.start + space.n - 1])

    parameters = head.parameters(params)
    assert set(parameters) == {"logits"}
    assert parameters["logits"].shape == (B, space.n)


# ---------------------------------------------------------------------- MultiDiscrete


MULTI_DISCRETE = [
    gym.spaces.MultiDiscrete([3, 5, 2]),
    gym.spaces.MultiDiscrete([[2, 3], [4, 2]]),
    gym.spaces.MultiDiscrete([3, 5, 2], start=[1, -1, 5]),
]


def _multi_discrete_reference(space, params):
    """Per-sub-action logit slices of ``params``, cut by hand."""
    nvec = np.asarray(space.nvec).reshape(-1)
    bounds = np.concatenate([[0], np.cumsum(nvec)])
    return [params[:, bounds[k]:bounds[k + 1]] for k in range(len(nvec))]


@pytest.mark.parametrize("space", MULTI_DISCRETE, ids=str)
def test_multi_discrete(space):
    nvec = np.asarray(space.nvec).reshape(-1)
    start = np.asarray(space.start).reshape(-1)
    head = make_head(space)
    assert isinstance(head, heads.MultiCategoricalHead)
    assert head.param_size == nvec.sum()
    assert head.raw_shape == (len(nvec),)
    params = _params(head)
    slices = _multi_discrete_reference(space, params.numpy())
    distribution, sample = _check_shapes(head, params)

    rng = np.random.default_rng(1)
    actions = np.stack([rng.integers(0, n, size=B) for n in nvec], axis=-1)
    expected = sum(_log_softmax(s)[np.arange(B), actions[:, k]] for k, s in enumerate(slices))
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(distribution.entropy().numpy(),
                               sum(_categorical_entropy(s) for s in slices), rtol=1e-5, atol=1e-5)

    greedy = head.greedy(params).numpy()
    np.testing.assert_array_equal(greedy, np.stack([s.argmax(-1) for s in slices], axis=-1))
    env_greedy = head.to_env(greedy).numpy()
    _assert_in_space(space, env_greedy)
    np.testing.assert_array_equal(env_greedy.reshape(B, -1), greedy + start)
    _assert_in_space(space, head.to_env(sample).numpy())

    parameters = head.parameters(params)
    assert set(parameters) == {"logits"}
    assert parameters["logits"].shape == (B, len(nvec), nvec.max())


@pytest.mark.parametrize("space", MULTI_DISCRETE, ids=str)
def test_multi_discrete_padding_is_never_chosen(space):
    """Padded logits must lose even when every real logit is very negative.

    Were the padding a finite logit like 0, it would win here: greedy would pick it and
    nearly every sample would be out of range.
    """
    nvec = np.asarray(space.nvec).reshape(-1)
    head = make_head(space)
    params = tf.fill((B, head.param_size), -40.0)
    samples = head.distribution(params).sample(500, seed=SEED).numpy().reshape(-1, len(nvec))
    assert np.all(samples >= 0)
    assert np.all(samples < nvec)
    # Each sub-action is uniform over its own size, so every valid value appears.
    for k, n in enumerate(nvec):
        assert set(np.unique(samples[:, k])) == set(range(n))
    greedy = head.greedy(params).numpy()
    assert np.all(greedy < nvec)
    probs = np.exp(head.parameters(params)["logits"].numpy())
    padded = np.arange(nvec.max())[None, :] >= nvec[:, None]
    assert np.all(probs[:, padded] == 0.0)


def test_multi_discrete_gradient_is_one_hot_minus_softmax():
    """d log pi / d params is onehot(a) - softmax per slice; padding leaks no gradient."""
    space = gym.spaces.MultiDiscrete([3, 5, 2])
    head = make_head(space)
    params = _params(head)
    actions = np.array([[2, 4, 1]] * B)
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = tf.reduce_sum(head.distribution(params).log_prob(actions))
    gradient = tape.gradient(log_prob, params).numpy()
    expected = []
    for k, s in enumerate(_multi_discrete_reference(space, params.numpy())):
        one_hot = np.eye(s.shape[1])[actions[:, k]]
        expected.append(one_hot - np.exp(_log_softmax(s)))
    np.testing.assert_allclose(gradient, np.concatenate(expected, axis=-1), atol=1e-5)


# ------------------------------------------------------------------------ MultiBinary


@pytest.mark.parametrize("space", [gym.spaces.MultiBinary(4), gym.spaces.MultiBinary([2, 3])],
                         ids=str)
def test_multi_binary(space):
    size = int(np.prod(space.shape))
    head = make_head(space)
    assert isinstance(head, heads.BernoulliHead)
    assert head.param_size == size
    assert head.raw_shape == (size,)
    params = _params(head)
    logits = params.numpy()
    distribution, sample = _check_shapes(head, params)

    actions = np.random.default_rng(2).integers(0, 2, size=(B, size))
    expected = (actions * _log_sigmoid(logits) + (1 - actions) * _log_sigmoid(-logits)).sum(-1)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(), expected,
                               rtol=1e-5, atol=1e-5)
    p = 1.0 / (1.0 + np.exp(-logits))
    entropy = -(p * _log_sigmoid(logits) + (1 - p) * _log_sigmoid(-logits)).sum(-1)
    np.testing.assert_allclose(distribution.entropy().numpy(), entropy, rtol=1e-5, atol=1e-5)

    greedy = head.greedy(params).numpy()
    np.testing.assert_array_equal(greedy, (logits > 0).astype(np.int32))
    env_greedy = head.to_env(greedy).numpy()
    _assert_in_space(space, env_greedy)
    np.testing.assert_array_equal(env_greedy.reshape(B, -1), greedy)
    _assert_in_space(space, head.to_env(sample).numpy())

    parameters = head.parameters(params)
    assert set(parameters) == {"logits"}
    assert parameters["logits"].shape == (B, size)


# -------------------------------------------------------------------------------- Box


def _gaussian_log_prob(x, mean, std):
    return (-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)


def _gaussian_entropy(std):
    return (0.5 * np.log(2 * np.pi * np.e) + np.log(std)).sum(-1)


BOXES = [
    gym.spaces.Box(-1.0, 2.0, (3,), np.float32),
    gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
    gym.spaces.Box(np.array([-1.0, -np.inf], np.float32), np.array([1.0, 0.5], np.float32)),
    gym.spaces.Box(-0.5, 0.5, (2, 3), np.float32),
    gym.spaces.Box(-2.0, 2.0, (), np.float32),
]


@pytest.mark.parametrize("space", BOXES, ids=str)
def test_box_state_independent_std(space):
    d = int(np.prod(space.shape))
    head = make_head(space, state_dependent_std=False, init_log_std=-0.3)
    assert isinstance(head, heads.GaussianHead)
    assert head.param_size == d
    assert head.raw_shape == (d,)
    assert [tuple(v.shape) for v in head.trainable_variables] == [(d,)]
    np.testing.assert_allclose(head.log_std.numpy(), np.full(d, -0.3), rtol=1e-6)
    log_std = np.linspace(-1.0, 0.5, d).astype(np.float32)
    head.log_std.assign(log_std)

    params = _params(head)
    mean, std = params.numpy(), np.exp(log_std)[None, :]
    distribution, sample = _check_shapes(head, params)
    actions = np.random.default_rng(3).normal(size=(B, d)).astype(np.float32)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(),
                               _gaussian_log_prob(actions, mean, std), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(distribution.entropy().numpy(),
                               np.broadcast_to(_gaussian_entropy(std), (B,)), rtol=1e-5)

    parameters = head.parameters(params)
    assert set(parameters) == {"mean", "std"}
    np.testing.assert_allclose(parameters["mean"].numpy(), mean)
    np.testing.assert_allclose(parameters["std"].numpy(), np.broadcast_to(std, (B, d)), rtol=1e-6)

    np.testing.assert_array_equal(head.greedy(params).numpy(), mean)
    _check_clip(space, head, mean)
    _check_clip(space, head, sample.numpy())


def _check_clip(space, head, raw):
    env_actions = head.to_env(raw).numpy()
    _assert_in_space(space, env_actions)
    expected = np.clip(raw, space.low.reshape(-1), space.high.reshape(-1))
    np.testing.assert_allclose(env_actions.reshape(B, -1), expected, rtol=1e-6)


@pytest.mark.parametrize("space", BOXES[:2] + BOXES[3:4], ids=str)
def test_box_state_dependent_std(space):
    d = int(np.prod(space.shape))
    init_log_std = -0.5
    head = make_head(space, state_dependent_std=True, init_log_std=init_log_std)
    assert head.param_size == 2 * d
    assert head.raw_shape == (d,)
    assert head.trainable_variables == []
    # Some raw log-stds large enough to hit the [-5, 2] clip from above and below.
    params = _params(head, scale=4.0).numpy()
    params[0, d:] = 10.0
    params[1, d:] = -10.0
    params = tf.constant(params)
    mean = params.numpy()[:, :d]
    std = np.exp(np.clip(params.numpy()[:, d:] + init_log_std, -5.0, 2.0))
    distribution, sample = _check_shapes(head, params)
    actions = np.random.default_rng(4).normal(size=(B, d)).astype(np.float32)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(),
                               _gaussian_log_prob(actions, mean, std), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(distribution.entropy().numpy(), _gaussian_entropy(std),
                               rtol=1e-5, atol=1e-5)
    parameters = head.parameters(params)
    assert set(parameters) == {"mean", "std"}
    np.testing.assert_allclose(parameters["std"].numpy(), std, rtol=1e-5)
    np.testing.assert_array_equal(head.greedy(params).numpy(), mean)
    _check_clip(space, head, mean)
    _check_clip(space, head, sample.numpy())


def test_box_log_prob_gradient_is_textbook():
    """Clip mode trains a plain Gaussian: d log pi / d mean = (a - mu) / sigma^2."""
    head = make_head(gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
    head.log_std.assign([-0.5, 0.0, 0.3])
    params = _params(head)
    actions = tf.constant(np.random.default_rng(5).normal(size=(B, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = tf.reduce_sum(head.distribution(params).log_prob(actions))
    gradient = tape.gradient(log_prob, params).numpy()
    variance = np.exp(2 * np.array([-0.5, 0.0, 0.3]))
    np.testing.assert_allclose(gradient, (actions.numpy() - params.numpy()) / variance,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-1.0, 2.0, (3,), np.float32),
    gym.spaces.Box(np.array([0.0, -3.0], np.float32), np.array([0.5, 10.0], np.float32)),
    gym.spaces.Box(-0.5, 0.5, (2, 2), np.float32),
    # float32 rounding of low + (high - low) overshoots high by one ulp for these bounds.
    gym.spaces.Box(np.float32(-1.9460663), np.float32(-0.6168472), (1,), np.float32),
], ids=str)
def test_box_tanh_maps_the_real_line_into_the_bounds(space):
    d = int(np.prod(space.shape))
    low, high = space.low.reshape(-1), space.high.reshape(-1)
    head = make_head(space, action_bounds="tanh")
    raw = np.array([[-1e6] * d, [-30.0] * d, [-1.0] * d, [0.0] * d, [1.0] * d, [1e6] * d],
                   np.float32)
    env_actions = head.to_env(raw).numpy()
    _assert_in_space(space, env_actions)
    flat = env_actions.reshape(B, d)
    expected = low + (np.tanh(raw.astype(np.float64)) + 1) / 2 * (high - low)
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-6)
    # The saturated ends reach the bounds, and the squash is increasing in between.
    np.testing.assert_allclose(flat[0], low, rtol=1e-6)
    np.testing.assert_allclose(flat[-1], high, rtol=1e-6)
    assert np.all(np.diff(flat, axis=0) >= 0)
    assert np.all(flat[2] < flat[4])
    # Samples from a wide distribution land inside too.
    params = _params(head, scale=20.0)
    _assert_in_space(space, head.to_env(head.distribution(params).sample(seed=SEED)).numpy())


def test_box_float64_bounds_not_representable_in_float32():
    """Actions stay inside a float64 Box whose bounds float32 rounds outward (0.1, 0.7)."""
    space = gym.spaces.Box(np.array([0.1, -0.3]), np.array([0.7, 0.3]), dtype=np.float64)
    raw = np.tile(np.array([[100.0, -100.0], [-100.0, 100.0]], np.float32), (B // 2, 1))
    for bounds in ("clip", "tanh"):
        env_actions = make_head(space, action_bounds=bounds).to_env(raw).numpy()
        _assert_in_space(space, env_actions)
        np.testing.assert_allclose(env_actions[:2], [[0.7, -0.3], [0.1, 0.3]], rtol=1e-6)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("space, name", [
    (gym.spaces.Dict({"a": gym.spaces.Discrete(2)}), "Dict"),
    (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))), "Tuple"),
    (gym.spaces.Text(8), "Text"),
    (gym.spaces.Box(0, 10, (2,), np.int64), "Box(0, 10, (2,), int64)"),
], ids=["Dict", "Tuple", "Text", "Box-int"])
def test_unsupported_spaces(space, name):
    with pytest.raises(ValueError) as error:
        make_head(space)
    message = str(error.value)
    assert name in message
    for supported in heads.SUPPORTED_SPACES:
        assert supported in message


@pytest.mark.parametrize("space, options", [
    (gym.spaces.Discrete(3, start=1), {}),
    (gym.spaces.MultiDiscrete([[2, 4]], start=[[0, -1]]), {}),
    (gym.spaces.MultiBinary(3), {}),
    (gym.spaces.Box(-2.0, 2.0, (2,), np.float32), dict(init_log_std=-0.5, action_bounds="tanh")),
    (gym.spaces.Box(-1.0, 1.0, (2,), np.float64), dict(state_dependent_std=True)),
], ids=str)
def test_a_head_is_a_keras_layer_of_its_parameters_that_round_trips(space, options, tmp_path):
    import keras
    head = make_head(space, **options)
    params = _params(head)
    if isinstance(head, heads.GaussianHead) and not head.state_dependent_std:
        head.log_std.assign([0.3, -0.7])
    expected = {k: v.numpy() for k, v in head.parameters(params).items()}
    inputs = keras.Input((head.param_size,))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "head.keras")
    loaded = keras.models.load_model(tmp_path / "head.keras")
    clone = type(head).from_config(head.get_config())
    assert clone.space == space and clone.param_size == head.param_size
    for outputs in (model(params), loaded(params)):
        assert sorted(outputs) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(outputs[key], expected[key])


def test_tanh_needs_finite_bounds():
    space = gym.spaces.Box(np.array([-1.0, -np.inf], np.float32),
                           np.array([1.0, np.inf], np.float32))
    with pytest.raises(ValueError, match="tanh.*finite"):
        make_head(space, action_bounds="tanh")
    # Clip mode is fine with the same space.
    assert make_head(space, action_bounds="clip").param_size == 2


def test_unknown_action_bounds():
    with pytest.raises(ValueError, match="squash"):
        make_head(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), action_bounds="squash")


def test_heads_work_inside_tf_function():
    """The learner and the exported policy call heads from a traced graph."""
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    head = make_head(space, action_bounds="tanh")

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def act(params):
        distribution = head.distribution(params)
        raw = distribution.sample(seed=SEED)
        return head.to_env(raw), distribution.log_prob(raw), head.to_env(head.greedy(params))

    env_actions, log_prob, greedy = act(_params(head))
    _assert_in_space(space, env_actions.numpy())
    _assert_in_space(space, greedy.numpy())
    assert log_prob.shape == (B,)
    assert math.isfinite(float(tf.reduce_sum(log_prob)))


# ----------------------------------------------------- portable sampling (the export's)
#
# The exported policy samples with head.portable_sample (hashed noise; ops TFLite and
# ONNX run). Its draws must follow the law of head.distribution, across the rows of one
# call and across seeds, and head.portable_log_prob must be the distribution's log_prob.

DRAWS = 20000
CHI2_Z = 3.09  # one-sided 0.1% level: a correct sampler fails one run in a thousand


def _chi2_critical(dof):
    """The chi-square quantile at the CHI2_Z level (Wilson-Hilferty)."""
    return dof * (1.0 - 2.0 / (9.0 * dof) + CHI2_Z * math.sqrt(2.0 / (9.0 * dof))) ** 3


def _assert_chi2(counts, probs):
    counts = np.asarray(counts, float)
    expected = np.asarray(probs, float) * counts.sum()
    assert expected.min() >= 5, "too few expected draws for the chi-square test"
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < _chi2_critical(len(counts) - 1), (statistic, counts, expected)


def _assert_uniform_ks(u):
    """Kolmogorov-Smirnov: ``u`` (a probability integral transform) is uniform."""
    u = np.sort(np.asarray(u, float).ravel())
    n = len(u)
    statistic = max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n))
    assert statistic < 1.95 / math.sqrt(n), statistic  # the 0.1% critical value


def _joint_outcomes(raw, nvec):
    """Each row of sub-actions as one index of the product space."""
    index = np.zeros(len(raw), np.int64)
    for k, n in enumerate(nvec):
        index = index * n + raw[:, k]
    return index


def _outcome_probs(head, row, nvec):
    """The TFP distribution's probability of every raw action (rows of the product space)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in nvec], indexing="ij"), -1)
    outcomes = grid.reshape((-1,) + tuple(head.raw_shape)).astype(np.int32)
    log_prob = head.distribution(tf.tile(row, [len(outcomes), 1])).log_prob(outcomes)
    return np.exp(log_prob.numpy())


DISCRETE_HEADS = {
    "discrete": (gym.spaces.Discrete(5), [5]),
    "multi_discrete": (gym.spaces.MultiDiscrete([3, 2, 4]), [3, 2, 4]),
    "multi_binary": (gym.spaces.MultiBinary(3), [2, 2, 2]),
}


def _one_row(head, scale=1.0):
    return tf.constant(np.random.default_rng(1).normal(scale=scale, size=(1, head.param_size)),
                       tf.float32)


@pytest.mark.parametrize("name", list(DISCRETE_HEADS))
def test_portable_samples_follow_the_law_across_rows_and_across_seeds(name):
    space, nvec = DISCRETE_HEADS[name]
    head = make_head(space)
    row = _one_row(head)
    probs = _outcome_probs(head, row, nvec)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    draw = tf.function(head.portable_sample)
    across_rows = draw(tf.tile(row, [DRAWS, 1]), tf.constant([11, 5])).numpy()
    seeds = tf.stack([tf.range(2000), tf.fill([2000], 9)], axis=1)
    across_seeds = tf.function(lambda: tf.map_fn(
        lambda seed: draw(row, seed)[0], seeds,
        fn_output_signature=tf.TensorSpec(head.raw_shape, tf.int32)))().numpy()
    for raw in (across_rows, across_seeds):
        raw = raw.reshape(len(raw), -1)
        counts = np.bincount(_joint_outcomes(raw, nvec), minlength=int(np.prod(nvec)))
        _assert_chi2(counts, probs)


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_portable_gaussian_samples_follow_the_law(state_dependent_std):
    space = gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
    head = make_head(space, state_dependent_std=state_dependent_std)
    if not state_dependent_std:
        head.log_std.assign([-1.0, 0.0, 0.5])
    params = tf.tile(_one_row(head), [DRAWS, 1])
    raw = head.portable_sample(params, tf.constant([2, 3]))
    # Each dimension against the TFP distribution's own CDF, and no correlation between
    # dimensions (a dependence in the noise would show there).
    distribution = head.distribution(params)
    marginals = tfp.distributions.Normal(distribution.mean(), distribution.stddev())
    _assert_uniform_ks(marginals.cdf(raw).numpy())
    z = ((raw - distribution.mean()) / distribution.stddev()).numpy()
    correlation = np.corrcoef(z.T)[np.triu_indices(3, 1)]
    assert np.abs(correlation).max() < 4.0 / math.sqrt(DRAWS), correlation


@pytest.mark.parametrize("space", [
    gym.spaces.Discrete(4, start=2), gym.spaces.MultiDiscrete([3, 2, 4]),
    gym.spaces.MultiBinary(5), gym.spaces.Box(-1.0, 1.0, (3,), np.float32)], ids=str)
def test_portable_log_prob_is_the_distributions(space):
    head = make_head(space)
    if isinstance(head, heads.GaussianHead):
        head.log_std.assign([-0.5, 0.0, 0.7])
    params = _params(head, scale=3.0)
    raw = head.portable_sample(params, tf.constant([4, 1]))
    assert raw.dtype == head.raw_dtype and tuple(raw.shape) == (B,) + tuple(head.raw_shape)
    np.testing.assert_allclose(head.portable_log_prob(params, raw).numpy(),
                               head.distribution(params).log_prob(raw).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_portable_samples_are_set_by_the_seed():
    head = make_head(gym.spaces.Box(-1.0, 1.0, (4,), np.float32))
    params = _params(head)
    first = head.portable_sample(params, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(head.portable_sample(params, tf.constant([1, 2])), first)
    for other in ([2, 2], [1, 3], [-1, 2]):
        assert not np.allclose(head.portable_sample(params, tf.constant(other)), first)


# ----------------------------------------------------------------------- action masks
#
# A mask sets illegal logits to the lowest float: every sampler, the greedy action, the
# log-probability and the entropy are those of the Categorical over the legal actions.

MASK_DRAWS = 10000
MASKED_HEADS = {
    # space, one row of logits, one mask row (flat, as the env gives it)
    "discrete": (gym.spaces.Discrete(5, start=1), [[0.3, 2.5, -0.4, 1.0, 0.1]],
                 [[True, False, True, True, False]]),
    "multi_discrete": (gym.spaces.MultiDiscrete([3, 2, 4]),
                       [[1.5, -0.2, 0.4, 0.0, 3.0, 2.0, -1.0, 0.5, 0.7]],
                       [[0, 1, 1, 1, 1, 1, 0, 1, 0]]),  # int8 0/1, like Taxi's
}


def _segments(space):
    nvec = np.asarray(getattr(space, "nvec", [getattr(space, "n", 0)])).reshape(-1)
    bounds = np.concatenate([[0], np.cumsum(nvec)])
    return [slice(bounds[k], bounds[k + 1]) for k in range(len(nvec))]


def _renormalized(space, logits, mask):
    """Per sub-action: the probabilities over its choices, zero where masked."""
    logits, mask = np.asarray(logits, float)[0], np.asarray(mask, bool)[0]
    probs = []
    for cut in _segments(space):
        p = np.where(mask[cut], np.exp(logits[cut] - logits[cut][mask[cut]].max()), 0.0)
        probs.append(p / p.sum())
    return probs


def _legal_outcome_probs(space, logits, mask):
    """The joint law over the product of the sub-actions (illegal outcomes at 0)."""
    joint = np.ones(1)
    for p in _renormalized(space, logits, mask):
        joint = np.outer(joint, p).ravel()
    return joint


@pytest.mark.parametrize("name", list(MASKED_HEADS))
def test_masked_actions_are_never_sampled_and_the_legal_follow_the_renormalized_law(name):
    space, logits, mask = MASKED_HEADS[name]
    head = make_head(space)
    nvec = [s.stop - s.start for s in _segments(space)]
    params = tf.tile(tf.constant(logits, tf.float32), [MASK_DRAWS, 1])
    masks = np.tile(np.asarray(mask), (MASK_DRAWS, 1))
    draws = {
        "tfp": head.distribution(params, masks).sample(seed=SEED).numpy(),
        "portable": head.portable_sample(params, tf.constant([5, 8]), masks).numpy(),
        "numpy": head_sampler(head)(params.numpy(), np.random.default_rng(3), masks)[0],
    }
    law = _legal_outcome_probs(space, logits, mask)
    for sampler, raw in draws.items():
        outcomes = _joint_outcomes(raw.reshape(MASK_DRAWS, -1), nvec)
        counts = np.bincount(outcomes, minlength=len(law))
        assert counts[law == 0].sum() == 0, (sampler, counts)
        _assert_chi2(counts[law > 0], law[law > 0])


@pytest.mark.parametrize("name", list(MASKED_HEADS))
def test_masked_log_prob_entropy_and_greedy_are_the_renormalized_distributions(name):
    space, logits, mask = MASKED_HEADS[name]
    head = make_head(space)
    params = tf.constant(logits, tf.float32)
    probs = _renormalized(space, logits, mask)
    legal = [np.flatnonzero(p > 0) for p in probs]
    # Every legal action (each sub-action's legal choices paired cyclically).
    width = max(len(choices) for choices in legal)
    actions = np.stack([choices[np.arange(width) % len(choices)] for choices in legal], -1)
    actions = actions.reshape((width,) + tuple(head.raw_shape)).astype(np.int32)
    rows = tf.tile(params, [width, 1])
    masks = np.tile(np.asarray(mask), (width, 1))
    expected = sum(np.log(p[actions.reshape(width, -1)[:, k]]) for k, p in enumerate(probs))
    distribution = head.distribution(rows, masks)
    np.testing.assert_allclose(distribution.log_prob(actions).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(head.portable_log_prob(rows, actions, masks).numpy(), expected,
                               rtol=1e-5)
    entropy = sum(-(p[p > 0] * np.log(p[p > 0])).sum() for p in probs)
    np.testing.assert_allclose(distribution.entropy().numpy(), entropy, rtol=1e-5)
    # The unmasked best action is illegal in both spaces; greedy takes the best legal one.
    greedy = head.greedy(params, np.asarray(mask)).numpy().reshape(-1)
    np.testing.assert_array_equal(greedy, [p.argmax() for p in probs])
    assert not np.array_equal(greedy, head.greedy(params).numpy().reshape(-1))


@pytest.mark.parametrize("space", [gym.spaces.Discrete(4), gym.spaces.MultiDiscrete([3, 4])],
                         ids=str)
def test_one_legal_action_has_probability_one_finite_gradient_and_no_nan(space):
    head = make_head(space)
    params = tf.constant(np.random.default_rng(0).normal(scale=50.0, size=(B, head.param_size)),
                         tf.float32)
    mask = np.zeros((B, head.param_size), bool)
    chosen = []
    for row, cut in ((r, c) for r in range(B) for c in _segments(space)):
        legal = cut.start + (row + cut.start) % (cut.stop - cut.start)
        mask[row, legal] = True
        chosen.append(legal - cut.start)
    actions = np.asarray(chosen, np.int32).reshape((B,) + tuple(head.raw_shape))
    with tf.GradientTape() as tape:
        tape.watch(params)
        distribution = head.distribution(params, mask)
        log_prob, entropy = distribution.log_prob(actions), distribution.entropy()
        total = tf.reduce_sum(log_prob) + tf.reduce_sum(entropy)
    gradient = tape.gradient(total, params).numpy()
    np.testing.assert_allclose(log_prob.numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(entropy.numpy(), 0.0, atol=1e-6)
    assert np.all(np.isfinite(gradient)) and np.all(gradient[~mask] == 0.0)
    for values in (head.parameters(params, mask)["logits"], head.greedy(params, mask),
                   distribution.sample(seed=SEED), head.portable_sample(params, SEED, mask)):
        assert not np.any(np.isnan(values.numpy()))
    np.testing.assert_array_equal(head.greedy(params, mask).numpy(), actions)
    np.testing.assert_array_equal(head.portable_sample(params, SEED, mask).numpy(), actions)


@pytest.mark.parametrize("space, bad_row", [
    (gym.spaces.Discrete(3), [0, 0, 0]),
    (gym.spaces.MultiDiscrete([2, 3]), [1, 0, 0, 0, 0]),  # the second sub-action: none
], ids=str)
def test_a_row_allowing_no_action_is_refused(space, bad_row):
    head = make_head(space)
    params = tf.zeros((3, head.param_size))
    mask = np.ones((3, head.param_size), bool)
    mask[2] = bad_row
    with pytest.raises(InputError, match="action mask allows no action in row 2"):
        head.distribution(params, mask)
    with pytest.raises(InputError, match="action mask allows no action in row 2"):
        head_sampler(head)(params.numpy(), np.random.default_rng(0), mask)
    graph = tf.function(lambda p, m: head.portable_sample(p, SEED, m))
    with pytest.raises(tf.errors.InvalidArgumentError, match="action mask allows no action"):
        graph(params, tf.constant(mask))
    np.testing.assert_array_equal(graph(params[:2], tf.constant(mask[:2])).shape[0], 2)


def test_a_mask_of_the_wrong_shape_or_for_another_head_is_refused():
    head = make_head(gym.spaces.Discrete(3))
    with pytest.raises(InputError, match=r"shape \[B, 3\] \(B = 2\).*received shape \[2, 4\]"):
        head.greedy(tf.zeros((2, 3)), np.ones((2, 4), bool))
    with pytest.raises(InputError, match=r"received shape \[2, 4\]"):
        head_sampler(head)(np.zeros((2, 3), np.float32), np.random.default_rng(0),
                             np.ones((2, 4), bool))
    with pytest.raises(InputError, match=r"received shape \[None, 4\]"):
        tf.function(lambda p, m: head.greedy(p, m), autograph=False).get_concrete_function(
            tf.TensorSpec([None, 3]), tf.TensorSpec([None, 4], tf.bool))
    for space in (gym.spaces.MultiBinary(2), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)):
        other = make_head(space)
        with pytest.raises(InputError, match="action masks apply to Discrete and MultiDiscrete"):
            other.distribution(tf.zeros((2, other.param_size)), np.ones((2, 2), bool))
        with pytest.raises(InputError, match="action masks apply to Discrete and MultiDiscrete"):
            head_sampler(other)(np.zeros((2, other.param_size), np.float32),
                                  np.random.default_rng(0), np.ones((2, 2), bool))


def test_taxis_info_mask_reaches_the_head_and_is_obeyed():
    envs = gym.make_vec("Taxi-v4", num_envs=3, vectorization_mode="sync")
    _, info = envs.reset(seed=0)
    head = make_head(envs.single_action_space)
    rng = np.random.default_rng(0)
    sample = head_sampler(head)
    for _ in range(50):
        mask = info_action_mask(info, 3, head.mask_size)
        assert mask.dtype == bool and mask.shape == (3, 6)
        raw, action = sample(np.zeros((3, 6), np.float32), rng, mask)
        assert np.all(mask[np.arange(3), raw])
        _, _, _, _, info = envs.step(action)
    assert info_action_mask({}, 3, 6) is None
    partial = {"action_mask": np.zeros((2, 6), np.int8), "_action_mask": np.array([True, False])}
    partial["action_mask"][0, 4] = 1
    np.testing.assert_array_equal(info_action_mask(partial, 2, 6),
                                  [[0, 0, 0, 0, 1, 0], [1] * 6])
    with pytest.raises(InputError, match=r"info\['action_mask'\] must hold a mask of shape "
                                         r"\[2, 4\].*received shape \[2, 6\]"):
        info_action_mask(partial, 2, 4)
