"""Reading a run directory's TensorBoard events back, for the tests."""

import glob
import os

import tensorflow as tf
from tensorflow.core.framework import tensor_pb2


def tensorboard_events(directory):
    """[(step, tag, plugin name, serialized metadata, serialized tensor, values in the event)]
    in file order."""
    events = []
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events.append((event.step, value.tag, value.metadata.plugin_data.plugin_name,
                               value.metadata.SerializeToString(),
                               value.tensor.SerializeToString(), len(event.summary.value)))
    return events


def train_scalars(directory):
    """{tag: [(step, float32 value)]} of the ``train/`` scalars, in file order."""
    scalars = {}
    for step, tag, plugin, _, tensor, _ in tensorboard_events(directory):
        if tag.startswith("train/"):
            assert plugin == "scalars", (tag, plugin)
            value = tf.make_ndarray(tensor_pb2.TensorProto.FromString(tensor))
            scalars.setdefault(tag, []).append((step, float(value)))
    return scalars
