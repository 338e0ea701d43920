"""Self-contained SavedModels of a policy: signatures, atomic write, loading.

What is inside. The exported graph holds everything between a raw observation and the
action ``env.step`` receives: the observation encoding (one-hot for ``Discrete``
observation spaces), the normalization statistics (restored variables: they are the
``RunningNormalization`` layer's weights), the policy network, and the head's
post-processing (clipping or squashing to the Box bounds, the integer dtype and start
offset of discrete spaces). Distributions are traced into plain TensorFlow ops, so loading
and running the model needs TensorFlow alone: neither pg_keras nor
tensorflow-probability.

What it offers. Signatures, for ``saved_model_cli``, TF Serving, other languages and the
TFLite and ONNX converters (the observation input is named ``observations``, batched
``[None, *obs_shape]``, float32; the space's own dtype for integer Box spaces such as
uint8 images, cast inside; int32 for a ``Discrete`` observation space):

    serving_default  observations           -> {"actions": greedy env action}
    sample           observations, seed [2] -> {"actions": sampled env action,
                                                "log_probs": [B] of the raw sample}
    distribution     observations           -> the head's parameters, e.g. {"logits"}
                                               or {"mean", "std"}
    value            observations           -> {"values": [B]}   (with a value network)

A Dict or Tuple observation space gives one input per leaf instead of ``observations``,
named by ``pg_keras.spaces.input_name`` (``cue``, ``pair_0`` for the leaf ``pair/0``);
the Python callables take the dict ``{leaf name: batch}``. A Discrete or MultiDiscrete
action head adds ``greedy_masked``, ``sample_masked`` and ``distribution_masked``: the
same with an ``action_mask`` input (bool [None, n], or [None, sum(nvec)]), over the legal
actions only; a row allowing none fails with "action mask allows no action".

``sample`` draws with the head's portable sampler (noise hashed from the seed in ops that
TFLite and ONNX run; see pg_keras.portable_random), so the converted models sample as the
SavedModel does. Plain callables on the object ``tf.saved_model.load`` returns, for Python:

    loaded(obs), loaded.greedy(obs)  -> greedy env actions
    loaded.sample(obs, seed)         -> sampled env actions (seed: int32 or int64 [2])
    loaded.distribution(obs)         -> dict of the head's parameters
    loaded.value(obs)                -> [B] values            (with a value network)

which take float32 or float64 batches (int32 or int64 for ``Discrete`` observations), or
batches of the observation space's own dtype (uint8 images), as numpy arrays or tensors;
the cast to the policy's dtype is inside. Every function and signature checks its input
in the graph: a batch of the wrong shape or rank (an unbatched observation included)
fails with an ``InvalidArgumentError`` that names the expected shape, not deep inside a
kernel, and a NaN or inf observation fails with one that says observations must be
finite, rather than becoming a valid-looking action.

A recurrent policy's export takes and returns its state instead: see
pg_keras.export_recurrent.

Writing is atomic on a local filesystem: the model is written to a temporary directory
next to ``export_dir`` and renamed into place, so a crash leaves either the previous
export or none, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import tensorflow as tf

from pg_keras import convert, export_recurrent, faults, spaces
from pg_keras.config import InputError
from pg_keras.policy import Policy

CONFIG_FILENAME = "config.json"

# Observation dtypes each Python callable accepts, besides the env's own (uint8 images):
# numpy produces float64 and int64 by default, and a model that refused them would push
# every caller to cast by hand.
_ACCEPTED_DTYPES = {tf.float32: (tf.float32, tf.float64), tf.int32: (tf.int32, tf.int64)}
_SEED_DTYPES = (tf.int32, tf.int64)


def export_policy(policy: Policy, export_dir: str | os.PathLike, *, config: Optional[Any] = None,
                  overwrite: bool = False, format: str = "saved_model") -> str:
    """Writes ``policy`` as a self-contained TensorFlow SavedModel, or converted.

    See the module docstring for the signatures and callables the model offers. The
    directory is written in full under a temporary name next to ``export_dir`` and then
    renamed into place; with ``overwrite`` an existing export is renamed aside first and
    deleted only once the new one is in place.

    ``format="tflite"`` writes ``policy.tflite`` (every signature), ``"onnx"`` one
    ``<signature>.onnx`` per signature (pg_keras.convert; the ``deploy`` extra).

    Args:
        policy: The policy to export (``TrainResult.policy`` or ``Learner.policy``).
        export_dir: Directory to create. Its parent is created if missing.
        config: Optional ``pg_keras.Config`` (anything with ``to_dict()``); written as
            ``config.json`` (with its ``format_version``, see ``pg_keras.config``) at the
            top of the directory, next to ``saved_model.pb``.
        overwrite: Replace an existing ``export_dir``; without it, an existing one is refused.
        format: ``"saved_model"``, ``"tflite"`` or ``"onnx"``.

    Returns:
        The absolute path of the export directory.

    Raises:
        ValueError: if ``export_dir`` exists and ``overwrite`` is False or is not a
            directory, if ``policy`` is not a ``Policy``, or if ``format`` is unknown or
            its packages are not installed.
    """
    _check_policy(policy, format)
    export_dir = os.path.abspath(os.fspath(export_dir))
    _check_target(export_dir, overwrite)
    # Serialized before anything is written, so a config that is not JSON fails early.
    config_text = None if config is None else _config_text(config)
    module, signatures = _build_module(policy)
    temp_dir = _temp_dir(export_dir)
    try:
        _write(module, signatures, temp_dir, format)
        _make_readable(temp_dir)
        if config_text is not None:
            with open(os.path.join(temp_dir, CONFIG_FILENAME), "w") as f:
                f.write(config_text)
        _move_into_place(temp_dir, export_dir, overwrite)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return export_dir


def _config_text(config) -> str:
    """``config.json``'s text: the config's stored form (or ``to_dict()``), sorted."""
    stored = config.to_stored() if hasattr(config, "to_stored") else config.to_dict()
    return json.dumps(stored, indent=2, sort_keys=True) + "\n"


def _temp_dir(export_dir: str) -> str:
    """A new directory next to ``export_dir`` (its parent created if missing) to write the
    export in, once the abandoned ones of dead writers are removed."""
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_abandoned_temp_dirs(export_dir)
    # Same parent, hence same filesystem: the renames into place are atomic. The pid in
    # the name tells a later export whether the writer is still alive.
    return tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-{os.getpid()}-",
                            dir=parent)


def _check_policy(policy, format: str) -> None:
    """Refuses what is not a Policy, and a format the policy cannot be converted to."""
    convert.check_format(format)
    if not isinstance(policy, Policy):
        hint = " (pass result.policy)" if hasattr(policy, "policy") else ""
        raise InputError(f"policy must be a pg_keras.Policy{hint}; "
                         f"received {type(policy).__name__}")
    if format != "saved_model" and export_recurrent.is_recurrent(policy):
        raise InputError(f"format={format!r} is not available for a recurrent policy yet; "
                         "export it with format='saved_model'")


def _make_readable(directory: str) -> None:
    """mkdtemp makes a directory private (0700); an export is for others to read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)


def _write(module: tf.Module, signatures, directory: str, format: str) -> None:
    """Saves the model into ``directory``, converted there when ``format`` asks."""
    if format == "saved_model":
        tf.saved_model.save(module, directory, signatures=signatures)
        return
    saved_model_dir = tempfile.mkdtemp(prefix=".saved_model-", dir=directory)
    try:
        tf.saved_model.save(module, saved_model_dir, signatures=signatures)
        {"tflite": convert.to_tflite, "onnx": convert.to_onnx}[format](saved_model_dir,
                                                                       directory)
    finally:
        shutil.rmtree(saved_model_dir, ignore_errors=True)


def load_policy(path: str | os.PathLike):
    """Loads an exported policy; the same as ``tf.saved_model.load(path)``.

    Provided for symmetry with :func:`export_policy`; a program that serves the policy
    does not need pg_keras and can call ``tf.saved_model.load`` itself. Keep the returned
    object referenced while you use its functions: they read its variables, which go
    when it is garbage-collected (``load_policy(p).greedy(obs)`` in one expression fails).

    Args:
        path: A directory written by :func:`export_policy`.

    Returns:
        The restored object: ``loaded(obs)`` / ``loaded.greedy(obs)``, ``loaded.sample(obs,
        seed)``, ``loaded.distribution(obs)``, ``loaded.value(obs)`` (with a value
        network), and ``loaded.signatures``.
    """
    return tf.saved_model.load(os.fspath(path))


def _remove_abandoned_temp_dirs(export_dir: str) -> None:
    """Deletes the temporary directories of exports to ``export_dir`` whose process died
    (a kill in the middle of writing leaves one behind)."""
    prefix = f".{os.path.basename(export_dir)}.tmp-"
    parent = os.path.dirname(export_dir)
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        pid = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _check_target(export_dir: str, overwrite: bool) -> None:
    if os.path.lexists(export_dir):
        if not os.path.isdir(export_dir) or os.path.islink(export_dir):
            # A symlink is refused too: renaming over it would replace the link, not
            # the directory it points to.
            raise InputError(f"export_dir exists and is not a directory (or is a symlink); "
                             f"received export_dir={export_dir!r}")
        if not overwrite:
            raise InputError(f"export_dir already exists; pass overwrite=True to replace it; "
                             f"received export_dir={export_dir!r}")


def _move_into_place(temp_dir: str, export_dir: str, overwrite: bool) -> None:
    """Renames ``temp_dir`` to ``export_dir``, setting an existing export aside first.

    Never leaves a directory that mixes two models: ``export_dir`` is always either the old
    export, absent for an instant between two renames, or the new one.
    """
    faults.point("export")
    # Checked again: another process may have written export_dir while we traced and saved.
    _check_target(export_dir, overwrite)
    old_dir = None
    if os.path.isdir(export_dir):
        old_dir = os.path.join(os.path.dirname(export_dir),
                               f".{os.path.basename(export_dir)}.old-{uuid.uuid4().hex[:8]}")
        os.rename(export_dir, old_dir)
    try:
        os.rename(temp_dir, export_dir)
    except BaseException:
        if old_dir is not None:
            os.rename(old_dir, export_dir)
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


class _Inputs(NamedTuple):
    """What the exported functions take as observations (of one leaf, for a nested space)."""

    name: str  # the input's name: "observations", or the leaf's spaces.input_name
    label: str  # how errors name it: "observations" or "observations[a/0]"
    shape: Tuple[int, ...]  # one observation's shape
    dtype: tf.DType  # the policy's own (float32, or int32 for Discrete spaces)
    signature_dtype: tf.DType  # the signatures' (the space's own for integer images)
    accepted: Tuple[tf.DType, ...]  # the Python callables'


def _inputs(policy: Policy):
    """The :class:`_Inputs` of the policy's observations: one, or a dict by leaf name."""
    space = policy.observation_space
    if spaces.is_nested(space):
        return {name: _leaf_inputs(leaf, spaces.input_name(name), f"observations[{name}]")
                for name, leaf in spaces.leaves(space).items()}
    return _leaf_inputs(space, "observations", "observations")


def _leaf_inputs(space, name: str, label: str) -> _Inputs:
    dtype = spaces.observation_dtype(space)
    accepted = list(_ACCEPTED_DTYPES[dtype])
    space_dtype = getattr(space, "dtype", None)
    if space_dtype is not None and tf.as_dtype(space_dtype) not in accepted:
        accepted.append(tf.as_dtype(space_dtype))
    return _Inputs(name, label, tuple(int(d) for d in space.shape), dtype,
                   spaces.serving_dtype(space), tuple(accepted))


def _observation_check(inputs) -> Callable:
    """The function every exported function starts with: observations (a dict of them
    by leaf name for a nested space) of any shape in the policy's dtype -> the batched
    shape, or an error that names the expected shape (or the non-finite input)."""
    if not isinstance(inputs, dict):
        return _leaf_check(inputs)
    checks = {name: _leaf_check(leaf) for name, leaf in inputs.items()}
    return lambda observations: {name: check(observations[name])
                                 for name, check in checks.items()}


def _leaf_check(inputs: _Inputs) -> Callable[[tf.Tensor], tf.Tensor]:
    """:func:`_observation_check` of one input."""
    expected = "[" + ", ".join(["None"] + [str(d) for d in inputs.shape]) + "]"
    dtypes = ", ".join(d.name for d in inputs.accepted)
    message = (f"{inputs.label} must have shape {expected} (a batch; for one observation "
               f"add a batch axis, obs[None]) and dtype {dtypes} for this policy; "
               f"received shape")

    def check(observations):
        shape = tf.shape(_without_static_shape(observations), out_type=tf.int32)
        # A wrong rank is tested first: comparing shape[1:] with the expected shape would
        # itself fail on a length mismatch, with a message about the comparison.
        shape_ok = tf.cond(
            tf.equal(tf.size(shape), len(inputs.shape) + 1),
            lambda: tf.reduce_all(tf.equal(shape[1:], tf.constant(inputs.shape, tf.int32))),
            lambda: tf.constant(False))

        def refuse():
            tf.debugging.Assert(False, [message, shape], summarize=16)
            return tf.zeros((0,) + inputs.shape, observations.dtype)

        # A branch, not just an assertion before the networks: a caller's known shape
        # would otherwise flow into the layers and fail a kernel's static check first.
        observations = tf.cond(shape_ok, lambda: tf.identity(observations), refuse)
        # The static shape the networks were built for, now that it is known to hold.
        observations = tf.reshape(observations, (-1,) + inputs.shape)
        if inputs.dtype.is_floating:
            # NaN logits would still give an argmax: a garbage observation must not
            # become a valid-looking action. (float64 beyond float32's range is inf here.)
            observations = tf.debugging.check_numerics(
                observations, f"{inputs.label} must be finite (no NaN or inf)")
        return observations

    return check


def _without_static_shape(observations: tf.Tensor) -> tf.Tensor:
    """``observations`` with its static shape forgotten.

    A signature's input has the static shape [None, *obs_shape]; TensorFlow folds a rank
    test on it to True when it optimizes the graph, so an unbatched observation would
    pass the test and fail deep inside. A branch whose arms differ in rank hides the rank
    (the predicate is always true, but not foldable: the batch size is unknown).
    """
    return tf.cond(tf.size(observations) >= 0, lambda: observations,
                   lambda: tf.zeros([0], observations.dtype))


def _policy_functions(policy: Policy, check: Callable) -> Dict[str, Callable]:
    """name -> function of (checked) observations: the signatures' outputs."""
    head = policy.head

    def greedy(observations):
        return {"actions": head.to_env(head.greedy(policy.params(check(observations))))}

    def sample(observations, seed):
        params = policy.params(check(observations))
        raw = head.portable_sample(params, tf.cast(seed, tf.int32))
        return {"actions": head.to_env(raw), "log_probs": head.portable_log_prob(params, raw)}

    def distribution(observations):
        return dict(head.parameters(policy.params(check(observations))))

    functions = {"greedy": greedy, "sample": sample, "distribution": distribution}
    # A recurrent value model beside a feed-forward policy needs a state the feed-forward
    # signatures do not carry: such an export has no value signature.
    if policy.has_value and not policy.state_sizes["value"]:
        functions["value"] = lambda observations: {"values": policy.normalized_value(
            check(observations)) * policy.return_scale()}
    if head.mask_size:
        functions.update(_masked_functions(policy, check))
    return functions


def _masked_functions(policy: Policy, check: Callable) -> Dict[str, Callable]:
    """greedy, sample and distribution over the actions an ``action_mask`` allows."""
    head = policy.head

    def greedy_masked(observations, action_mask):
        params = policy.params(check(observations))
        return {"actions": head.to_env(head.greedy(params, action_mask))}

    def sample_masked(observations, seed, action_mask):
        params = policy.params(check(observations))
        raw = head.portable_sample(params, tf.cast(seed, tf.int32), action_mask)
        return {"actions": head.to_env(raw),
                "log_probs": head.portable_log_prob(params, raw, action_mask)}

    def distribution_masked(observations, action_mask):
        return dict(head.parameters(policy.params(check(observations)), action_mask))

    return {"greedy_masked": greedy_masked, "sample_masked": sample_masked,
            "distribution_masked": distribution_masked}


def _extra_specs(name: str, width: int, seed_dtype=tf.int32) -> List[tf.TensorSpec]:
    """The inputs a function takes after the observations: a seed, an action mask."""
    specs = [tf.TensorSpec([2], seed_dtype, name="seed")] if "sample" in name else []
    if name.endswith("_masked"):
        specs.append(tf.TensorSpec([None, width], tf.bool, name="action_mask"))
    return specs


def _specs(inputs, shape: Callable[[_Inputs], Any], dtype: Callable[[_Inputs], Any]):
    """The TensorSpec (or dict of them) of ``inputs``, named by their input names."""
    return spaces.nest_map(lambda i: tf.TensorSpec(shape(i), dtype(i), name=i.name), inputs)


def _cast(observations, inputs):
    """Observations (or a dict of them) cast to the policy's dtypes."""
    return spaces.nest_map(lambda i, x: tf.cast(x, i.dtype), inputs, observations)


def _traced(functions: Dict[str, Callable], inputs, width: int) -> Dict[str, Any]:
    """Each function traced once, on observations of any shape in the policy's dtype: the
    callables and signatures below cast to it and call these, so the graph is saved once."""
    spec = _specs(inputs, lambda i: None, lambda i: i.dtype)
    return {name: tf.function(fn, input_signature=[spec] + _extra_specs(name, width))
            for name, fn in functions.items()}


def _callables(traced: Dict[str, Any], inputs, width: int):
    """The Python callables (greedy actions, sampled actions, parameters, values) and
    their traces: any shape, so the check gives the error, not the dispatcher; each
    accepted dtype traced, so the loaded object dispatches on it."""
    keys = {"greedy": "actions", "sample": "actions", "value": "values",
            "greedy_masked": "actions", "sample_masked": "actions"}

    def make(name):
        def call(observations, *extra):
            extra = [tf.cast(x, spec.dtype) for x, spec in zip(extra, _extra_specs(name, width))]
            outputs = traced[name](_cast(observations, inputs), *extra)
            return outputs[keys[name]] if name in keys else outputs
        return tf.function(call)

    callables = {name: make(name) for name in traced}
    concrete: List[Any] = []
    for dtypes in _accepted_sets(inputs):
        any_shape = _specs(inputs, lambda i: None, lambda i: dtypes[i.name])
        for name, fn in callables.items():
            seed_dtypes = _SEED_DTYPES if "sample" in name else _SEED_DTYPES[:1]
            for seed_dtype in seed_dtypes:
                concrete.append(fn.get_concrete_function(
                    any_shape, *_extra_specs(name, width, seed_dtype)))
    return callables, concrete


def _accepted_sets(inputs) -> List[Dict[str, tf.DType]]:
    """The dtypes (by input name) each Python callable is traced for: every accepted
    dtype of a leaf space; for a nested one, every leaf in its policy dtype, in its
    serving dtype, or in NumPy's default (float64, int64), not every mixture."""
    if not isinstance(inputs, dict):
        return [{inputs.name: dtype} for dtype in inputs.accepted]
    leaves = list(inputs.values())
    numpy_default = {tf.float32: tf.float64, tf.int32: tf.int64}
    sets = [{i.name: i.dtype for i in leaves}, {i.name: i.signature_dtype for i in leaves},
            {i.name: numpy_default.get(i.dtype, i.dtype) for i in leaves}]
    return [dtypes for k, dtypes in enumerate(sets) if dtypes not in sets[:k]]


def _signatures(traced: Dict[str, Any], inputs, width: int):
    """The batched static shape and the space's own dtype: what saved_model_cli, TF
    Serving and the converters show and check (one input per leaf of a nested space,
    named by ``spaces.input_name``)."""
    batch = _specs(inputs, lambda i: (None,) + i.shape, lambda i: i.signature_dtype)

    def make(name):
        def call(observations, *extra):
            return traced[name](_cast(observations, inputs), *extra)
        specs = [batch] + _extra_specs(name, width)
        return tf.function(call, input_signature=specs).get_concrete_function()

    return {("serving_default" if name == "greedy" else name): make(name) for name in traced}


def _build_module(policy: Policy):
    """The tf.Module to save and its signatures, all traced from ``policy``.

    The policy itself is not saved (it holds Keras layers and Python objects a loader
    would have to rebuild); only the traced functions and the variables they read are.
    """
    inputs, width = _inputs(policy), policy.head.mask_size or 0
    if export_recurrent.is_recurrent(policy):
        module, signatures, concrete = export_recurrent.build_module(
            policy, inputs, _observation_check(inputs), _cast, _specs)
    else:
        traced = _traced(_policy_functions(policy, _observation_check(inputs)), inputs, width)
        callables, concrete = _callables(traced, inputs, width)
        signatures = _signatures(traced, inputs, width)
        module = tf.Module(name="exported_policy")
        for name, fn in callables.items():
            setattr(module, name, fn)
        # The loader gives the restored object a __call__ when the saved one has one.
        module.__call__ = callables["greedy"]
    # Every variable the functions read must be tracked by the saved object, or saving
    # refuses; collecting them from the traces also catches variables a user's model or
    # the return scale keeps outside the Keras models.
    module.policy_variables = _captured_variables(concrete + list(signatures.values()))
    return module, signatures


def _captured_variables(concrete_functions) -> List[tf.Variable]:
    seen, variables = set(), []
    for fn in concrete_functions:
        for variable in fn.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables
