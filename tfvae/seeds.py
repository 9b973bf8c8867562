"""Stateless seeds and the random draws of compiled steps.

A seed is an int32 tensor of shape [2]; the same seed gives the same draws. Every draw a
model makes inside a training step comes from `normal` or `uniform` here: Philox-4x32-10
(Salmon et al. 2011) keyed directly by the seed's 64 bits, counter 0,

    key = uint32(seed[0]) | uint32(seed[1]) << 32,   draws = Philox(key, counter 0, 1, 2, ...)

Why not `tf.random.stateless_normal(shape, seed)`, which TFP's samplers call: its default
algorithm ("auto_select") first scrambles the seed into a key and counter
(`StatelessRandomGetKeyCounter`, ten Philox rounds of 64-bit multiplies). Under XLA that
scalar chain is fused into the elementwise kernel that makes the draws and recomputed for
every element: drawing the 100 x 50 noise of a `vae_bmnist` step from the model's
SeedGenerator took 2.7 ms there, against 0.12 ms keyed directly, a third of the whole step
(docs/performance.md). Philox is a counter-based generator whose streams for distinct keys
are independent by design, so the scramble adds nothing a model needs.

The CPU/GPU kernels and XLA implement Philox normals with different bit-to-float mappings,
so a draw made inside an XLA-compiled step differs from the same draw outside one (equal in
distribution, not bit for bit), as for every TensorFlow stateless draw.
"""
from __future__ import annotations

import tensorflow as tf

PHILOX = 1   # tf.random.Algorithm.PHILOX


def as_seed(seed) -> tf.Tensor:
    """A stateless seed (int32 tensor of shape [2]) from an int or a length-2 sequence/tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or (seed.shape[0] is not None and seed.shape[0] != 2):
        raise ValueError(f"a seed is an int or a pair of ints, got shape {seed.shape}")
    return tf.cast(seed, tf.int32)


def philox_key(seed) -> tf.Tensor:
    """The Philox key [1] (uint64) of a seed [2]: its two 32-bit words, low word first."""
    words = tf.cast(tf.bitcast(tf.cast(seed, tf.int32), tf.uint32), tf.uint64)
    return tf.reshape(tf.bitwise.bitwise_or(words[0], tf.bitwise.left_shift(words[1], tf.constant(32, tf.uint64))),
                      [1])


def _philox(seed) -> dict:
    """The key, counter (0) and algorithm arguments of TF's raw stateless ops for `seed`."""
    return dict(key=philox_key(seed), counter=tf.zeros([2], tf.uint64), alg=PHILOX)


def normal(shape, seed, dtype=tf.float32) -> tf.Tensor:
    """Standard normal draws of `shape` from the stateless `seed` [2] (see the module doc)."""
    return tf.raw_ops.StatelessRandomNormalV2(shape=shape, dtype=dtype, **_philox(seed))


def integers(shape, seed, maxval) -> tf.Tensor:
    """Integers drawn uniformly from {0, ..., maxval - 1} (int32), of `shape`, from `seed` [2]."""
    return tf.raw_ops.StatelessRandomUniformIntV2(shape=shape, minval=tf.constant(0, tf.int32),
                                                  maxval=tf.cast(maxval, tf.int32), **_philox(seed))


def uniform(shape, seed, dtype=tf.float32) -> tf.Tensor:
    """Uniform draws on [0, 1) of `shape` from the stateless `seed` [2]."""
    return tf.raw_ops.StatelessRandomUniformV2(shape=shape, dtype=dtype, **_philox(seed))
