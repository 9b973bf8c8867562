"""Checks on what users pass to the Python API, with errors that say what was expected.

Shapes are checked on every call (static shapes suffice). Values (finite, inside the
likelihood's support, non-empty) are checked when they are concrete, i.e. outside compiled
graphs: in `fit` the data has already passed these checks at the dataset boundary.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _is_concrete(x) -> bool:
    return not isinstance(x, tf.Tensor) or tf.executing_eagerly()


def as_float_tensor(value, what: str):
    """`value` as a float32 tensor (or the tensor itself); ValueError for non-numeric input."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        if not (value.dtype.is_floating or value.dtype.is_integer or value.dtype.is_bool):
            raise ValueError(f"{what} must be numeric, got a tensor of dtype {value.dtype.name}")
        return tf.cast(value, tf.float32) if value.dtype != tf.float32 else value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what} must be a numeric array, got {type(value).__name__}: {e}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{what} must be a numeric array, got dtype {array.dtype}")
    return tf.convert_to_tensor(array.astype(np.float32))


def check_batch(x, event_shape, what: str = "x", support: str = "real"):
    """x as a float32 tensor of shape [B, *event_shape]; raises ValueError otherwise.

    support: "unit_interval" requires values in [0, 1] (Bernoulli likelihood), "real" any
    finite value.
    """
    x = as_float_tensor(x, what)
    expected = (None, *event_shape)
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and s is not None and s != e
                                          for s, e in zip(shape, expected)):
        hint = ""
        if shape == tuple(event_shape):
            hint = " (a single example: add a batch axis, x[None])"
        elif len(shape) >= 1 and np.prod([s or 0 for s in shape[1:]]) == np.prod(event_shape):
            hint = f" (reshape it to (-1, {', '.join(map(str, event_shape))}))"
        raise ValueError(f"{what} must have shape (batch, {', '.join(map(str, event_shape))}), "
                         f"got {shape}{hint}")
    if _is_concrete(x):
        values = x.numpy()
        if values.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (shape {shape}); pass at least one example")
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{what} has {int(bad.sum())} non-finite values (NaN or Inf); "
                             f"expected finite numbers")
        if support == "unit_interval" and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"{what} must lie in [0, 1] for a Bernoulli likelihood, got values in "
                             f"[{values.min():g}, {values.max():g}]; scale images to [0, 1] (x / 255)")
    return x


def check_count(name: str, value, minimum: int = 1):
    """Raises ValueError unless `value` is an int (not a bool) >= minimum (1 or 0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")


def check_condition(condition, condition_dim: int, batch_size=None):
    """The condition tensor [B, condition_dim] of a conditional model, or None for others."""
    if condition_dim == 0:
        if condition is not None:
            raise ValueError("this model is not conditional (condition_dim=0) but a condition was given")
        return None
    if condition is None:
        raise ValueError(f"this model is conditional: pass condition=... of shape (batch, {condition_dim}) "
                         f"(for labels: a one-hot vector)")
    condition = check_batch(condition, (condition_dim,), "condition")
    if batch_size is not None and condition.shape[0] is not None and condition.shape[0] != batch_size:
        raise ValueError(f"condition has {condition.shape[0]} rows but x has {batch_size}")
    return condition
