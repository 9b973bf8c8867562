"""Fully connected bodies: x -> flatten -> [concat condition] -> hidden layers -> outputs."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import keras
from keras import ops

from tfvae.config import Sizes


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """hidden: widths of the hidden layers; activation: any Keras activation name. gated:
    each hidden layer is a gated dense layer, h = activation(W x + b) * sigmoid(V x + c)
    (Dauphin et al. 2017's gated linear unit with activation "linear", the layers of
    Tomczak & Welling 2018's VampPrior networks): twice the weights of a dense layer. SiLU is
    the same unit with the gate's weights tied to the layer's (V = W, c = b)."""

    type: Literal["mlp"] = "mlp"
    hidden: Sizes = (200, 200)
    activation: str = "tanh"
    gated: bool = False


def check_activation(name: str) -> str:
    try:
        keras.activations.get(name)
    except (ValueError, TypeError):
        raise ValueError(f"unknown activation {name!r}; use a Keras activation name such as "
                         f"'relu', 'tanh', 'elu', 'gelu', 'softplus'") from None
    return name


class GatedDense(keras.layers.Layer):
    """h = activation(W x + b) * sigmoid(V x + c), with `units` outputs: one Dense layer of
    2 * units ([W V], [b c]) split in two, so one matmul computes both halves."""

    def __init__(self, units: int, activation: str = "linear", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(check_activation(activation))
        self.both = keras.layers.Dense(2 * self.units, name="value_and_gate")

    def build(self, input_shape):
        self.both.build(input_shape)
        self.built = True

    def call(self, x):
        value, gate = ops.split(self.both(x), 2, axis=-1)
        return self.activation(value) * ops.sigmoid(gate)


def dense_stack(widths, activation, prefix, gated: bool = False):
    """Hidden layers of the given widths: Dense with `activation`, or `GatedDense`."""
    if gated:
        return [GatedDense(w, activation, name=f"{prefix}{i}") for i, w in enumerate(widths)]
    return [keras.layers.Dense(w, activation=check_activation(activation), name=f"{prefix}{i}")
            for i, w in enumerate(widths)]


def with_condition(h, condition):
    return h if condition is None else ops.concatenate([h, ops.cast(condition, h.dtype)], axis=-1)


class MLPEncoder(keras.layers.Layer):
    def __init__(self, spec: MLPSpec, data_shape, condition_dim, output_units, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = data_shape
        self.condition_dim = condition_dim
        self.hidden = dense_stack(spec.hidden, spec.activation, "hidden", spec.gated)
        self.out = keras.layers.Dense(output_units, name="params")

    def build(self, input_shape=None):
        width = math.prod(self.data_shape) + self.condition_dim
        for layer in self.hidden + [self.out]:
            layer.build((None, width))
            width = layer.units
        self.built = True

    def call(self, x, condition=None, training=False):
        h = with_condition(ops.reshape(x, (-1, math.prod(self.data_shape))), condition)
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)


class MLPDecoder(keras.layers.Layer):
    def __init__(self, spec: MLPSpec, latent_dim, data_shape, params_per_dim, condition_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self.params_per_dim = params_per_dim
        self.condition_dim = condition_dim
        self.hidden = dense_stack(spec.hidden, spec.activation, "hidden", spec.gated)
        self.out = keras.layers.Dense(math.prod(data_shape) * params_per_dim, name="params")

    def build(self, input_shape=None):
        width = self.latent_dim + self.condition_dim
        for layer in self.hidden + [self.out]:
            layer.build((None, width))
            width = layer.units
        self.built = True

    def call(self, z, condition=None, training=False):
        h = with_condition(z, condition)
        for layer in self.hidden:
            h = layer(h)
        return ops.reshape(self.out(h), (-1, *self.data_shape, self.params_per_dim))
