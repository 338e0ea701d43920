"""Tests of pg_keras.networks: the default MLP, observation encoding and the model contract."""

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

from pg_keras import networks, spaces


def _weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


# -------------------------------------------------------------------------------- mlp


@pytest.mark.parametrize("input_shape, flattens", [((4,), False), ((6, 5, 3), True)], ids=str)
def test_mlp_output_shape(input_shape, flattens):
    model = networks.mlp(input_shape, 3, hidden_sizes=(16, 8))
    x = np.random.default_rng(0).normal(size=(5,) + input_shape).astype(np.float32)
    output = model(x)
    assert tuple(output.shape) == (5, 3)
    assert output.dtype == tf.float32
    assert any(isinstance(layer, keras.layers.Flatten) for layer in model.layers) == flattens
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [16, 8, 3]
    assert dense[0].kernel.shape == (int(np.prod(input_shape)), 16)


def test_mlp_layers_activation_and_initialization():
    model = networks.mlp((4,), 3, hidden_sizes=(16, 8), activation="relu", output_gain=0.01)
    hidden = [model.get_layer("hidden_0"), model.get_layer("hidden_1")]
    output = model.get_layer("output")
    assert all(layer.activation is keras.activations.relu for layer in hidden)
    assert output.activation is keras.activations.linear
    # Orthogonal kernels with gain g: the (fewer) columns are orthogonal with norm g.
    for layer, gain in [(hidden[1], np.sqrt(2.0)), (output, 0.01)]:
        kernel = layer.kernel.numpy()
        np.testing.assert_allclose(kernel.T @ kernel, gain ** 2 * np.eye(kernel.shape[1]),
                                   atol=1e-5)
    for layer in hidden + [output]:
        np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_mlp_without_hidden_layers_is_linear():
    model = networks.mlp((4,), 2, hidden_sizes=())
    assert [type(layer) for layer in model.layers] == [keras.layers.Dense]
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x).numpy(), x @ model.get_layer("output").kernel.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_mlp_seed_fixes_initial_weights():
    a = networks.mlp((4,), 3, seed=7)
    b = networks.mlp((4,), 3, seed=7)
    c = networks.mlp((4,), 3, seed=8)
    assert _weights_equal(a, b)
    kernels = lambda m: [w for w in m.get_weights() if w.ndim == 2]  # noqa: E731
    assert all(not np.array_equal(x, y) for x, y in zip(kernels(a), kernels(c)))


def test_mlp_get_config_round_trip():
    model = networks.mlp((6, 5, 3), 4, hidden_sizes=(32, 16), activation="elu", seed=3,
                         name="torso")
    clone = keras.Sequential.from_config(model.get_config())
    assert clone.name == "torso"
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    assert [layer.get_config() for layer in clone.layers] == [
        layer.get_config() for layer in model.layers]
    # The seeded initializers are part of the config, so the clone starts from the same weights.
    assert _weights_equal(model, clone)
    x = np.random.default_rng(2).normal(size=(2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-6)


# ------------------------------------------------------------------ observation spaces


@pytest.mark.parametrize("space, shape", [
    (gym.spaces.Box(-1.0, 1.0, (4,), np.float32), (4,)),
    (gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), (8, 8, 3)),
    (gym.spaces.Discrete(5), (5,)),
    (gym.spaces.Discrete(4, start=2), (4,)),
], ids=str)
def test_observation_shape(space, shape):
    assert spaces.encoded_shape(space) == shape
    encoded = spaces.encode(space, np.stack([space.sample() for _ in range(3)]))
    assert tuple(encoded.shape) == (3,) + shape
    assert encoded.dtype == tf.float32


def test_encode_discrete_is_one_hot_with_start_offset():
    space = gym.spaces.Discrete(4, start=2)
    encoded = spaces.encode(space, np.array([2, 5, 3], np.int64))
    np.testing.assert_array_equal(encoded.numpy(), [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]])


def test_encode_box_casts_to_float32():
    space = gym.spaces.Box(-10.0, 10.0, (2,), np.float64)
    observations = np.array([[0.25, -3.5], [9.0, 1e-3]], np.float64)
    encoded = spaces.encode(space, observations)
    assert encoded.dtype == tf.float32
    np.testing.assert_allclose(encoded.numpy(), observations, rtol=1e-6)


@pytest.mark.parametrize("space, name", [
    (gym.spaces.Dict({"position": gym.spaces.Text(4)}), "Text"),
    (gym.spaces.Sequence(gym.spaces.Discrete(2)), "Sequence"),
], ids=["Dict-of-Text", "Sequence"])
def test_unsupported_observation_space(space, name):
    with pytest.raises(ValueError) as error:
        spaces.encoded_shape(space)
    message = str(error.value)
    assert name in message
    for supported in networks.SUPPORTED_OBSERVATION_SPACES:
        assert supported in message


# ------------------------------------------------------------------------ resolve_model


def _dense(units, input_dim=4):
    return keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(units)])


def test_resolve_model_returns_a_valid_model():
    model = _dense(3)
    assert networks.resolve_model(model, (4,), 3, "policy") is model


def test_resolve_model_builds_an_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(3)])
    assert networks.resolve_model(model, (4,), 3, "policy") is model
    assert model.built and model.layers[0].kernel.shape == (4, 3)


def test_resolve_model_calls_a_factory_with_the_sizes():
    calls = []

    def factory(observation_shape, output_units):
        calls.append((observation_shape, output_units))
        return networks.mlp(observation_shape, output_units, hidden_sizes=(8,))

    model = networks.resolve_model(factory, (6, 5, 3), 2, "policy")
    assert calls == [((6, 5, 3), 2)]
    assert isinstance(model, keras.Model)
    assert tuple(model(np.zeros((1, 6, 5, 3), np.float32)).shape) == (1, 2)


@pytest.mark.parametrize("units", [1, None], ids=["B,1", "B"])
def test_resolve_model_value_accepts_b_and_b1(units):
    inputs = keras.Input((4,))
    output = keras.layers.Dense(1)(inputs)
    if units is None:
        output = keras.layers.Reshape(())(output)
    model = keras.Model(inputs, output)
    assert networks.resolve_model(model, (4,), 1, "value") is model


def test_resolve_model_wrong_width_names_both_shapes():
    with pytest.raises(ValueError) as error:
        networks.resolve_model(_dense(4), (4,), 3, "policy")
    message = str(error.value)
    assert "policy_network" in message
    assert "[B, 3]" in message  # expected
    assert "[B, 4]" in message  # received


def test_resolve_model_value_wrong_width():
    with pytest.raises(ValueError) as error:
        networks.resolve_model(_dense(2), (4,), 1, "value")
    message = str(error.value)
    assert "value_network" in message
    assert "[B]" in message and "[B, 1]" in message and "[B, 2]" in message


def test_resolve_model_factory_with_wrong_width():
    with pytest.raises(ValueError, match=r"received output shape \[B, 5\]"):
        networks.resolve_model(lambda shape, units: _dense(units + 3, shape[0]), (4,), 2,
                               "policy")


@pytest.mark.parametrize("model", [42, "mlp", None], ids=repr)
def test_resolve_model_rejects_non_models(model):
    with pytest.raises(ValueError) as error:
        networks.resolve_model(model, (4,), 2, "policy")
    message = str(error.value)
    assert "keras.Model" in message and "factory" in message
    assert repr(model) in message


def test_resolve_model_rejects_a_factory_returning_a_non_model():
    with pytest.raises(ValueError, match="factory must return a keras.Model; received int"):
        networks.resolve_model(lambda shape, units: 3, (4,), 2, "policy")


def test_resolve_model_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"must accept float32 inputs of shape \[B, 4\]"):
        networks.resolve_model(_dense(2, input_dim=5), (4,), 2, "policy")


def test_resolve_model_rejects_multiple_outputs():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(1)(inputs)])
    with pytest.raises(ValueError, match=r"one tensor of shape \[B, 2\]; received list"):
        networks.resolve_model(model, (4,), 2, "policy")
