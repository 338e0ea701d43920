"""Default Keras 3 models, and the contract for your own models.

The default models. A vector observation gets an MLP (orthogonal initialization, gain
sqrt 2, then a linear output layer of its own gain); an image (``pg_keras.spaces.torso_kind``
says which leaves are) gets a CNN torso that scales the input to [0, 1] by the Box's
bounds inside the model and follows the Nature-DQN layout (32 8x8 filters at stride 4,
64 4x4 at stride 2, 64 3x3 at stride 1, then 512 units), each kernel cut to the side that
reaches it (stride 1 then) so that small images keep every layer. A nested space's torso
is a functional ``keras.Model`` with one named input per leaf: images go through their own
CNN, the other leaves are flattened, all are concatenated and an MLP follows (the layers
after the join let the network combine keys). ``recurrent_cell`` puts an LSTM or GRU cell
between the MLP and the output (:class:`RecurrentNetwork`, vector observations only).

The contract. Any ``keras.Model`` can be the policy or the value network if

* it takes a float32 batch of encoded observations, ``[B, *observation_shape]``
  (``observation_shape`` is ``pg_keras.spaces.encoded_shape``: the Box's shape, or
  ``(n,)`` one-hot for a ``Discrete(n)`` observation space; observations are normalized
  first when that applies). For a ``Dict`` or ``Tuple`` observation space it takes a dict
  ``{leaf name: [B, *shape]}`` and ``observation_shape`` is the dict of those shapes (leaf
  names: see pg_keras.spaces; a functional ``keras.Model`` with one input per key,
  ``keras.Model({key: keras.Input(...)}, ...)``, works as is);
* the policy network returns ``[B, output_units]`` float32, ``output_units`` being what
  the action head needs (logits for discrete actions, the mean, or mean and log-std, for
  Box actions); the value network returns ``[B]`` or ``[B, 1]``;
* it creates its weights on its first call (every Keras layer does);
* it keeps no state across calls (no ``stateful=True`` layer).

A recurrent model (one that declares ``state_sizes``) meets the contract of
pg_keras.recurrent instead: it is called on whole sequences with a state and reset flags.

Pass it to :func:`pg_keras.train` as the model itself, or as a factory
``(observation_shape, output_units) -> keras.Model``, which spares you the sizes. A factory
a module defines can also be named, ``"module:factory"`` (``Config.policy_network``,
``--policy_network`` of the launchers): the run directory records the name, and the
train launcher rebuilds the model to resume the run. Exporting or restoring it needs the
same name again from the caller (``pg-keras-export --policy_network=module:factory``):
a run directory names code but never runs it (:func:`model_to_restore`, SECURITY.md). A
model given as any other Python object is recorded as ``<python object NAME>``, and only
Python can restore such a run, by passing the model again.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras import imports, recurrent, spaces
from pg_keras.config import PYTHON_OBJECT, Config, InputError
from pg_keras.layers import EncodeObservations

SUPPORTED_OBSERVATION_SPACES = spaces.SUPPORTED
# (filters, kernel, stride) of the Nature-DQN convolutions; then a 512-unit layer.
NATURE_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
NATURE_UNITS = 512

ModelFactory = Callable[[Any, int], keras.Model]
ModelOrFactory = Union[keras.Model, ModelFactory]


# ----------------------------------------------------------------------- the layers


def mlp_layers(hidden_sizes: Sequence[int], activation: str = "tanh", seed: int = 0,
               prefix: str = "hidden_") -> List[keras.layers.Layer]:
    """The hidden ``Dense`` layers of the default MLP (orthogonal, gain sqrt 2), named
    ``prefix`` and their index."""
    return [keras.layers.Dense(
        units, activation=activation, name=f"{prefix}{i}",
        kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0), seed=seed + i))
        for i, units in enumerate(hidden_sizes)]


def output_layer(units: int, gain: float = 1.0, seed: int = 0) -> keras.layers.Dense:
    """The linear output layer of every default model, named ``output``: orthogonal with
    ``gain`` (a small gain, 0.01, starts a policy close to uniform)."""
    return keras.layers.Dense(
        units, name="output",
        kernel_initializer=keras.initializers.Orthogonal(gain, seed=seed + 1000))


def conv_layout(height: int, width: int) -> List[Tuple[int, int, int]]:
    """(filters, kernel, stride) of the CNN torso for an image of that size.

    The Nature-DQN layout, with each kernel cut to the side that reaches it (and its
    stride then 1): (84, 84) gives the original layers, (7, 7) a 7x7 then two 1x1.
    """
    side, layout = min(int(height), int(width)), []
    for filters, kernel, stride in NATURE_LAYERS:
        if side < kernel:
            kernel, stride = side, 1
        layout.append((filters, kernel, stride))
        side = (side - kernel) // stride + 1
    return layout


def parameters_model(policy) -> keras.Model:
    """One functional ``keras.Model`` from raw observations to a feed-forward policy's head
    parameters (``Policy.keras_model``).

    It chains the observation encoding, the normalizer (statistics included), the policy
    network and the action head's parameters, sharing their weights with ``policy``. It
    takes ``[B, *obs_shape]`` observations of ``spaces.serving_dtype`` (one input per
    leaf, by leaf name, for a nested space) and returns what ``head.parameters`` does:
    ``{"logits"}`` or ``{"mean", "std"}``. It round-trips through
    ``model.save("policy.keras")`` and ``keras.models.load_model`` (with pg_keras
    imported: it registers the layers).
    """
    if policy.state_sizes["policy"]:
        raise InputError("keras_model() is for feed-forward policies; a recurrent "
                         "policy's network is policy.network (see pg_keras.recurrent)")
    inputs = spaces.keras_inputs(policy.observation_space)
    features = EncodeObservations(policy.observation_space, name="encode")(inputs)
    if policy.normalizer is not None:
        features = policy.normalizer(features)
    outputs = policy.head(policy.network(features))
    return functional_model(inputs, outputs, name="policy_parameters")


def functional_model(inputs, outputs, name: str) -> keras.Model:
    """``keras.Model(inputs, outputs)``, for inputs keyed by leaf names.

    Keras warns when a dict's key is not its input's name; here they differ on purpose (a
    leaf name may hold ``/``, a Keras name may not: see ``pg_keras.spaces.input_name``),
    and Keras matches a dict of inputs by key, so the warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------- the torsos


def cnn_torso(space: gym.spaces.Box, seed: int = 0, name: str = "cnn") -> keras.Model:
    """The CNN torso of an image Box: float32 [B, *shape] in 0..high -> [B, 512].

    Inputs are scaled to [0, 1] by the Box's bounds inside the model; channels-first
    images are transposed to channels last (the layout every backend's Conv2D runs).
    """
    layout = spaces.image_layout(space)
    if layout is None:
        raise InputError(f"cnn_torso needs an image Box (integer, rank 3, 1, 3 or 4 "
                         f"channels first or last); received {space!r}")
    low, high = float(np.min(space.low)), float(np.max(space.high))
    inputs = keras.Input(tuple(int(d) for d in space.shape), name="image")
    x = keras.layers.Rescaling(1.0 / max(high - low, 1.0), offset=-low / max(high - low, 1.0),
                               name="to_unit_range")(inputs)
    if layout == "channels_first":
        x = keras.layers.Permute((2, 3, 1), name="to_channels_last")(x)
    height, width = x.shape[1], x.shape[2]
    for i, (filters, kernel, stride) in enumerate(conv_layout(height, width)):
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, activation="relu", name=f"conv_{i}",
            kernel_initializer=keras.initializers.Orthogonal(np.sqrt(2.0), seed=seed + 100 + i))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(NATURE_UNITS, activation="relu", name="dense",
                           kernel_initializer=keras.initializers.Orthogonal(
                               np.sqrt(2.0), seed=seed + 200))(x)
    return keras.Model(inputs, x, name=name)


def default_torso(space: gym.Space, hidden_sizes: Sequence[int] = (64, 64),
                  activation: str = "tanh", seed: int = 0, name: str = "torso") -> keras.Model:
    """The default torso: encoded observations -> [B, features] (see the module docstring).

    An MLP for vector spaces, the CNN for an image, and for a nested space a functional
    model taking ``{leaf name: [B, *encoded_shape]}`` through one named input per leaf.
    """
    kinds, shapes = spaces.torso_kind(space), spaces.encoded_shape(space)
    if not isinstance(kinds, dict):
        if kinds == "cnn":
            return cnn_torso(space, seed=seed, name=name)
        return keras.Sequential(_flat_input(shapes) + mlp_layers(hidden_sizes, activation, seed),
                                name=name)
    # The other layers' names hold a ".", which no input name does: no key can collide.
    inputs, features = {}, []
    for leaf_name, leaf in spaces.leaves(space).items():
        key = spaces.input_name(leaf_name)
        inputs[leaf_name] = keras.Input(shapes[leaf_name], name=key)
        if kinds[leaf_name] == "cnn":
            features.append(cnn_torso(leaf, seed=seed, name=f"{key}.cnn")(inputs[leaf_name]))
        else:
            features.append(keras.layers.Flatten(name=f"{key}.flat")(inputs[leaf_name]))
    x = (keras.layers.Concatenate(name="join.leaves")(features) if len(features) > 1
         else features[0])
    for layer in mlp_layers(hidden_sizes, activation, seed, prefix="hidden."):
        x = layer(x)
    return functional_model(inputs, x, name=name)


def _flat_input(shape: Sequence[int]) -> List[keras.layers.Layer]:
    """A Sequential's input of one observation, flattened when its rank is above 1."""
    layers = [keras.Input(shape=tuple(shape))]
    if len(shape) != 1:
        layers.append(keras.layers.Flatten())
    return layers


# ------------------------------------------------------------------- default models


def mlp(input_shape: Sequence[int], output_units: int, hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh", output_gain: float = 1.0, seed: int = 0,
        name: str = "mlp") -> keras.Model:
    """A multilayer perceptron with orthogonal initialization.

    Args:
        input_shape: Shape of one input; inputs of rank > 1 are flattened.
        output_units: Width of the linear output layer.
        hidden_sizes: Widths of the hidden layers.
        activation: Keras activation name of the hidden layers.
        output_gain: Gain of the output layer's orthogonal initializer; a small gain
            (0.01) starts a policy close to uniform.
        seed: Seeds the initializers.
        name: Model name.

    Returns:
        A ``keras.Sequential`` mapping [B, *input_shape] to [B, output_units].
    """
    layers = _flat_input(input_shape) + mlp_layers(hidden_sizes, activation, seed)
    return keras.Sequential(layers + [output_layer(output_units, output_gain, seed)], name=name)


def default_network(space: gym.Space, output_units: int, hidden_sizes: Sequence[int] = (64, 64),
                    activation: str = "tanh", output_gain: float = 1.0, seed: int = 0,
                    name: str = "mlp") -> keras.Model:
    """The default network for an observation space: its default torso and a linear output.

    A vector space gets :func:`mlp` itself; an image or a nested space gets the torso
    :func:`default_torso` builds (CNN, or one named input per leaf) followed by the same
    orthogonal output layer.

    Args:
        space: The env's single observation space.
        output_units, hidden_sizes, activation, output_gain, seed, name: As for :func:`mlp`.
    """
    if spaces.torso_kind(space) == "mlp":
        return mlp(spaces.encoded_shape(space), output_units, hidden_sizes, activation,
                   output_gain, seed, name)
    torso = default_torso(space, hidden_sizes, activation, seed, name=f"{name}_torso")
    output = output_layer(output_units, output_gain, seed)
    return functional_model(torso.input, output(torso.output), name=name)


@keras.saving.register_keras_serializable(package="pg_keras")
class RecurrentNetwork(keras.Model):
    """The default recurrent model: MLP torso, then an LSTM or GRU cell, then a linear output.

    Meets the contract of pg_keras.recurrent. Vector observations only (images and nested
    spaces need a model of your own).

    Args:
        input_size: Width of one encoded observation.
        output_units: Width of the linear output layer.
        hidden_sizes: Widths of the torso's Dense layers before the cell.
        activation: Their activation.
        cell: ``"lstm"`` or ``"gru"``.
        units: The cell's units.
        output_gain: Gain of the output layer's orthogonal initializer.
        seed: Seeds the initializers.
    """

    def __init__(self, input_size: int, output_units: int, hidden_sizes: Sequence[int] = (64,),
                 activation: str = "tanh", cell: str = "lstm", units: int = 64,
                 output_gain: float = 1.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self._args = dict(input_size=int(input_size), output_units=int(output_units),
                          hidden_sizes=[int(h) for h in hidden_sizes], activation=activation,
                          cell=cell, units=int(units), output_gain=float(output_gain),
                          seed=int(seed))
        self.torso = mlp_layers(hidden_sizes, activation, seed)
        inner = recurrent.CELLS[cell](units, seed=seed + 500, name=cell)
        self.rnn = keras.layers.RNN(recurrent.ResetCell(inner), return_sequences=True,
                                    return_state=True, name="recurrent")
        self.output_layer = output_layer(output_units, output_gain, seed)
        self.state_sizes = (units, units) if cell == "lstm" else (units,)

    def call(self, inputs):
        observations, state, reset = inputs
        x = observations
        for layer in self.torso:
            x = layer(x)
        x = keras.ops.concatenate([x, keras.ops.cast(reset, x.dtype)[..., None]], axis=-1)
        sequence, *final = self.rnn(x, initial_state=list(state))
        return self.output_layer(sequence), tuple(final)

    def get_config(self):
        return {**super().get_config(), **self._args}


def default_recurrent_network(space, output_units: int, hidden_sizes: Sequence[int],
                              activation: str, cell: str, units: int, output_gain: float,
                              seed: int, name: str) -> RecurrentNetwork:
    """The default recurrent model for ``space`` (a vector observation space).

    Raises:
        InputError: for an image or nested observation space.
    """
    shape = spaces.encoded_shape(space)
    if isinstance(shape, dict) or len(shape) != 1:
        raise InputError(
            f"recurrent_cell={cell!r} builds a default recurrent model for vector observations "
            f"only; received observation shape {shape}: give your own recurrent model "
            "(see pg_keras.recurrent for the contract)")
    return RecurrentNetwork(shape[0], output_units, hidden_sizes, activation, cell, units,
                            output_gain, seed, name=name)


# ---------------------------------------------------------------------- the contract


def resolve_model(model: ModelOrFactory, input_shape, output_units: int,
                  role: str) -> keras.Model:
    """Builds a user's model (or calls their factory) and checks its output shape.

    Args:
        model: A ``keras.Model`` or a factory ``(observation_shape, output_units) -> keras.Model``.
        input_shape: Shape of one encoded observation (a dict of them, by leaf name, for
            a nested observation space).
        output_units: Width the policy network must output (ignored for the value network).
        role: ``"policy"`` or ``"value"``; names the argument in error messages.

    Returns:
        The model, built by one call on a probe batch.

    Raises:
        ValueError: if the model is neither a model nor a factory, cannot take a batch of
            encoded observations, or its output does not have the shape the contract asks for.
    """
    shapes = _shapes(input_shape)
    if not isinstance(model, keras.Model):
        model = _from_factory(model, shapes, output_units, role)
    if hasattr(model, "state_sizes"):
        return recurrent.resolve(model, shapes, output_units, role)
    recurrent.check_stateless(model, role)
    recurrent.check_no_hidden_recurrence(model, shapes, role)
    expected = [(2, output_units)] if role == "policy" else [(2,), (2, 1)]
    expected_text = " or ".join(_shape_text(e) for e in expected)
    inputs_text = _inputs_text(shapes)
    probe = ({name: tf.zeros((2,) + shape, tf.float32) for name, shape in shapes.items()}
             if isinstance(shapes, dict) else tf.zeros((2,) + shapes, tf.float32))
    try:
        output = model(probe)
    except (ValueError, KeyError, tf.errors.InvalidArgumentError) as error:
        # Keras's own message names a layer deep inside the model; say which contract failed.
        raise InputError(
            f"{role}_network must accept float32 inputs of shape {inputs_text}; calling it "
            f"on a probe batch of 2 failed: {str(error).splitlines()[0]}") from error
    if not hasattr(output, "shape"):  # a list or dict of outputs
        raise InputError(
            f"{role}_network must return one tensor of shape {expected_text}; "
            f"received {type(output).__name__}")
    shape = tuple(output.shape)
    if shape not in expected:
        raise InputError(
            f"{role}_network must map {inputs_text} to "
            f"{expected_text}; received output shape {_shape_text(shape)}")
    return model


def _from_factory(factory, shapes, output_units: int, role: str) -> keras.Model:
    """The model a user's factory makes for ``shapes``, or one line saying what is wrong."""
    if not callable(factory):
        raise InputError(f"{role}_network must be a keras.Model or a factory "
                         f"(observation_shape, output_units) -> keras.Model; "
                         f"received {factory!r}")
    try:
        model = factory(shapes, output_units)
    except TypeError as error:
        raise InputError(f"{role}_network factory must take (observation_shape, "
                         f"output_units); calling it failed: {error}") from None
    if not isinstance(model, keras.Model):
        raise InputError(f"{role}_network factory must return a keras.Model; "
                         f"received {type(model).__name__}")
    return model


def _shapes(input_shape):
    """One observation's shape as a tuple, or a dict of tuples for a nested space."""
    if isinstance(input_shape, dict):
        return {name: tuple(int(d) for d in shape) for name, shape in input_shape.items()}
    return tuple(int(d) for d in input_shape)


def _inputs_text(input_shape) -> str:
    """"[B, 4]", or "{'a': [B, 2], 'b': [B, 3]}" for a nested space."""
    shapes = _shapes(input_shape)
    if isinstance(shapes, dict):
        return "{" + ", ".join(f"{name!r}: {_shape_text((2,) + shape)}"
                               for name, shape in shapes.items()) + "}"
    return _shape_text((2,) + shapes)


def _shape_text(shape) -> str:
    """(2, 4, 3) -> "[B, 4, 3]": a batch shape with the batch size named."""
    return "[" + ", ".join(["B"] + [str(d) for d in shape[1:]]) + "]"


def model_reference(model: ModelOrFactory) -> str:
    """How a run directory records a model: ``"module:factory"`` or a Python-object marker.

    A factory gets its import name when importing that name gives it back (a function or
    class a module defines; one of a script run with ``python -m`` is named by its
    module); any other model or callable (a ``keras.Model`` instance, a lambda, a local
    function) gets ``"<python object NAME>"``.
    """
    if callable(model) and not isinstance(model, keras.Model):
        module = getattr(model, "__module__", None)
        qualname = getattr(model, "__qualname__", "")
        owner = sys.modules.get(module) if module else None
        if module == "__main__":
            spec = getattr(owner, "__spec__", None)
            module = spec.name if spec is not None else None
        if module and "<" not in qualname and _attribute(owner, qualname) is model:
            return f"{module}:{qualname}"
        name = qualname or type(model).__name__
    else:
        name = type(model).__name__
    return f"<python object {name}>"


def is_python_object(reference: str) -> bool:
    """Whether a recorded model is a Python object's marker (cannot be rebuilt by name)."""
    return bool(PYTHON_OBJECT.fullmatch(reference or ""))


def python_object_message(root_dir: str, role: str, reference: str) -> str:
    """The one line refusing to rebuild a run whose model was a Python object."""
    name = reference[len("<python object "):-1]
    return (f"root_dir {root_dir!r} was trained with a {role} network given as a Python "
            f"object ({name}), which cannot be rebuilt from the run directory: restore it "
            f"from Python by passing that model again (pg_keras.train(config, "
            f"root_dir=..., {role}_network=...) to resume, "
            f"pg_keras.run_dir.restore_learner(root_dir, {role}_network=...) to export), "
            f"or train with --{role}_network=module:factory")


def import_factory(reference: str, role: str) -> ModelFactory:
    """The factory ``"module:factory"`` names, imported.

    Raises:
        InputError: if the module cannot be imported, has no such attribute, or it is not
            a factory; or ``reference`` is a Python-object marker.
    """
    name = f"{role}_network"
    if is_python_object(reference):
        raise InputError(f"{name}={reference!r} records a model given as a Python object, "
                         f"which cannot be rebuilt by name: pass the model itself as {name}")
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or any error the module raises as it runs
        raise InputError(f"cannot import module {module_name!r} of {name}={reference!r}: "
                         f"{type(error).__name__}: {error}") from None
    factory = _attribute(module, attribute)
    if factory is None:
        raise InputError(f"module {module_name!r} has no attribute {attribute!r}; received "
                         f"{name}={reference!r}")
    if not callable(factory) or isinstance(factory, keras.Model):
        raise InputError(f"{name} must name a factory (observation_shape, output_units) -> "
                         f"keras.Model; received {name}={reference!r}, a "
                         f"{type(factory).__name__}")
    return factory


def model_to_restore(root_dir: str, role: str, recorded: str,
                     given: Union[ModelOrFactory, str, None],
                     needed: bool = True) -> Optional[ModelOrFactory]:
    """The model to rebuild a run directory's learner with; the record itself is never
    imported.

    A model the run recorded as ``module:factory`` is code: it is imported only when the
    caller names the same reference (``given``), and never from a file inside
    ``root_dir``. A model given in Python is the caller's own and taken as is (the
    checkpoint's variable shapes are checked against it on restore).

    Args:
        root_dir: The run directory (named in messages; no module is imported from it).
        role: ``"policy"`` or ``"value"``.
        recorded: The run's ``config.{role}_network``: ``""`` for the default model.
        given: The caller's model, factory or ``"module:factory"``; None for none.
        needed: False where the run has no such model (a value network without a baseline).

    Returns:
        The model or factory; None for the default one.

    Raises:
        InputError: in one line, naming what to pass, if the run recorded a model and
            none is given, a reference other than the recorded one is given, or the
            module lies inside ``root_dir``.
    """
    name = f"{role}_network"
    if not needed:
        return None
    if given is None:
        if is_python_object(recorded):
            raise InputError(python_object_message(root_dir, role, recorded))
        if recorded:
            raise InputError(
                f"root_dir {root_dir!r} was trained with {name}={recorded!r}; a run directory "
                f"names code but never runs it: pass --{name}={recorded} "
                f"(restore_learner(root_dir, {name}={recorded!r}) in Python) to import it")
        return None
    if not isinstance(given, str):
        return given
    if given != recorded or is_python_object(given):
        if is_python_object(recorded):
            raise InputError(python_object_message(root_dir, role, recorded))
        wanted = (f"--{name}={recorded}" if recorded
                  else f"no --{name} (it was trained with the default model)")
        raise InputError(f"{name}={given!r} is not the model root_dir {root_dir!r} was trained "
                         f"with; pass {wanted}")
    imports.refuse_inside(given.partition(":")[0], root_dir, f"{name}={given!r}")
    return import_factory(given, role)


def chosen_model(given: Optional[ModelOrFactory], reference: str,
                 role: str) -> Optional[ModelOrFactory]:
    """The model given in Python, else the factory ``reference`` names, else None (default)."""
    if given is not None:
        return given
    return import_factory(reference, role) if reference else None


def record_models(config: Config, policy_network: Optional[ModelOrFactory],
                  value_network: Optional[ModelOrFactory]) -> Config:
    """``config`` with the models given in Python recorded (see :func:`model_reference`).

    Raises:
        InputError: if a model is given both as an argument and, differently, in the config.
    """
    changes = {}
    for role, given in (("policy", policy_network), ("value", value_network)):
        if given is None or (role == "value" and not config.baseline):
            continue
        name, reference = f"{role}_network", model_reference(given)
        recorded = getattr(config, name)
        if recorded and not is_python_object(recorded) and recorded != reference:
            raise InputError(f"{name} is given twice, differently: config.{name}={recorded!r} "
                             f"and the argument {reference}; give one of them")
        changes[name] = reference
    return config.replace(**changes) if changes else config


def _attribute(owner, dotted: str):
    """``owner.a.b`` for ``dotted="a.b"``, or None."""
    for part in dotted.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    return owner
