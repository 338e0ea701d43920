"""Running mean and variance of observations, as a Keras layer exported with the policy."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="pg_keras")
class RunningNormalization(keras.layers.Layer):
    """Standardizes inputs with statistics accumulated by :meth:`update`.

    The statistics are non-trainable weights, so they travel with the model into
    checkpoints, ``.keras`` files and SavedModels. Calling the layer never changes them;
    the learner calls :meth:`update` with each batch of observations.

    Args:
        clip: Normalized values are clipped to [-clip, clip]; 0 disables.
        epsilon: Added to the variance before the square root.
    """

    def __init__(self, clip: float = 10.0, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.clip = float(clip)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        self.mean = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="mean")
        self.variance = self.add_weight(shape=shape, initializer="ones", trainable=False,
                                        name="variance")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, inputs):
        x = (tf.cast(inputs, self.compute_dtype) - self.mean) * tf.math.rsqrt(
            self.variance + self.epsilon)
        if self.clip > 0:
            x = tf.clip_by_value(x, -self.clip, self.clip)
        return x

    def update(self, batch, mask=None) -> None:
        """Merges a batch into the statistics (Chan et al.'s parallel algorithm).

        Args:
            batch: [N, *shape] observations.
            mask: optional [N]; rows where it is 0 are left out.
        """
        batch = tf.convert_to_tensor(batch)
        if not self.built:  # update before the first call: weights are made here, as call does
            self.build((None,) + tuple(batch.shape[1:]))
        batch = tf.cast(batch, self.mean.dtype)
        if mask is None:
            mask = tf.ones(tf.shape(batch)[:1], batch.dtype)
        mask = tf.reshape(tf.cast(mask, batch.dtype), [-1] + [1] * (batch.shape.rank - 1))
        # Zero the left-out rows themselves: padding may hold inf or NaN, and NaN * 0 is NaN.
        batch = tf.where(mask > 0, batch, tf.zeros_like(batch))
        n = tf.reduce_sum(mask)
        safe_n = tf.maximum(n, 1.0)
        batch_mean = tf.reduce_sum(batch * mask, axis=0) / safe_n
        batch_var = tf.reduce_sum(tf.square(batch - batch_mean) * mask, axis=0) / safe_n
        count = self.count + n
        delta = batch_mean - self.mean
        safe_count = tf.maximum(count, 1.0)
        new_mean = self.mean + delta * n / safe_count
        # M2 of the union; on the first batch the prior "ones" variance has weight 0.
        m2 = (self.variance * self.count + batch_var * n
              + tf.square(delta) * self.count * n / safe_count)
        new_var = m2 / safe_count
        has_data = n > 0
        self.mean.assign(tf.where(has_data, new_mean, self.mean))
        self.variance.assign(tf.where(has_data, new_var, self.variance))
        self.count.assign(count)

    def rows(self, features) -> tf.Tensor:
        """[N, *shape] features -> [N, size]: the flat rows :meth:`update_rows` takes (the
        learner gathers them across replicas in one tensor)."""
        features = tf.convert_to_tensor(features)
        return tf.reshape(tf.cast(features, tf.float32), [tf.shape(features)[0], -1])

    def update_rows(self, rows, mask=None) -> None:
        """:meth:`update` on the flat rows of :meth:`rows`."""
        self.update(tf.reshape(rows, [-1, *self.mean.shape]), mask)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "clip": self.clip, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="pg_keras")
class NestedNormalization(keras.layers.Layer):
    """:class:`RunningNormalization` of some leaves of a nested observation.

    Takes and returns the dict ``{leaf name: [B, *shape]}`` of a Dict or Tuple
    observation space (see pg_keras.spaces); the named leaves are standardized, each
    with its own statistics, and the others (images, one-hots) pass through unchanged.

    Args:
        leaves: Names of the leaves to normalize (``pg_keras.spaces.normalizes``).
        clip: As for :class:`RunningNormalization`.
        epsilon: As for :class:`RunningNormalization`.
    """

    def __init__(self, leaves, clip: float = 10.0, epsilon: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.leaves = [str(name) for name in leaves]
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        # Attributes leaf_0, leaf_1, ...: checkpoints track a layer's attributes (not the
        # entries of a list Keras wraps), and a leaf name may hold "/", which neither a
        # checkpoint key nor a layer name may.
        self.normalizers = []
        for i in range(len(self.leaves)):
            normalizer = RunningNormalization(clip, epsilon, name=f"leaf_{i}")
            setattr(self, f"leaf_{i}", normalizer)
            self.normalizers.append(normalizer)

    def build(self, input_shape):
        for name, normalizer in zip(self.leaves, self.normalizers):
            if not normalizer.built:
                normalizer.build(input_shape[name])

    def call(self, inputs):
        outputs = dict(inputs)
        for name, normalizer in zip(self.leaves, self.normalizers):
            outputs[name] = normalizer(inputs[name])
        return outputs

    def update(self, batch, mask=None) -> None:
        """Merges a batch ``{leaf name: [N, *shape]}`` into each leaf's statistics."""
        for name, normalizer in zip(self.leaves, self.normalizers):
            normalizer.update(batch[name], mask)

    def rows(self, features) -> tf.Tensor:
        """``{leaf name: [N, *shape]}`` -> [N, size]: the normalized leaves, flattened and
        joined in the order of :attr:`leaves` (the rows :meth:`update_rows` takes)."""
        return tf.concat([normalizer.rows(features[name])
                          for name, normalizer in zip(self.leaves, self.normalizers)], axis=1)

    def update_rows(self, rows, mask=None) -> None:
        """:meth:`update` on the joined rows of :meth:`rows`."""
        sizes = [int(np.prod(normalizer.mean.shape)) for normalizer in self.normalizers]
        for normalizer, part in zip(self.normalizers, tf.split(rows, sizes, axis=1)):
            normalizer.update_rows(part, mask)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "leaves": self.leaves, "clip": self.clip,
                "epsilon": self.epsilon}
