"""Recurrent models: the contract a recurrent policy or value model meets, the cell that
resets its state where an episode starts, and the check that refuses the rest (the default
recurrent model is pg_keras.networks.RecurrentNetwork).

The contract. A recurrent model is a ``keras.Model`` with an attribute ``state_sizes``, a
tuple of positive ints (one per state tensor: ``(units, units)`` for an LSTM's h and c,
``(units,)`` for a GRU), called on one tuple ``(observations, state, reset)``:

* ``observations``: float32 ``[B, T, *observation_shape]`` encoded observations (a dict
  of them for a nested space), T steps of B environments;
* ``state``: a tuple of float32 ``[B, n]`` tensors, one per ``state_sizes`` entry: the
  state entering step 0;
* ``reset``: float32 ``[B, T]``, 1.0 where the state entering step t must be zeroed first
  (an episode starts there), 0.0 elsewhere;

and returning ``(outputs, final_state)``: ``outputs`` float32 ``[B, T, output_units]``
(``[B, T]`` or ``[B, T, 1]`` for a value model), ``final_state`` the tuple of state
tensors after step T-1. Collection calls it with T = 1 once per env step and carries the
state; the update calls it on the whole segment from the state collection started from,
so the two must compute the same thing: the model keeps no state of its own (a Keras
layer with ``stateful=True`` is refused).
"""

from __future__ import annotations

from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from pg_keras.config import InputError

CELLS = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}


@keras.saving.register_keras_serializable(package="pg_keras")
class ResetCell(keras.layers.Layer):
    """A recurrent cell that zeroes its state where an episode starts, then steps ``cell``.

    Its input at each step is the inner cell's input with the reset flag (1.0: an episode
    starts at this step) appended as the last feature, so ``keras.layers.RNN`` runs it
    over a segment that crosses episode boundaries.
    """

    def __init__(self, cell: keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.cell = cell
        self.state_size = cell.state_size
        self.output_size = cell.output_size

    def build(self, input_shape):
        self.cell.build(tuple(input_shape[:-1]) + (input_shape[-1] - 1,))
        self.built = True

    def call(self, inputs, states, training=None):
        inputs, reset = inputs[..., :-1], inputs[..., -1:]
        # where, not a product: a zeroed state is exactly 0, and a kept one exactly itself.
        states = [keras.ops.where(reset > 0.5, keras.ops.zeros_like(s), s)
                  for s in tf.nest.flatten(states)]
        return self.cell(inputs, states, training=training)

    def get_config(self):
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["cell"] = keras.saving.deserialize_keras_object(config["cell"])
        return cls(**config)


def state_sizes(model) -> Tuple[int, ...]:
    """The model's ``state_sizes`` (``()`` for a feed-forward model)."""
    return tuple(getattr(model, "state_sizes", ()) or ())


def is_recurrent(model) -> bool:
    """Whether ``model`` declares a recurrent state (see the module's contract)."""
    return bool(state_sizes(model))


def check_stateless(model: keras.Model, role: str) -> None:
    """Refuses a model with a Keras layer that keeps its own state across calls.

    Raises:
        InputError: naming the first ``stateful=True`` layer.
    """
    for layer in _layers(model):
        if getattr(layer, "stateful", False):
            raise InputError(
                f"{role}_network has a stateful layer {layer.name!r} (stateful=True), whose "
                "state outlives its batch and is never reset at an episode's start; use "
                "recurrent_cell=lstm|gru, or a model meeting the recurrent contract (see "
                "pg_keras.recurrent)")


def check_no_hidden_recurrence(model: keras.Model, input_shape, role: str) -> None:
    """Refuses a feed-forward model holding a Keras RNN over a vector observation: it
    would see sequences of one step, with no memory.

    Raises:
        InputError: naming the RNN layer.
    """
    if isinstance(input_shape, dict) or len(tuple(input_shape)) != 1:
        return  # an RNN over an image's rows or a stacked-frame axis is legitimate
    for layer in _layers(model):
        if isinstance(layer, keras.layers.RNN):
            raise InputError(
                f"{role}_network has a recurrent layer {layer.name!r} but declares no "
                "state_sizes: it would see each vector observation as a sequence of one "
                "step and remember nothing; use recurrent_cell=lstm|gru, or meet the "
                "recurrent contract (see pg_keras.recurrent)")


def resolve(model: keras.Model, shapes, output_units: int, role: str) -> keras.Model:
    """Checks a recurrent model against the contract on a probe of 2 envs by 3 steps.

    Args:
        model: The model; it declares ``state_sizes``.
        shapes: One encoded observation's shape, a tuple of ints (a dict of them, by leaf
            name, for a nested space).
        output_units: Width the policy model must output (ignored for a value model).
        role: ``"policy"`` or ``"value"``; names the argument in error messages.

    Raises:
        InputError: for bad ``state_sizes``, a failing call, or outputs of the wrong shape.
    """
    sizes = getattr(model, "state_sizes", None)
    if not isinstance(sizes, (tuple, list)) or not sizes or not all(
            isinstance(n, (int, np.integer)) and n > 0 for n in sizes):
        raise InputError(f"{role}_network.state_sizes must be a non-empty tuple of positive "
                         f"integers; received state_sizes={sizes!r}")
    check_stateless(model, role)
    probe = ({k: tf.zeros((2, 3) + v) for k, v in shapes.items()} if isinstance(shapes, dict)
             else tf.zeros((2, 3) + shapes))
    state = tuple(tf.zeros((2, int(n))) for n in sizes)
    try:
        result = model((probe, state, tf.zeros((2, 3))))
    except (ValueError, TypeError, KeyError, tf.errors.InvalidArgumentError) as error:
        raise InputError(
            f"{role}_network (recurrent) must accept (observations [B, T, ...], state, reset "
            f"[B, T]); calling it on a probe of 2 envs by 3 steps failed: "
            f"{str(error).splitlines()[0]}") from error
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise InputError(f"{role}_network (recurrent) must return (outputs, final_state); "
                         f"received {type(result).__name__}")
    outputs, final = result
    expected = [(2, 3, output_units)] if role == "policy" else [(2, 3), (2, 3, 1)]
    shape = tuple(getattr(outputs, "shape", ()))
    if shape not in expected:
        raise InputError(
            f"{role}_network (recurrent) must return outputs of shape "
            f"{' or '.join(_text(e) for e in expected)}; received shape {list(shape)} on a "
            "probe of B=2 envs by T=3 steps")
    final_shapes = [tuple(getattr(s, "shape", ())) for s in tf.nest.flatten(final)]
    if final_shapes != [(2, int(n)) for n in sizes]:
        raise InputError(
            f"{role}_network (recurrent) must return a final state of shapes "
            f"{[_text((2, int(n))) for n in sizes]} (its state_sizes); received shapes "
            f"{[list(s) for s in final_shapes]} on a probe of B=2 envs")
    return model


def _text(shape) -> str:
    """An expected shape: (2, 3, 4) -> "[B, T, 4]"; a state's (2, 4) -> "[B, 4]"."""
    names = ["B", "T"] if len(shape) > 2 or shape == (2, 3) else ["B"]
    return "[" + ", ".join(names + [str(d) for d in shape[len(names):]]) + "]"


def _layers(model):
    """Every layer inside ``model``, nested ones included."""
    seen = getattr(model, "_flatten_layers", None)
    if seen is not None:
        return list(seen(include_self=False, recursive=True))
    return list(getattr(model, "layers", []))


def one_step(model, sizes, features, state, reset):
    """``model`` on one step of B envs: (output [B, ...], next state; () if feed-forward)."""
    if not sizes:
        return model(features), ()
    sequence = tf.nest.map_structure(lambda x: x[:, None], features)
    outputs, final = model((sequence, tuple(state), reset[:, None]))
    return outputs[:, 0], tuple(final)


def replay(model, features, state, reset, steps: int, envs: int) -> tf.Tensor:
    """``model`` on [T * B] time-major feature rows -> its output, [T * B, ...] float32;
    a recurrent model runs over each env's T steps from ``state`` ([1, B, n] each)."""
    if not state:
        return tf.cast(model(features), tf.float32)
    sequence = tf.nest.map_structure(
        lambda x: _swap(tf.reshape(x, [steps, envs] + x.shape[1:])), features)
    outputs, _ = model((sequence, tuple(s[0] for s in state), reset))
    outputs = _swap(tf.cast(outputs, tf.float32))
    return tf.reshape(outputs, [steps * envs] + outputs.shape[2:])


def merge_time(x):
    """[T, B, ...] -> [T * B, ...]."""
    return tf.reshape(x, [x.shape[0] * x.shape[1]] + x.shape[2:])


def _swap(x):
    """Swaps the two leading axes ([T, B, ...] <-> [B, T, ...])."""
    return tf.transpose(x, [1, 0] + list(range(2, len(x.shape))))
