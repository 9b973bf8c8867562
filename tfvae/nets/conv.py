"""Convolutional bodies for (H, W, C) images of any size.

Encoder: stride-2 convolutions (one per entry of `filters`) -> flatten -> [concat condition]
-> dense layers -> outputs. Decoder: the mirror image; it starts from a grid of
ceil(H / 2^n) x ceil(W / 2^n), upsamples n times with stride-2 transposed convolutions
and crops to (H, W), so sizes that are not multiples of 2^n (28 with n=3) work too.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import keras
from keras import ops

from tfvae.config import PositiveInt, Sizes
from tfvae.nets.mlp import check_activation, dense_stack, with_condition


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """filters: channels of each stride-2 conv; dense: widths of the dense layers after them."""

    type: Literal["conv"] = "conv"
    filters: Sizes = (32, 64)
    kernel_size: PositiveInt = 4
    dense: Sizes = (256,)
    activation: str = "relu"


def check_image_shape(data_shape):
    if len(data_shape) != 3:
        raise ValueError(f"conv networks need images shaped (height, width, channels), got {data_shape}")


class ConvEncoder(keras.layers.Layer):
    def __init__(self, spec: ConvSpec, data_shape, condition_dim, output_units, **kwargs):
        super().__init__(**kwargs)
        check_image_shape(data_shape)
        self.data_shape = data_shape
        self.condition_dim = condition_dim
        act = check_activation(spec.activation)
        self.convs = [keras.layers.Conv2D(f, spec.kernel_size, strides=2, padding="same", activation=act,
                                          name=f"conv{i}") for i, f in enumerate(spec.filters)]
        self.hidden = dense_stack(spec.dense, spec.activation, "dense")
        self.out = keras.layers.Dense(output_units, name="params")

    def build(self, input_shape=None):
        h, w, c = self.data_shape
        for conv in self.convs:
            conv.build((None, h, w, c))
            h, w, c = math.ceil(h / 2), math.ceil(w / 2), conv.filters
        width = h * w * c + self.condition_dim
        for layer in self.hidden + [self.out]:
            layer.build((None, width))
            width = layer.units
        self.built = True

    def call(self, x, condition=None, training=False):
        h = x
        for conv in self.convs:
            h = conv(h)
        h = with_condition(ops.reshape(h, (ops.shape(h)[0], -1)), condition)
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)


class ConvDecoder(keras.layers.Layer):
    def __init__(self, spec: ConvSpec, latent_dim, data_shape, params_per_dim, condition_dim, **kwargs):
        super().__init__(**kwargs)
        check_image_shape(data_shape)
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self.params_per_dim = params_per_dim
        self.condition_dim = condition_dim
        height, width, channels = data_shape
        n = len(spec.filters)
        self.grid = (math.ceil(height / 2**n), math.ceil(width / 2**n), spec.filters[-1])
        act = check_activation(spec.activation)
        self.hidden = dense_stack(spec.dense, spec.activation, "dense")
        self.to_grid = keras.layers.Dense(math.prod(self.grid), activation=act, name="to_grid")
        # Upsampling path: filters reversed, the last layer emits the likelihood parameters.
        out_channels = list(reversed(spec.filters[:-1])) + [channels * params_per_dim]
        self.deconvs = [
            keras.layers.Conv2DTranspose(f, spec.kernel_size, strides=2, padding="same",
                                         activation=None if i == n - 1 else act, name=f"deconv{i}")
            for i, f in enumerate(out_channels)]

    def build(self, input_shape=None):
        width = self.latent_dim + self.condition_dim
        for layer in self.hidden + [self.to_grid]:
            layer.build((None, width))
            width = layer.units
        h, w, c = self.grid
        for deconv in self.deconvs:
            deconv.build((None, h, w, c))
            h, w, c = 2 * h, 2 * w, deconv.filters
        self.built = True

    def call(self, z, condition=None, training=False):
        h = with_condition(z, condition)
        for layer in self.hidden:
            h = layer(h)
        h = ops.reshape(self.to_grid(h), (-1, *self.grid))
        for deconv in self.deconvs:
            h = deconv(h)
        height, width, channels = self.data_shape
        h = h[:, :height, :width, :]
        return ops.reshape(h, (-1, height, width, channels, self.params_per_dim))
