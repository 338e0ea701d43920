"""TFLite (LiteRT) and ONNX versions of an exported SavedModel.

Both converters take the SavedModel's signatures as they are: ``serving_default``,
``sample``, ``distribution`` and ``value`` (when present). They run because every op
in them is a TFLite builtin and has an ONNX operator: in particular the ``sample``
signature draws its noise with :mod:`pg_keras.portable_random`, not with TensorFlow's
stateless random ops, which neither runtime has.

A converted file is opened in its runtime before it is kept (the LiteRT interpreter,
an onnxruntime session): tf2onnx reports success even when it leaves an op it could not
convert in the graph, and only loading the file shows it. The runtimes drop the
SavedModel's assertions: a converted policy does not check the shape or the finiteness
of its inputs beyond what the runtime itself checks.

Needs the ``deploy`` extra (``pip install -e ".[deploy]"``): tf2onnx, onnx and
onnxruntime for ONNX, ai-edge-litert for TFLite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import List

from pg_keras.config import InputError

# TensorFlow is imported inside the functions that convert: check_format runs in the
# launchers' flag checks, before TensorFlow is loaded.

FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_FILENAME = "policy.tflite"
# BitwiseXor, which the portable sampler's hash needs, is in ONNX from opset 18.
ONNX_OPSET = 18
_PACKAGES = {"saved_model": (), "tflite": ("ai_edge_litert",),
             "onnx": ("tf2onnx", "onnx", "onnxruntime")}


def check_format(format: str) -> None:
    """Refuses an unknown format, or one whose packages are not installed, in one line.

    Raises:
        InputError: naming the format, and the extra to install when packages are missing.
    """
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; received "
                         f"format={format!r}")
    missing = [name for name in _PACKAGES[format] if not _installed(name)]
    if missing:
        raise InputError(
            f"format={format!r} needs {', '.join(missing)}, not installed; install the "
            f"deploy extra: pip install -e \".[deploy]\"")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install, or a blocked one
        return False


def to_tflite(saved_model_dir: str, output_dir: str) -> List[str]:
    """Writes ``output_dir/policy.tflite`` holding every signature of the SavedModel.

    Returns:
        The path written, in a list.
    """
    check_format("tflite")
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    names = _signature_names(saved_model_dir)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=names)
    model = converter.convert()
    found = sorted(Interpreter(model_content=model).get_signature_list())
    if found != names:
        raise RuntimeError(f"the TFLite model holds signatures {found}; expected {names}")
    path = os.path.join(output_dir, TFLITE_FILENAME)
    with open(path, "wb") as f:
        f.write(model)
    return [path]


def _signature_names(saved_model_dir: str) -> List[str]:
    """The SavedModel's signature keys, read from its proto (loading it costs seconds)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    # Keys starting with "__" are TensorFlow's own (the init op), not signatures.
    return sorted(k for k in proto.meta_graphs[0].signature_def if not k.startswith("__"))


def to_onnx(saved_model_dir: str, output_dir: str) -> List[str]:
    """Writes ``output_dir/<signature>.onnx`` for every signature of the SavedModel.

    Inputs and outputs keep the signature's names (``observations``, ``seed``;
    ``actions``, ``log_probs``, ``logits``...).

    Returns:
        The paths written.
    """
    check_format("onnx")
    import onnxruntime
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    paths = []
    with _quiet("tf2onnx", "tensorflow"):
        for name in sorted(loaded.signatures):
            data = _onnx_model(loaded, loaded.signatures[name], name).SerializeToString()
            # Fails on an op left unconverted (an operator no ONNX domain defines).
            onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
            paths.append(os.path.join(output_dir, f"{name}.onnx"))
            with open(paths[-1], "wb") as f:
                f.write(data)
    return paths


def _onnx_model(loaded, signature, name: str):
    """One signature of a loaded SavedModel as an ONNX ModelProto, its inputs and outputs
    named as in the signature (the steps of tf2onnx's command line, on a model loaded
    once for all signatures)."""
    import tensorflow as tf
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import tf_loader

    specs = tf.nest.flatten(signature.structured_input_signature)
    # The caller's inputs come first; the captured variables and constants follow.
    input_names = [t.name for t in signature.inputs[:len(specs)]]
    output_names = [t.name for t in signature.outputs]
    renames = dict(zip(input_names, [spec.name for spec in specs]))
    # Outputs are flattened in the sorted order of the signature's dict keys.
    renames.update(zip(output_names, sorted(signature.structured_outputs)))
    graph_def, _ = tf_loader.from_trackable(loaded, signature, input_names, output_names,
                                            False)
    model, _ = tf2onnx_convert._convert_common(  # what tf2onnx's command line calls
        graph_def, name=name, opset=ONNX_OPSET, input_names=input_names,
        output_names=output_names, tensors_to_rename=renames)
    return model


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Hides the converters' INFO and WARNING lines (their errors still show)."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
