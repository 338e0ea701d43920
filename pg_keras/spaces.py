"""The one place that dispatches on gymnasium observation spaces.

For every supported space this module says how a batch of its observations is stored
(:func:`tensor_spec`, :func:`observation_dtype`), what an exported policy takes
(:func:`serving_dtype`), how raw observations become the float features a network reads
(:func:`encode`, :func:`encoded_shape`; in NumPy, :func:`numpy_encoder`), whether running
normalization applies (:func:`normalizes`) and which torso a default network starts with
(:func:`torso_kind`; pg_keras.networks builds it).

Leaf spaces:

==================  ==========  ===========================  ==========  ================
space               stored as   encoded as (float32)         normalized  default torso
==================  ==========  ===========================  ==========  ================
Box, float/vector   float32     the values                   yes         MLP
Box, integer image  float32     the values (0-255)           no          CNN
Discrete(n)         int32       one-hot [n]                  no          MLP
MultiDiscrete(nv)   int32       one-hot per entry, joined    no          MLP
MultiBinary(n)      int32       the bits                     no          MLP
==================  ==========  ===========================  ==========  ================

An *image* is an integer Box of rank 3 whose first or last axis has 1, 3 or 4 channels:
(H, W, C), channels last, when the last axis qualifies (gymnasium's convention), else
(C, H, W). Other integer Boxes are vectors.

Nested spaces. A ``Dict`` or ``Tuple`` space (nested to any depth) is handled leaf by
leaf; its observations travel as one flat ``dict`` from *leaf name* to array. A leaf's
name is its path of keys joined with ``/``, a Tuple position written as its index:
``Dict(a=Tuple(Discrete(2), Box(...)))`` has leaves ``"a/0"`` and ``"a/1"``; a top-level
Tuple's leaves are ``"0"``, ``"1"``, ... :func:`flatten` turns the env's nested
observation into that dict. Keras layer names and TensorFlow signature arguments cannot
hold ``/`` (nor start with a digit): there a leaf goes by :func:`input_name`, TensorFlow's
own rule (every character that is not a letter or digit becomes ``_``, and a name not
starting with a letter gets the prefix ``arg_``), so ``"a/0"`` is ``a_0`` and ``"0"`` is
``arg_0``. Two leaves whose input names coincide are refused.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras.config import InputError
from pg_keras.wrappers import ACTION_MASK_KEY, is_text_space

SUPPORTED = ("Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple")
IMAGE_CHANNELS = (1, 3, 4)
SEPARATOR = "/"

Nest = Union[Any, Dict[str, Any]]


# ------------------------------------------------------------------- dispatch on spaces


def is_nested(space: gym.Space) -> bool:
    """Whether ``space`` is a Dict or a Tuple."""
    return isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple))


def leaves(space: gym.Space) -> Dict[str, gym.Space]:
    """Leaf name -> leaf space, in the space's order (see the module docstring).

    Raises:
        InputError: for an unsupported space anywhere in ``space``, an empty Dict or
            Tuple, or two leaves with the same :func:`input_name`.
    """
    found = _leaves(space, "")
    names: Dict[str, str] = {}
    for name in found:
        other = names.setdefault(input_name(name), name)
        if other != name:
            raise InputError(f"observation keys {other!r} and {name!r} both become the input "
                             f"name {input_name(name)!r}; rename one of them")
    return found


def _leaves(space: gym.Space, prefix: str) -> Dict[str, gym.Space]:
    if isinstance(space, gym.spaces.Dict):
        children = [(str(key), child) for key, child in space.spaces.items()]
    elif isinstance(space, gym.spaces.Tuple):
        children = [(str(i), child) for i, child in enumerate(space.spaces)]
    else:
        return {prefix: check_leaf(space, prefix)}
    if not children:
        raise InputError(f"unsupported observation space {space!r}: it has no entries")
    found: Dict[str, gym.Space] = {}
    for key, child in children:
        found.update(_leaves(child, f"{prefix}{SEPARATOR}{key}" if prefix else key))
    return found


def check_leaf(space: gym.Space, name: str = "") -> gym.Space:
    """``space`` if it is a supported leaf space; else one line naming it and the key."""
    ok = isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete,
                            gym.spaces.MultiBinary))
    if isinstance(space, gym.spaces.Box):
        ok = np.issubdtype(space.dtype, np.number) and space.dtype != np.bool_
    if not ok:
        where = f" at observation key {name!r}" if name else ""
        # A Dict's text entry (MiniGrid's mission) is usually dropped, not encoded.
        remedy = ("; to drop a Dict's text keys: --env_wrappers=pg_keras.wrappers:DropTextKeys"
                  if name and is_text_space(space) else "")
        raise InputError(f"unsupported observation space {space!r}{where}; supported: "
                         + ", ".join(SUPPORTED) + remedy)
    return space


def check(space: gym.Space) -> gym.Space:
    """``space`` if every part of it is supported; else an InputError naming the part."""
    leaves(space)
    return space


def input_name(leaf_name: str) -> str:
    """A leaf's name where ``/`` is not allowed: Keras inputs, SavedModel signatures."""
    name = "".join(c if c.isalnum() else "_" for c in leaf_name) or "observations"
    return name if name[0].isalpha() else "arg_" + name


def image_layout(space: gym.Space) -> Optional[str]:
    """``"channels_last"`` or ``"channels_first"`` for an image Box, else None."""
    if not (isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.integer)
            and len(space.shape) == 3):
        return None
    if space.shape[-1] in IMAGE_CHANNELS:
        return "channels_last"
    if space.shape[0] in IMAGE_CHANNELS:
        return "channels_first"
    return None


def _map(space: gym.Space, fn: Callable[[gym.Space], Any]) -> Nest:
    """``fn(space)`` for a leaf space, ``{leaf name: fn(leaf)}`` for a nested one."""
    if is_nested(space):
        return {name: fn(leaf) for name, leaf in leaves(space).items()}
    return fn(check_leaf(space))


def _leaf_dtype(space: gym.Space) -> tf.DType:
    # Every Box, images included, is stored as float32: what the policy's functions and
    # the exported model's checks take (the serving dtype stays the image's own).
    return tf.float32 if isinstance(space, gym.spaces.Box) else tf.int32


def _leaf_serving_dtype(space: gym.Space) -> tf.DType:
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.integer):
        return tf.as_dtype(space.dtype)
    return _leaf_dtype(space)


def _leaf_encoded_shape(space: gym.Space) -> Tuple[int, ...]:
    if isinstance(space, gym.spaces.Discrete):
        return (int(space.n),)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (int(np.sum(space.nvec)),)
    return tuple(int(d) for d in space.shape)


def _leaf_normalizes(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and image_layout(space) is None


def observation_dtype(space: gym.Space) -> Nest:
    """dtype in which observations are stored, collected and fed to the policy."""
    return _map(space, _leaf_dtype)


def serving_dtype(space: gym.Space) -> Nest:
    """dtype an exported policy takes: an integer Box's own (uint8 images), else
    :func:`observation_dtype`."""
    return _map(space, _leaf_serving_dtype)


def observation_shape(space: gym.Space) -> Nest:
    """Shape of one raw observation."""
    return _map(space, lambda leaf: tuple(int(d) for d in leaf.shape))


def encoded_shape(space: gym.Space) -> Nest:
    """Shape of one encoded observation, what the network reads."""
    return _map(space, _leaf_encoded_shape)


def normalizes(space: gym.Space) -> Nest:
    """Whether running normalization applies: to vector Boxes, not to images or one-hots."""
    return _map(space, _leaf_normalizes)


def is_image(space: gym.Space) -> Nest:
    """Whether the (leaf) space is an image, which gets a CNN torso."""
    return _map(space, lambda leaf: image_layout(leaf) is not None)


def tensor_spec(space: gym.Space, batch_shape: Sequence[Optional[int]] = (None,)) -> Nest:
    """``tf.TensorSpec`` of a batch of stored observations, ``[*batch_shape, *shape]``."""
    batch_shape = tuple(batch_shape)
    return _map(space, lambda leaf: tf.TensorSpec(
        batch_shape + tuple(int(d) for d in leaf.shape), _leaf_dtype(leaf)))


# --------------------------------------------------------------------------- encoding


def one_hot(observations, num_categories: int, start: int = 0) -> tf.Tensor:
    """``Discrete(n, start)`` observations [B] -> float32 one-hot [B, n]."""
    index = tf.reshape(tf.cast(observations, tf.int32) - int(start), [-1])
    return tf.one_hot(index, int(num_categories), dtype=tf.float32)


def multi_one_hot(observations, nvec, start=0) -> tf.Tensor:
    """``MultiDiscrete(nvec, start)`` observations [B, *shape] -> float32 [B, sum(nvec)],
    the one-hot of each entry, joined in the flattened order of ``nvec``."""
    nvec = np.asarray(nvec, np.int64)
    start = np.broadcast_to(np.asarray(start, np.int64), nvec.shape).reshape(-1)
    nvec = nvec.reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    index = tf.reshape(tf.cast(observations, tf.int32), [-1, len(nvec)])
    index = index - tf.constant(start, tf.int32) + tf.constant(offsets, tf.int32)
    # Out-of-range entries stay zero instead of lighting a neighbour's slot.
    inside = (index >= offsets) & (index < offsets + nvec)
    hot = tf.one_hot(index, int(nvec.sum()), dtype=tf.float32)
    return tf.reduce_sum(hot * tf.cast(inside, tf.float32)[..., None], axis=1)


def _encode_leaf(space: gym.Space, observations) -> tf.Tensor:
    if isinstance(space, gym.spaces.Discrete):
        return one_hot(observations, int(space.n), int(space.start))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return multi_one_hot(observations, space.nvec, space.start)
    return tf.cast(observations, tf.float32)


def encode(space: gym.Space, observations: Nest) -> Nest:
    """Raw batched observations -> float32 features, ``[B, *encoded_shape(space)]``.

    For a nested space, ``observations`` is the flat dict of :func:`flatten` (or the
    env's nested observation, flattened here) and so is the result.
    """
    if not is_nested(space):
        return _encode_leaf(check_leaf(space), observations)
    observations = flatten(space, observations)
    return {name: _encode_leaf(leaf, observations[name])
            for name, leaf in leaves(space).items()}


def numpy_encoder(space: gym.Space) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """:func:`encode` in NumPy, for a Box or a Discrete space (a cast, a lookup in the
    one-hot rows ``encode`` gives each value); None for the other spaces."""
    if isinstance(space, gym.spaces.Box):
        return lambda observations: np.asarray(observations, np.float32)
    if not isinstance(space, gym.spaces.Discrete):
        return None
    start = int(space.start)
    rows = encode(space, np.arange(start, start + int(space.n))).numpy()
    return lambda observations: rows[np.asarray(observations) - start]


def flatten(space: gym.Space, observation: Nest) -> Nest:
    """The env's (possibly batched) nested observation -> ``{leaf name: array}``.

    A dict already keyed by leaf names is returned as is; a leaf space's observation too.

    Raises:
        InputError: if a leaf is missing.
    """
    if not is_nested(space):
        return observation
    names = leaves(space)
    if isinstance(observation, dict) and set(names) <= set(observation):
        return {name: observation[name] for name in names}
    flat: Dict[str, Any] = {}
    for name in names:
        value = observation
        for key in name.split(SEPARATOR):
            try:
                value = value[int(key)] if isinstance(value, (tuple, list)) else value[key]
            except (KeyError, IndexError, TypeError, ValueError):
                raise InputError(f"observation has no entry {name!r} of the observation "
                                 f"space {space}; received {_describe(observation)}") from None
        flat[name] = value
    return flat


def _describe(observation) -> str:
    if isinstance(observation, dict):
        return "a dict with keys " + repr(sorted(map(str, observation)))
    return f"a {type(observation).__name__}"


# ------------------------------------------------- batches of observations, in NumPy
#
# Collectors keep observations as a "nest": one array for a leaf space, the flat dict
# {leaf name: array} for a nested one. These helpers treat both alike.


def nest_map(fn: Callable, *nests: Nest) -> Nest:
    """``fn`` applied leaf by leaf to nests of the same structure."""
    if isinstance(nests[0], dict):
        return {name: fn(*(nest[name] for nest in nests)) for name in nests[0]}
    return fn(*nests)


def zeros(space: gym.Space, batch_shape: Sequence[int]) -> Nest:
    """A zero-filled NumPy buffer of ``batch_shape`` observations, in the stored dtypes."""
    return nest_map(lambda spec: np.zeros(spec.shape, spec.dtype.as_numpy_dtype),
                    tensor_spec(space, batch_shape))


def as_numpy(space: gym.Space, observations: Nest) -> Nest:
    """The env's (batched) observations as NumPy arrays in the stored dtypes, flat."""
    observations = flatten(space, observations)
    return nest_map(lambda x, dtype: np.asarray(x, dtype.as_numpy_dtype), observations,
                    observation_dtype(space))


def as_tensors(space: gym.Space, observations: Nest) -> Nest:
    """The env's (batched) observations as tensors in the stored dtypes, flat."""
    return nest_map(tf.convert_to_tensor, as_numpy(space, observations))


def checked_batch(space: gym.Space, observations: Nest) -> Tuple[Nest, bool]:
    """Observations a caller hands the policy, as a finite batch in the stored dtypes.

    Args:
        space: One env's observation space.
        observations: A batch ``[B, *shape]`` or a single observation ``[*shape]`` (per
            leaf, for a nested space: all leaves alike).

    Returns:
        (the batch, flat, with a leading axis; whether one observation was given).

    Raises:
        InputError: for a shape that is neither, naming the shapes it takes, or for a NaN
            or inf anywhere (naming the leaf and the rows).
    """
    try:
        flat = as_numpy(space, observations)
    except (TypeError, ValueError) as error:  # text, ragged lists, objects
        raise InputError(f"observations must be arrays of numbers of the observation space "
                         f"{space}; received {type(observations).__name__} ({error})") from None
    shapes = observation_shape(space)
    names = list(flat) if isinstance(flat, dict) else [""]
    leaf = (lambda nest, name: nest[name]) if isinstance(flat, dict) else (lambda nest, _: nest)
    kinds = set()
    for name in names:
        array, shape = leaf(flat, name), tuple(leaf(shapes, name))
        if array.shape == shape:
            kinds.add("single")
        elif array.shape[1:] == shape and array.ndim == len(shape) + 1:
            kinds.add("batch")
        else:
            raise InputError(
                f"observations{_at_key(name)} must have shape [{', '.join(['B', *map(str, shape)])}]"
                f" (a batch) or {list(shape)} (one observation); received shape "
                f"{list(array.shape)}")
    if len(kinds) > 1:
        raise InputError("observations must be all batched or all single across the keys "
                         f"of {space}; received a mix")
    single = kinds == {"single"}
    batch = nest_map(lambda x: x[None], flat) if single else flat
    for name in names:
        array = leaf(batch, name)
        rows = np.isfinite(array.reshape(array.shape[0], int(np.prod(array.shape[1:])))).all(1)
        if not rows.all():
            raise InputError(f"observations{_at_key(name)} must be finite; received NaN or inf "
                             f"in row(s) {np.flatnonzero(~rows)[:10].tolist()}")
    return batch, single


def misfit(space: gym.Space, observation, key: str = "") -> str:
    """How one env ``observation`` does not fit ``space`` (shapes, keys, at ``key``), or
    "" if it does: the start-of-run check of what an env returns."""
    at = f" at key {key!r}" if key else ""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(observation, dict) or set(observation) != set(space.spaces):
            keys = sorted(observation) if isinstance(observation, dict) else type(observation)
            return f"keys{at} {keys}, but the space has {sorted(space.spaces)}"
        parts = (misfit(s, observation[k], f"{key}/{k}" if key else str(k))
                 for k, s in space.spaces.items())
        return next((p for p in parts if p), "")
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(observation, (tuple, list)) or len(observation) != len(space.spaces):
            return f"{type(observation).__name__}{at}, but the space is a Tuple of " \
                   f"{len(space.spaces)}"
        parts = (misfit(s, o, f"{key}/{i}" if key else str(i))
                 for i, (s, o) in enumerate(zip(space.spaces, observation)))
        return next((p for p in parts if p), "")
    if space.shape is not None and np.shape(observation) != tuple(space.shape):
        return f"shape {list(np.shape(observation))}{at}, but the space's is {list(space.shape)}"
    return ""


def _at_key(name: str) -> str:
    return f" at observation key {name!r}" if name else ""


def stack(space: gym.Space, observations: Sequence[Nest]) -> Nest:
    """One observation per env (``info["final_obs"][i]``) -> a batch, flat."""
    flat = [flatten(space, observation) for observation in observations]
    if not is_nested(space):
        return np.stack([np.asarray(x) for x in flat])
    return {name: np.stack([np.asarray(x[name]) for x in flat]) for name in leaves(space)}


# ------------------------------------------------------------------------------ torsos


def torso_kind(space: gym.Space) -> Nest:
    """Which default torso reads the (leaf) space: ``"cnn"`` for an image, else ``"mlp"``
    (pg_keras.networks builds them)."""
    return _map(space, lambda leaf: "cnn" if image_layout(leaf) else "mlp")


def keras_inputs(space: gym.Space) -> Nest:
    """``keras.Input`` of raw observations in the :func:`serving_dtype`: one named
    ``observations`` for a leaf space, one per leaf (named by :func:`input_name`) for a
    nested one."""
    if not is_nested(space):
        return keras.Input(tuple(int(d) for d in space.shape),
                           dtype=_leaf_serving_dtype(check_leaf(space)).name, name="observations")
    return {name: keras.Input(tuple(int(d) for d in leaf.shape),
                              dtype=_leaf_serving_dtype(leaf).name, name=input_name(name))
            for name, leaf in leaves(space).items()}


def split_action_mask(space: gym.Space) -> Tuple[gym.Space, bool]:
    """A Dict space without its top-level ``"action_mask"`` key (PettingZoo's layout), and
    whether it had one: the mask goes to the action head, not to the network.

    Raises:
        InputError: if the mask is the only key.
    """
    if not (isinstance(space, gym.spaces.Dict) and ACTION_MASK_KEY in space.spaces):
        return space, False
    rest = {key: child for key, child in space.spaces.items() if key != ACTION_MASK_KEY}
    if not rest:
        raise InputError(f"observation space {space} holds an action mask and nothing else "
                         f"to observe")
    return gym.spaces.Dict(rest), True


def probe(space: gym.Space, batch: int = 2) -> Nest:
    """Zero float32 features of ``batch`` encoded observations, to build a model on."""
    return _map(space, lambda leaf: tf.zeros((batch,) + _leaf_encoded_shape(leaf), tf.float32))
