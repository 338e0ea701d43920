"""Tests of pg_keras.normalization.RunningNormalization against numpy statistics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pg_keras.normalization import NestedNormalization, RunningNormalization

# Uneven batch sizes, including a single row, so the parallel merge is exercised with
# counts that differ a lot between the running and the new statistics.
BATCH_SIZES = (5, 17, 1, 9, 3)


def _batches(shape, seed=0):
    """Batches with their masks; a few masks drop rows, one keeps the lone row."""
    rng = np.random.default_rng(seed)
    batches, masks = [], []
    for i, n in enumerate(BATCH_SIZES):
        loc = rng.normal(size=shape) * 3.0 + 5.0
        batches.append((rng.normal(size=(n,) + shape) * (1.0 + i) + loc).astype(np.float32))
        mask = (rng.uniform(size=n) < 0.7).astype(np.float32)
        mask[0] = 1.0
        masks.append(mask)
    return batches, masks


def _fed(shape, clip=10.0, seed=0):
    layer = RunningNormalization(clip=clip)
    layer.build((None,) + shape)
    batches, masks = _batches(shape, seed)
    for batch, mask in zip(batches, masks):
        layer.update(batch, mask)
    kept = np.concatenate([b[m > 0] for b, m in zip(batches, masks)]).astype(np.float64)
    return layer, kept


def _assert_stats(layer, kept):
    np.testing.assert_allclose(layer.mean.numpy(), kept.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.variance.numpy(), kept.var(axis=0), rtol=1e-4, atol=1e-5)
    assert float(layer.count.numpy()) == len(kept)


@pytest.mark.parametrize("shape", [(3,), (2, 2), ()], ids=str)
def test_statistics_match_numpy_over_unmasked_rows(shape):
    layer, kept = _fed(shape)
    assert len(kept) < sum(BATCH_SIZES)  # the masks did drop rows
    _assert_stats(layer, kept)


def test_update_without_mask_uses_every_row():
    layer = RunningNormalization()
    layer.build((None, 2))
    batches, _ = _batches((2,))
    for batch in batches:
        layer.update(batch)
    _assert_stats(layer, np.concatenate(batches).astype(np.float64))


def test_update_accepts_a_boolean_mask():
    batches, masks = _batches((3,))
    expected, kept = _fed((3,))
    layer = RunningNormalization()
    layer.build((None, 3))
    for batch, mask in zip(batches, masks):
        layer.update(batch, mask > 0)
    _assert_stats(layer, kept)


def test_update_in_a_tf_function_matches_eager():
    """The learner updates the statistics inside its compiled train step."""
    _, kept = _fed((3,))
    layer = RunningNormalization()
    layer.build((None, 3))
    update = tf.function(layer.update, input_signature=[
        tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.float32)])
    for batch, mask in zip(*_batches((3,))):
        update(batch, mask)
    _assert_stats(layer, kept)


def test_all_zero_mask_changes_nothing():
    fresh = RunningNormalization()
    fresh.build((None, 3))
    fresh.update(np.full((4, 3), 7.0, np.float32), np.zeros(4, np.float32))
    np.testing.assert_array_equal(fresh.mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(fresh.variance.numpy(), np.ones(3))
    assert float(fresh.count.numpy()) == 0.0

    layer, kept = _fed((3,))
    before = [w.numpy().copy() for w in layer.weights]
    layer.update(np.full((6, 3), 1e3, np.float32), np.zeros(6, np.float32))
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, new.numpy())
    _assert_stats(layer, kept)


def test_masked_rows_with_nan_or_inf_are_left_out():
    """Padding rows may hold anything; they must not leak into the statistics."""
    batches, masks = _batches((3,))
    _, kept = _fed((3,))
    layer = RunningNormalization()
    layer.build((None, 3))
    for batch, mask in zip(batches, masks):
        batch = batch.copy()
        batch[mask == 0] = np.nan
        if (mask == 0).any():
            batch[np.argmin(mask), 0] = np.inf
        layer.update(batch, mask)
    _assert_stats(layer, kept)


def test_call_standardizes_clips_and_does_not_update():
    layer, kept = _fed((3,), clip=2.0)
    before = [w.numpy().copy() for w in layer.weights]
    mean, std = kept.mean(axis=0), np.sqrt(kept.var(axis=0) + layer.epsilon)
    x = np.stack([mean, mean + 0.5 * std, mean - 1.5 * std, mean + 100 * std,
                  mean - 100 * std]).astype(np.float32)
    expected = np.clip((x - mean) / std, -2.0, 2.0)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer(x).numpy()[3:], [[2.0] * 3, [-2.0] * 3])
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, new.numpy())
    # float64 input is accepted and computed in the layer's dtype.
    assert layer(x.astype(np.float64)).dtype == tf.float32


def test_clip_zero_disables_clipping():
    layer = RunningNormalization(clip=0.0)
    layer.build((None, 1))
    layer.update(np.array([[-1.0], [1.0]], np.float32))
    np.testing.assert_allclose(layer(np.array([[50.0]], np.float32)).numpy(), [[50.0]],
                               rtol=1e-5)


def test_fresh_layer_is_the_identity():
    layer = RunningNormalization()
    x = np.array([[0.5, -3.0], [2.0, 9.0]], np.float32)
    np.testing.assert_allclose(layer(x).numpy(), x, rtol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    layer, kept = _fed((3,))
    path = tf.train.Checkpoint(normalizer=layer).save(str(tmp_path / "ckpt"))

    restored = RunningNormalization()
    restored.build((None, 3))
    tf.train.Checkpoint(normalizer=restored).restore(path).assert_consumed()
    _assert_stats(restored, kept)
    x = np.random.default_rng(9).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(restored(x).numpy(), layer(x).numpy(), rtol=1e-6)


def test_keras_file_round_trip(tmp_path):
    layer, kept = _fed((3,), clip=4.0)
    model = keras.Sequential([keras.Input((3,)), layer])
    path = str(tmp_path / "normalizer.keras")
    model.save(path)

    loaded = keras.saving.load_model(path)
    restored = loaded.layers[0]
    assert isinstance(restored, RunningNormalization)
    assert restored.clip == 4.0
    _assert_stats(restored, kept)
    x = np.random.default_rng(9).normal(size=(4, 3)).astype(np.float32) * 10
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    # Statistics are not trainable, so no optimizer can move them.
    assert restored.trainable_weights == []


def test_get_config_round_trip():
    layer = RunningNormalization(clip=3.5, epsilon=1e-4, name="obs_norm")
    config = layer.get_config()
    assert config["clip"] == 3.5 and config["epsilon"] == 1e-4
    clone = RunningNormalization.from_config(config)
    assert (clone.clip, clone.epsilon, clone.name) == (3.5, 1e-4, "obs_norm")
    assert clone.get_config() == config


def test_update_builds_an_unbuilt_layer():
    layer = RunningNormalization()
    batches, masks = _batches((3,))
    for batch, mask in zip(batches, masks):
        layer.update(batch, mask)
    _assert_stats(layer, _fed((3,))[1])
    assert tuple(layer.mean.shape) == (3,)


# ------------------------------------------------------------------ nested observations


def _nested_batch(seed, n=16):
    rng = np.random.default_rng(seed)
    return {"a/0": (rng.normal(size=(n, 3)) * 4 + 2).astype(np.float32),
            "b": rng.normal(size=(n, 2)).astype(np.float32),
            "image": rng.integers(0, 256, (n, 4, 4, 1)).astype(np.float32)}


def test_nested_normalization_keeps_each_leafs_own_statistics():
    nested = NestedNormalization(["a/0", "b"], clip=3.0)
    plain = {name: RunningNormalization(clip=3.0) for name in ("a/0", "b")}
    mask = np.array([1.0] * 12 + [0.0] * 4, np.float32)
    for seed in (0, 1):
        batch = _nested_batch(seed)
        nested.update(batch, mask)
        for name, layer in plain.items():
            layer.update(batch[name], mask)
    batch = _nested_batch(2)
    output = nested(batch)
    for name, layer in plain.items():
        np.testing.assert_allclose(output[name].numpy(), layer(batch[name]).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(output["image"], batch["image"])  # not a normalized leaf


def test_nested_normalization_round_trips_through_checkpoints_and_config(tmp_path):
    nested = NestedNormalization(["a/0", "b"], clip=3.0)
    nested.update(_nested_batch(0))
    path = tf.train.Checkpoint(n=nested).write(str(tmp_path / "ckpt"))
    restored = NestedNormalization.from_config(nested.get_config())
    restored.build({name: (None,) + x.shape[1:] for name, x in _nested_batch(0).items()})
    tf.train.Checkpoint(n=restored).read(path).assert_consumed()
    batch = _nested_batch(3)
    for name in batch:
        np.testing.assert_array_equal(restored(batch)[name], nested(batch)[name])


def test_updating_from_flat_rows_is_updating_from_the_features():
    """The learner gathers the normalizer's inputs across replicas as one [N, size] tensor."""
    batch, mask = _nested_batch(4), np.array([1.0] * 10 + [0.0] * 6, np.float32)
    for make in (lambda: NestedNormalization(["a/0", "image"]),
                 lambda: RunningNormalization()):
        direct, by_rows = make(), make()
        features = batch if isinstance(direct, NestedNormalization) else batch["image"]
        direct.update(features, mask)
        rows = by_rows.rows(features)
        assert rows.shape == ((16, 3 + 16) if isinstance(direct, NestedNormalization)
                              else (16, 16))
        by_rows.build({name: (None,) + x.shape[1:] for name, x in batch.items()}
                      if isinstance(by_rows, NestedNormalization) else (None, 4, 4, 1))
        by_rows.update_rows(rows, mask)
        for a, b in zip(direct.weights, by_rows.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
