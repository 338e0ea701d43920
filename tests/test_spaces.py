"""Tests of pg_keras.spaces: the one dispatch on observation spaces."""

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

from pg_keras import networks, spaces
from pg_keras.config import InputError

BOX = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
IMAGE = gym.spaces.Box(0, 255, (12, 12, 3), np.uint8)


# ------------------------------------------------------------------------ leaf spaces


@pytest.mark.parametrize("space, dtype, serving, encoded, normalized, image", [
    (BOX, tf.float32, tf.float32, (3,), True, False),
    (gym.spaces.Box(0, 10, (2,), np.int64), tf.float32, tf.int64, (2,), True, False),
    (IMAGE, tf.float32, tf.uint8, (12, 12, 3), False, True),
    (gym.spaces.Box(0, 255, (4, 10, 10), np.uint8), tf.float32, tf.uint8, (4, 10, 10), False,
     True),
    (gym.spaces.Discrete(5, start=2), tf.int32, tf.int32, (5,), False, False),
    (gym.spaces.MultiDiscrete([3, 2, 4]), tf.int32, tf.int32, (9,), False, False),
    (gym.spaces.MultiBinary(4), tf.int32, tf.int32, (4,), False, False),
], ids=str)
def test_leaf_spaces(space, dtype, serving, encoded, normalized, image):
    assert spaces.observation_dtype(space) == dtype
    assert spaces.serving_dtype(space) == serving
    assert spaces.encoded_shape(space) == encoded
    assert spaces.normalizes(space) is normalized
    assert spaces.is_image(space) is image
    assert spaces.tensor_spec(space, (5, 2)) == tf.TensorSpec((5, 2) + space.shape, dtype)
    batch = np.stack([space.sample() for _ in range(4)])
    features = spaces.encode(space, tf.constant(batch.astype(dtype.as_numpy_dtype)))
    assert features.dtype == tf.float32 and tuple(features.shape) == (4,) + encoded


@pytest.mark.parametrize("shape, dtype, layout", [
    ((16, 16, 3), np.uint8, "channels_last"), ((84, 84, 1), np.uint8, "channels_last"),
    ((4, 84, 84), np.uint8, "channels_first"), ((3, 16, 3), np.uint8, "channels_last"),
    ((7, 7, 4), np.int64, "channels_last"), ((16, 16, 3), np.float32, None),
    ((16, 16, 5), np.uint8, None), ((16, 16), np.uint8, None), ((2, 16, 16, 3), np.uint8, None),
], ids=str)
def test_image_detection(shape, dtype, layout):
    high = 1.0 if np.issubdtype(dtype, np.floating) else 255
    assert spaces.image_layout(gym.spaces.Box(0, high, shape, dtype)) == layout


def test_discrete_is_one_hot_with_start():
    encoded = spaces.encode(gym.spaces.Discrete(4, start=2), np.array([2, 5, 3]))
    np.testing.assert_array_equal(encoded.numpy(), np.eye(4)[[0, 3, 1]])


def test_multi_discrete_is_joined_one_hots_with_start():
    space = gym.spaces.MultiDiscrete(np.array([[3, 2], [4, 2]]), start=np.array([[1, 0], [-2, 5]]))
    observations = np.array([[[1, 1], [-2, 6]], [[3, 0], [1, 5]]])
    expected = []
    for row in observations.reshape(2, -1):
        index = row - space.start.reshape(-1)
        expected.append(np.concatenate([np.eye(n)[i] for n, i in zip(space.nvec.ravel(), index)]))
    np.testing.assert_array_equal(spaces.encode(space, observations).numpy(), expected)
    # An entry outside its range lights no slot (a neighbour's slot least of all).
    outside = spaces.encode(gym.spaces.MultiDiscrete([2, 3]), np.array([[2, 0]])).numpy()
    np.testing.assert_array_equal(outside, [[0, 0, 1, 0, 0]])


def test_multi_binary_and_box_are_cast():
    bits = np.array([[1, 0, 1], [0, 0, 1]], np.int8)
    np.testing.assert_array_equal(spaces.encode(gym.spaces.MultiBinary(3), bits).numpy(), bits)
    values = np.array([[0.25, -3.5]], np.float64)
    encoded = spaces.encode(gym.spaces.Box(-10.0, 10.0, (2,), np.float64), values)
    assert encoded.dtype == tf.float32
    np.testing.assert_allclose(encoded.numpy(), values)


@pytest.mark.parametrize("space, needle", [
    (gym.spaces.Text(4), "Text(1, 4"),
    (gym.spaces.Dict({"a": BOX, "b": gym.spaces.Tuple((gym.spaces.Text(3),))}),
     "at observation key 'b/0'"),
    (gym.spaces.Box(0, 1, (2,), np.bool_), "bool"),
    (gym.spaces.Dict({}), "no entries"),
    (gym.spaces.Graph(BOX, None), "Graph"),
], ids=["Text", "nested-Text", "Box-bool", "empty-Dict", "Graph"])
def test_unsupported_spaces_are_refused_in_one_line(space, needle):
    with pytest.raises(InputError) as error:
        spaces.check(space)
    message = str(error.value)
    assert needle in message and "\n" not in message
    assert message.startswith("unsupported observation space")


# ------------------------------------------------------------------------ nested spaces

NESTED = gym.spaces.Dict({
    "a": gym.spaces.Tuple((gym.spaces.Discrete(3), BOX)),
    "b": gym.spaces.Dict({"c": gym.spaces.MultiBinary(2), "image": IMAGE}),
})


def test_leaf_names_and_input_names():
    assert list(spaces.leaves(NESTED)) == ["a/0", "a/1", "b/c", "b/image"]
    assert [spaces.input_name(n) for n in spaces.leaves(NESTED)] == [
        "a_0", "a_1", "b_c", "b_image"]
    top = gym.spaces.Tuple((BOX, gym.spaces.Discrete(2)))
    assert list(spaces.leaves(top)) == ["0", "1"]
    assert [spaces.input_name(n) for n in spaces.leaves(top)] == ["arg_0", "arg_1"]
    assert spaces.encoded_shape(NESTED) == {"a/0": (3,), "a/1": (3,), "b/c": (2,),
                                            "b/image": (12, 12, 3)}
    assert spaces.normalizes(NESTED) == {"a/0": False, "a/1": True, "b/c": False,
                                         "b/image": False}
    assert spaces.observation_dtype(NESTED)["b/image"] == tf.float32
    assert spaces.serving_dtype(NESTED)["b/image"] == tf.uint8


def test_colliding_input_names_are_refused():
    space = gym.spaces.Dict({"a_b": BOX, "a": gym.spaces.Dict({"b": BOX})})
    with pytest.raises(InputError, match="'a/b' and 'a_b' both become the input name 'a_b'"):
        spaces.leaves(space)


def _batched(space, n, seed=0):
    """A vector env's batch of nested observations: the nest with stacked leaves."""
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    return gym.vector.utils.concatenate(
        space, samples, gym.vector.utils.create_empty_array(space, n))


def test_flatten_and_encode_a_vector_envs_nested_batch():
    batch = _batched(NESTED, 5)
    flat = spaces.flatten(NESTED, batch)
    assert list(flat) == list(spaces.leaves(NESTED))
    np.testing.assert_array_equal(flat["a/0"], batch["a"][0])
    np.testing.assert_array_equal(flat["b/image"], batch["b"]["image"])
    assert spaces.flatten(NESTED, flat) is not None  # a flat dict passes as is
    encoded = spaces.encode(NESTED, batch)
    np.testing.assert_array_equal(encoded["a/0"].numpy(), np.eye(3)[batch["a"][0]])
    np.testing.assert_array_equal(encoded["b/image"].numpy(), batch["b"]["image"])
    for name, spec in spaces.tensor_spec(NESTED, (5,)).items():
        assert spec.is_compatible_with(tf.constant(flat[name].astype(spec.dtype.as_numpy_dtype)))


def test_flatten_names_a_missing_key():
    with pytest.raises(InputError, match="no entry 'b/c'.*keys \\['a'\\]"):
        spaces.flatten(NESTED, {"a": (np.zeros(2), np.zeros((2, 3)))})


# ------------------------------------------------------------------------------ torsos


@pytest.mark.parametrize("size, layout", [
    ((84, 84), [(32, 8, 4), (64, 4, 2), (64, 3, 1)]),
    ((64, 64), [(32, 8, 4), (64, 4, 2), (64, 3, 1)]),
    ((16, 16), [(32, 8, 4), (64, 3, 1), (64, 1, 1)]),
    ((7, 7), [(32, 7, 1), (64, 1, 1), (64, 1, 1)]),
], ids=str)
def test_conv_layout_is_natures_cut_to_the_image(size, layout):
    assert networks.conv_layout(*size) == layout


def test_cnn_torso_scales_to_the_unit_range_inside():
    torso = networks.default_torso(IMAGE)
    assert tuple(torso.output.shape) == (None, 512)
    scale = keras.Model(torso.input, torso.get_layer("to_unit_range").output)
    x = np.random.default_rng(0).integers(0, 256, (2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(scale(x).numpy(), x / 255.0, rtol=1e-6)
    assert [layer.kernel.shape[:2] for layer in torso.layers
            if isinstance(layer, keras.layers.Conv2D)] == [(8, 8), (2, 2), (1, 1)]


def test_channels_first_image_is_the_same_torso_transposed():
    last = networks.default_torso(IMAGE, seed=3)
    first = networks.default_torso(gym.spaces.Box(0, 255, (3, 12, 12), np.uint8), seed=3)
    x = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(first(np.transpose(x, (0, 3, 1, 2))).numpy(), last(x).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_nested_torso_has_a_named_input_per_leaf_and_reads_every_leaf():
    torso = networks.default_torso(NESTED, hidden_sizes=(16,))
    assert sorted(t.name for t in torso.inputs) == ["a_0", "a_1", "b_c", "b_image"]
    features = spaces.encode(NESTED, _batched(NESTED, 2))
    base = torso(features).numpy()
    assert base.shape == (2, 16)
    for name in features:
        changed = dict(features, **{name: features[name] + 1.0})
        assert not np.allclose(torso(changed).numpy(), base), name


def test_default_network_for_each_kind_of_space():
    vector = networks.default_network(BOX, 2, seed=1)
    assert isinstance(vector, keras.Sequential)
    reference = networks.mlp((3,), 2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(vector.get_weights(), reference.get_weights()))
    for space in (IMAGE, NESTED):
        model = networks.resolve_model(networks.default_network(space, 4),
                                       spaces.encoded_shape(space), 4, "policy")
        assert tuple(model(spaces.probe(space, 3)).shape) == (3, 4)


def test_a_users_multi_input_model_and_factory_get_the_dict():
    space = gym.spaces.Dict({"cue": gym.spaces.Discrete(2), "position": BOX})
    inputs = {"cue": keras.Input((2,), name="cue"), "position": keras.Input((3,), name="position")}
    joined = keras.layers.Concatenate()([inputs["position"], inputs["cue"]])
    model = keras.Model(inputs, keras.layers.Dense(2)(joined))
    assert networks.resolve_model(model, spaces.encoded_shape(space), 2, "policy") is model
    seen = []

    def factory(observation_shape, output_units):
        seen.append(observation_shape)
        return model
    networks.resolve_model(factory, spaces.encoded_shape(space), 2, "policy")
    assert seen == [{"cue": (2,), "position": (3,)}]
    with pytest.raises(InputError, match=r"\{'cue': \[B, 2\], 'position': \[B, 3\]\} to \[B, 5\]"):
        networks.resolve_model(model, spaces.encoded_shape(space), 5, "policy")


def test_nested_default_network_round_trips_through_keras_saving(tmp_path):
    model = networks.default_network(NESTED, 3, hidden_sizes=(8,), seed=2)
    features = spaces.encode(NESTED, _batched(NESTED, 2, seed=4))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(features).numpy(), model(features).numpy(), rtol=1e-6)
    model.save(tmp_path / "policy.keras")
    loaded = keras.models.load_model(tmp_path / "policy.keras")
    np.testing.assert_allclose(loaded(features).numpy(), model(features).numpy(), rtol=1e-6)


def test_encoding_layers_and_keras_inputs_match_the_encoding():
    from pg_keras import layers
    for space in (gym.spaces.Discrete(4, start=1), gym.spaces.MultiDiscrete([[3, 2]], start=[[1, -1]]),
                  gym.spaces.MultiBinary(3), IMAGE, BOX):
        batch = np.stack([space.sample() for _ in range(3)])
        layer = layers.EncodeObservations(space)
        clone = layers.EncodeObservations.from_config(layer.get_config())
        inputs = spaces.keras_inputs(space)
        assert inputs.name == "observations" and inputs.dtype == spaces.serving_dtype(space).name
        for encoder in (layer, clone):
            np.testing.assert_array_equal(encoder(batch).numpy(),
                                          spaces.encode(space, batch).numpy())
        assert tuple(layer(inputs).shape) == (None,) + spaces.encoded_shape(space)
    inputs = spaces.keras_inputs(NESTED)
    assert {name: (t.name, t.dtype) for name, t in inputs.items()} == {
        "a/0": ("a_0", "int32"), "a/1": ("a_1", "float32"), "b/c": ("b_c", "int32"),
        "b/image": ("b_image", "uint8")}
    layer = layers.EncodeObservations(NESTED)
    clone = layers.EncodeObservations.from_config(layer.get_config())
    batch = _batched(NESTED, 3)
    expected = spaces.encode(NESTED, batch)
    for encoder in (layer, clone):
        encoded = encoder(spaces.flatten(NESTED, batch))
        assert sorted(encoded) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(encoded[name].numpy(), expected[name].numpy())
    assert {name: tuple(t.shape) for name, t in layer(inputs).items()} == {
        name: (None,) + shape for name, shape in spaces.encoded_shape(NESTED).items()}


def test_the_numpy_encoding_is_the_encoding():
    for space in (gym.spaces.Discrete(4, start=-1), BOX, IMAGE):
        batch = np.stack([space.sample() for _ in range(5)])
        encoded = spaces.numpy_encoder(space)(batch)
        assert encoded.dtype == np.float32
        np.testing.assert_array_equal(encoded, spaces.encode(space, batch).numpy())
    for space in (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.MultiBinary(2), NESTED):
        assert spaces.numpy_encoder(space) is None


def test_an_action_mask_key_is_split_from_what_the_network_sees():
    space = gym.spaces.Dict({"observation": BOX,
                             "action_mask": gym.spaces.Box(0, 1, (4,), np.int8)})
    rest, has_mask = spaces.split_action_mask(space)
    assert has_mask and list(spaces.leaves(rest)) == ["observation"]
    assert spaces.split_action_mask(BOX) == (BOX, False)
    with pytest.raises(InputError, match="holds an action mask and nothing else"):
        spaces.split_action_mask(gym.spaces.Dict({"action_mask": gym.spaces.MultiBinary(2)}))


def test_numpy_nests_buffer_convert_and_stack_observations():
    buffer = spaces.zeros(NESTED, (4, 2))
    assert {name: (x.shape, x.dtype) for name, x in buffer.items()} == {
        "a/0": ((4, 2), np.int32), "a/1": ((4, 2, 3), np.float32), "b/c": ((4, 2, 2), np.int32),
        "b/image": ((4, 2, 12, 12, 3), np.float32)}
    batch = _batched(NESTED, 2, seed=5)
    row = spaces.as_numpy(NESTED, batch)
    spaces.nest_map(lambda target, value: target.__setitem__(1, value), buffer, row)
    np.testing.assert_array_equal(buffer["b/image"][1], batch["b"]["image"])
    np.testing.assert_array_equal(buffer["a/0"][1], batch["a"][0])
    assert spaces.as_tensors(NESTED, batch)["a/1"].dtype == tf.float32
    # info["final_obs"] holds one nested observation per env.
    singles = [NESTED.sample() for _ in range(3)]
    stacked = spaces.stack(NESTED, singles)
    np.testing.assert_array_equal(stacked["a/1"], [s["a"][1] for s in singles])
    np.testing.assert_array_equal(spaces.stack(BOX, [np.ones(3), np.zeros(3)]),
                                  [np.ones(3), np.zeros(3)])
    assert spaces.zeros(BOX, (2,)).dtype == np.float32
