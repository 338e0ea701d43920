"""Seeded random numbers in ops that TensorFlow, TFLite (LiteRT) and ONNX all run.

TensorFlow's stateless random ops (``StatelessRandomUniformV2``, ``StatelessMultinomial``)
are neither TFLite builtins nor ONNX operators, and the runtimes' own random operators
take their seed as a fixed attribute, not as an input. An exported policy that samples
with a seed given at call time therefore draws its noise here: a counter-based
generator, each number a keyed integer hash of its position, built from int32
multiplication, addition, xor and right shift only. The same seed gives the same numbers
in every runtime (up to the rounding of ``log`` and ``cos`` in the normal draws).

The hash is a 32-bit integer mixer of the xorshift-multiply family (two rounds of
"shift right, xor, multiply by an odd constant"), a bijection of the 32-bit integers
whose output bits each depend on every input bit. Shifts are logical: the arithmetic
shift the runtimes share is corrected on negative numbers.
"""

from __future__ import annotations

import tensorflow as tf

# Odd multipliers of the mixer, as int32 (the second is 0x846CA68B).
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B - (1 << 32))
_GOLDEN = -0x61C88647  # 0x9E3779B9 as int32: separates the streams' keys


def _shift_right(x: tf.Tensor, bits: int) -> tf.Tensor:
    """Logical right shift of int32 ``x``: the arithmetic shift with the sign bits cleared."""
    sign = tf.bitwise.right_shift(x, 31)  # -1 where negative, else 0
    return tf.bitwise.bitwise_xor(tf.bitwise.right_shift(x, bits), sign * (1 << (32 - bits)))


def _mix(x: tf.Tensor) -> tf.Tensor:
    """A bijective 32-bit hash of int32 ``x`` (multiplication wraps around)."""
    x = tf.bitwise.bitwise_xor(x, _shift_right(x, 16))
    x = x * tf.constant(_MULTIPLIERS[0], tf.int32)
    x = tf.bitwise.bitwise_xor(x, _shift_right(x, 15))
    x = x * tf.constant(_MULTIPLIERS[1], tf.int32)
    return tf.bitwise.bitwise_xor(x, _shift_right(x, 16))


def random_bits(shape, seed, stream: int = 0) -> tf.Tensor:
    """int32 hashes of each position of ``shape``, keyed by ``seed`` and ``stream``.

    Args:
        shape: 1-D int32 tensor (or list), the output's shape.
        seed: int32 [2].
        stream: Draws with different streams are independent for the same seed.
    """
    shape = tf.cast(shape, tf.int32)
    seed = tf.cast(seed, tf.int32)
    key0 = _mix(seed[0] + tf.constant(stream + 1, tf.int32) * tf.constant(_GOLDEN, tf.int32))
    key1 = _mix(tf.bitwise.bitwise_xor(seed[1], key0))
    counter = tf.reshape(tf.range(tf.reduce_prod(shape)), shape)
    return _mix(tf.bitwise.bitwise_xor(_mix(counter + key1), key0))


def uniform(shape, seed, stream: int = 0) -> tf.Tensor:
    """float32 uniform on the open interval (0, 1), on a grid of step 2**-24.

    Args:
        shape: 1-D int32 tensor (or list), the output's shape.
        seed: int32 [2].
        stream: Draws with different streams are independent for the same seed.
    """
    top_bits = _shift_right(random_bits(shape, seed, stream), 8)  # 24 bits: exact in float32
    return (tf.cast(top_bits, tf.float32) + 0.5) * (1.0 / (1 << 24))


def normal(shape, seed, stream: int = 0) -> tf.Tensor:
    """float32 standard normal draws (Box-Muller over two uniform streams).

    Args:
        shape: 1-D int32 tensor (or list), the output's shape.
        seed: int32 [2].
        stream: Draws with different streams are independent for the same seed; this
            function uses ``stream`` and ``stream + 1``.
    """
    radius = tf.sqrt(-2.0 * tf.math.log(uniform(shape, seed, stream)))
    angle = (2.0 * 3.141592653589793) * uniform(shape, seed, stream + 1)
    return radius * tf.cos(angle)
