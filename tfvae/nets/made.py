"""MADE (Germain et al. 2015): a masked autoencoder whose output i depends on inputs < i only,
the network of each autoregressive flow step (`tfvae.parts.flows`).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf



def made_degrees(event_size: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """Degrees of the units of each layer of a MADE (Germain et al. 2015): inputs 1..L,
    hidden units cycling over 1..L-1 (all 0 when L = 1: such units see no input)."""
    degrees = [np.arange(1, event_size + 1)]
    for width in hidden:
        if event_size == 1:
            degrees.append(np.zeros(width, dtype=int))
        else:
            degrees.append(np.arange(width) % (event_size - 1) + 1)
    return degrees


def made_masks(event_size: int, hidden: tuple[int, ...], params: int) -> list[np.ndarray]:
    """0/1 kernel masks [fan_in, fan_out]: hidden unit k sees input i iff deg(k) >= i;
    output i sees unit k iff i > deg(k). So output i depends on inputs < i only.
    The output layer has `params` columns per dimension, column c = i * params + p."""
    degrees = made_degrees(event_size, hidden)
    masks = [(d_out[None, :] >= d_in[:, None]).astype("float32")
             for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out_degrees = np.repeat(np.arange(1, event_size + 1), params)
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype("float32"))
    return masks


def _lift(term, h):
    """`term` [B, W] with leading axes of size 1 added up to h's rank [..., B, W], so that
    h + term broadcasts without changing rank. The result is the same as the plain sum's; the
    plain sum of a rank-3 h and a rank-2 term, followed by ELU, broke oneDNN's graph rewrite
    (TensorFlow 2.20-2.21 on an AVX-512 AMD EPYC): with static shapes [1, 1, W] and [1, W] (one
    sample of one example) the gradient failed with "EluGrad ... must have the same size and
    shape. Input 0: [1,1,W] != input 1: [1,W]"."""
    extra = (h.shape.rank or 0) - (term.shape.rank or 0)
    return term[(None,) * extra + (Ellipsis,)] if extra > 0 else term


class MADE(keras.layers.Layer):
    """Autoregressive network: z [..., L] (and a context [B, H]) -> [..., L, params], where
    output [..., i, :] depends on z[..., :i] and the context only.

    The context enters the first hidden layer and the output layer through unmasked
    kernels (it does not depend on z, so it cannot break the autoregressive property; the
    output kernel lets output 1, which sees no z, depend on x). A context [B, H]
    broadcasts against z [k, B, L]. The output layer and its context kernel start at zero.
    """

    def __init__(self, event_size: int, hidden, activation: str = "elu", context_size: int = 0,
                 params: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.event_size, self.hidden = event_size, tuple(hidden)
        self.activation = keras.activations.get(activation)
        self.context_size, self.params = context_size, params
        self.masks = [tf.constant(m) for m in made_masks(event_size, self.hidden, params)]

    def build(self, input_shape=None):
        widths = (self.event_size, *self.hidden, self.event_size * self.params)
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            init = "zeros" if last else "glorot_uniform"
            self.kernels.append(self.add_weight(shape=(fan_in, fan_out), initializer=init, name=f"kernel{i}"))
            self.biases.append(self.add_weight(shape=(fan_out,), initializer="zeros", name=f"bias{i}"))
        self.context_kernel = self.output_context_kernel = None
        if self.context_size:
            self.context_kernel = self.add_weight(shape=(self.context_size, widths[1]), initializer="glorot_uniform",
                                                  name="context_kernel")
            self.output_context_kernel = self.add_weight(shape=(self.context_size, widths[-1]), initializer="zeros",
                                                         name="output_context_kernel")
        self.built = True

    def output_layer_weights(self) -> list:
        """The weights that start at zero: with them at zero the MADE outputs 0."""
        out = [self.kernels[-1], self.biases[-1]]
        return out + ([self.output_context_kernel] if self.output_context_kernel is not None else [])

    def call(self, z, context=None):
        h = z
        last = len(self.kernels) - 1
        for i, (kernel, bias, mask) in enumerate(zip(self.kernels, self.biases, self.masks)):
            h = tf.linalg.matmul(h, tf.cast(kernel, h.dtype) * tf.cast(mask, h.dtype)) + tf.cast(bias, h.dtype)
            if self.context_size and i in (0, last):
                context_kernel = self.context_kernel if i == 0 else self.output_context_kernel
                h = h + _lift(tf.linalg.matmul(tf.cast(context, h.dtype), tf.cast(context_kernel, h.dtype)), h)
            if i < last:
                h = self.activation(h)
        return tf.reshape(h, tf.concat([tf.shape(h)[:-1], [self.event_size, self.params]], 0))


__all__ = ["MADE", "made_degrees", "made_masks"]
