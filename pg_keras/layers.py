"""The observation encoding as a Keras layer, for one saveable ``keras.Model``.

:meth:`pg_keras.Policy.keras_model` chains it, the normalizer, the policy network and the
action head (itself a Keras layer). Each is registered with Keras, so
``keras.models.load_model`` rebuilds them (with pg_keras imported) from their config
alone, and each computes with the functions the policy computes with, so the model and
the policy cannot drift apart.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pg_keras import space_json, spaces


@keras.saving.register_keras_serializable(package="pg_keras")
class EncodeObservations(keras.layers.Layer):
    """Raw observations of ``space`` -> float32 features: ``pg_keras.spaces.encode``.

    For a Dict or Tuple space it takes and gives the flat dict ``{leaf name: batch}``.

    Args:
        space: The observation space, or its JSON form (``pg_keras.space_json``), which
            is what the layer's config holds.
    """

    def __init__(self, space, **kwargs):
        super().__init__(**kwargs)
        self.space = space_json.space_from_json(space) if isinstance(space, dict) else space

    def call(self, inputs):
        return spaces.encode(self.space, inputs)

    def compute_output_shape(self, input_shape):
        batch = tf.nest.flatten(input_shape)[0]
        return spaces.nest_map(lambda shape: (batch,) + tuple(shape),
                               spaces.encoded_shape(self.space))

    def get_config(self):
        return {**super().get_config(), "space": space_json.space_to_json(self.space)}
