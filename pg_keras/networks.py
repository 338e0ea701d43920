"""Default Keras 3 models, observation encoding, and the contract for your own models.

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
same name again from the caller (``experiments.export --policy_network=module:factory``):
a run directory names code but never runs it (:func:`model_to_restore`, SECURITY.md). A
model given as any other Python object is recorded as ``<python object NAME>``, and only
Python can restore such a run, by passing the model again.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import gymnasium as gym
import keras
import tensorflow as tf

from pg_keras import imports, recurrent, spaces
from pg_keras.config import PYTHON_OBJECT, Config, InputError

SUPPORTED_OBSERVATION_SPACES = spaces.SUPPORTED

ModelFactory = Callable[[Any, int], keras.Model]
ModelOrFactory = Union[keras.Model, ModelFactory]


def observation_shape(space: gym.Space):
    """Shape of one encoded observation (a dict of them for a nested space).

    Raises:
        InputError: for an observation space the library does not support.
    """
    return spaces.encoded_shape(space)


def encode_observations(space: gym.Space, observations):
    """Raw batched observations -> float32 [B, *observation_shape(space)] (see
    ``pg_keras.spaces.encode``)."""
    return spaces.encode(space, observations)


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
    layers = [keras.Input(shape=tuple(input_shape))]
    if len(input_shape) != 1:
        layers.append(keras.layers.Flatten())
    layers.extend(spaces.mlp_layers(hidden_sizes, activation, seed))
    layers.append(keras.layers.Dense(
        output_units, name="output",
        kernel_initializer=keras.initializers.Orthogonal(output_gain, seed=seed + 1000)))
    return keras.Sequential(layers, name=name)


def default_network(space: gym.Space, output_units: int, hidden_sizes: Sequence[int] = (64, 64),
                    activation: str = "tanh", output_gain: float = 1.0, seed: int = 0,
                    name: str = "mlp") -> keras.Model:
    """The default network for an observation space: its default torso and a linear output.

    A vector space gets :func:`mlp` itself; an image or a nested space gets the torso
    ``pg_keras.spaces.default_torso`` builds (CNN, or one named input per leaf) followed
    by the same orthogonal output layer.

    Args:
        space: The env's single observation space.
        output_units, hidden_sizes, activation, output_gain, seed, name: As for :func:`mlp`.
    """
    if not spaces.is_nested(space) and not spaces.is_image(space):
        return mlp(spaces.encoded_shape(space), output_units, hidden_sizes, activation,
                   output_gain, seed, name)
    torso = spaces.default_torso(space, hidden_sizes, activation, seed, name=f"{name}_torso")
    output = keras.layers.Dense(
        output_units, name="output",
        kernel_initializer=keras.initializers.Orthogonal(output_gain, seed=seed + 1000))
    return spaces.functional_model(torso.input, output(torso.output), name=name)


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
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise InputError(f"{role}_network must be a keras.Model or a factory "
                             f"(observation_shape, output_units) -> keras.Model; "
                             f"received {model!r}")
        try:
            model = model(_shapes(input_shape), output_units)
        except TypeError as error:
            raise InputError(f"{role}_network factory must take (observation_shape, "
                             f"output_units); calling it failed: {error}") from None
        if not isinstance(model, keras.Model):
            raise InputError(f"{role}_network factory must return a keras.Model; "
                             f"received {type(model).__name__}")
    if hasattr(model, "state_sizes"):
        return recurrent.resolve(model, input_shape, output_units, role)
    recurrent.check_stateless(model, role)
    recurrent.check_no_hidden_recurrence(model, input_shape, role)
    expected = [(2, output_units)] if role == "policy" else [(2,), (2, 1)]
    expected_text = " or ".join(_shape_text(e) for e in expected)
    inputs_text = _inputs_text(input_shape)
    shapes = _shapes(input_shape)
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
            f"pg_keras.training.restore_learner(root_dir, {role}_network=...) to export), "
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
