"""Checks on what users pass to the Python API, with errors that say what was expected.

Every array input (x, z, condition) goes through the same steps, in this order, and the
first one that fails raises:

    type    a numeric array: a tf.Tensor/Variable, numpy array, or (nested) list of
            numbers of a real dtype (bool, int, uint, float16/bfloat16/float32/float64).
            Anything else (None, a string, a dict, a ragged list, an object, datetime or
            string array, a RaggedTensor) raises `NotNumericError` (a TypeError that is
            also a ValueError); a complex array raises ValueError.
    shape   [B, *event_shape] for `check_batch` (static shapes suffice).
    values  non-empty; finite (no NaN or Inf); magnitudes within the float32 range (a
            float64 1e300 would become Inf); inside the likelihood's support ([0, 1] for a
            Bernoulli likelihood). Checked on concrete values: numpy arrays and eager
            tensors. No assert ever enters a compiled training step: `fit` checks an
            array whole before it starts, and a tf.data pipeline batch by batch with
            `checked_in_pipeline` mapped into the pipeline (`BaseVAE.checked_data`); the
            exported SavedModel checks its inputs with `checked_in_graph`.

Then the value is cast to float32. An empty batch is refused everywhere, as by the exported
SavedModel (`tfvae.export`). Counts (k, steps, ...) are Python ints in [minimum, 2**31 - 1]
(`check_count`; TensorFlow sizes are int32); a number of samples n may also be a numpy
integer or a scalar integer tensor (`check_sample_count`).
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class NotNumericError(TypeError, ValueError):
    """An input that is not a numeric array at all (None, a string, a dict, a ragged list,
    an object array...). A TypeError, and also a ValueError so that `except ValueError`
    catches every bad-input error of the API (as `numpy.exceptions.AxisError` is both a
    ValueError and an IndexError)."""


class RefusedBatch(ValueError):
    """A batch of a data pipeline failed the checks of `checked_in_graph` while `fit` or
    `evaluate` read it."""


# --------------------------------------------------------------------- conversion
def _describe(value) -> str:
    return type(value).__name__ if not isinstance(value, str) else f"the string {value[:20]!r}"


def _real_dtype(dtype, what: str):
    """Raises unless `dtype` (numpy or TensorFlow) is bool, integer or real floating."""
    if isinstance(dtype, np.dtype):
        if dtype.kind in "biuf":
            return
        if dtype.kind == "c":
            raise ValueError(f"{what} must be real-valued, got complex dtype {dtype}; pass its real part "
                             f"(np.real) if that is what you mean")
        try:   # ml_dtypes' bfloat16 and friends have kind "V"
            tf_dtype = tf.as_dtype(dtype)
        except TypeError:
            tf_dtype = None
        if tf_dtype is None or not tf_dtype.is_floating:
            raise NotNumericError(f"{what} must be a numeric array, got dtype {dtype}")
        return
    dtype = tf.as_dtype(dtype)
    if dtype.is_complex:
        raise ValueError(f"{what} must be real-valued, got a tensor of complex dtype {dtype.name}; "
                         f"pass tf.math.real(...) if that is what you mean")
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise NotNumericError(f"{what} must be numeric, got a tensor of dtype {dtype.name}")


def _as_numeric(value, what: str):
    """(value as a tf.Tensor or numpy array of a real numeric dtype, its values as a numpy
    array when they are concrete (numpy input, eager tensor), else None)."""
    if isinstance(value, (tf.RaggedTensor, tf.SparseTensor)):
        raise NotNumericError(f"{what} must be a dense array, got a {type(value).__name__}")
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        tensor = tf.convert_to_tensor(value)   # reads a variable; no op for a tensor
        _real_dtype(tensor.dtype, what)
        return tensor, tensor.numpy() if hasattr(tensor, "numpy") else None
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise NotNumericError(f"{what} must be a numeric array (numpy array, nested list of numbers "
                              f"or tensor), got {_describe(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as e:   # ragged nested lists and the like
        raise NotNumericError(f"{what} must be a numeric array, got {type(value).__name__}: {e}") from None
    _real_dtype(array.dtype, what)
    return array, array


def _check_values(values: np.ndarray, what: str, support: str = "real"):
    """The value checks of the module docstring on a concrete array."""
    if values.size == 0:
        raise ValueError(f"{what} is empty (shape {values.shape}); pass at least one example")
    if values.dtype.kind == "V":               # ml_dtypes' bfloat16: exact in float32
        values = values.astype(np.float32)
    if values.dtype.kind == "f":               # (bool and integer values are finite and within float32)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{what} has {int(bad.sum())} non-finite values (NaN or Inf); "
                             f"expected finite numbers")
        if values.dtype.itemsize > 4:
            largest = float(np.abs(values).max())
            if largest > FLOAT32_MAX:
                raise ValueError(f"{what} has values beyond the float32 range (largest magnitude {largest:g} "
                                 f"> {FLOAT32_MAX:g}); models compute in float32")
    if support == "unit_interval":
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ValueError(f"{what} must lie in [0, 1] for a Bernoulli likelihood, got values in "
                             f"[{low:g}, {high:g}]; scale images to [0, 1] (x / 255)")


def _to_float32(value):
    if tf.is_tensor(value):
        return tf.cast(value, tf.float32) if value.dtype != tf.float32 else value
    return tf.convert_to_tensor(value.astype(np.float32, copy=False))


# --------------------------------------------------------------------- public checks
def as_float_tensor(value, what: str):
    """`value` (an array of any real dtype and shape) as a float32 tensor, after the type
    and value checks of the module docstring (values only when concrete).

    Raises:
      NotNumericError: not a numeric array (None, str, dict, ragged list, string tensor...).
      ValueError: complex; empty; NaN or Inf; beyond the float32 range.
    """
    value, values = _as_numeric(value, what)
    if values is not None:
        _check_values(values, what)
    return _to_float32(value)


def check_batch(x, event_shape, what: str = "x", support: str = "real"):
    """x as a float32 tensor of shape [B, *event_shape], after the checks of the module
    docstring.

    support: "unit_interval" requires values in [0, 1] (Bernoulli likelihood), "real" any
    finite value.

    Raises:
      NotNumericError: x is not a numeric array.
      ValueError: complex dtype, wrong shape, empty batch, NaN/Inf, beyond float32, or
        outside the support.
    """
    x, values = _as_numeric(x, what)
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
    if values is not None:
        if values.shape[0] == 0:
            raise ValueError(f"{what} is an empty batch (shape {shape}); pass at least one example")
        _check_values(values, what, support)
    return _to_float32(x)


# --------------------------------------------------------------------- checks in a graph
# For inputs that reach a graph as symbolic tensors: the exported SavedModel's endpoints, and
# the input pipelines of `fit` (in the tf.data map, never in the compiled training step).
def after(check, x):
    """x, made to depend on the op `check`."""
    with tf.control_dependencies([check]):
        return tf.identity(x)


def shape_checked_in_graph(x, what: str, shape):
    """x, after checking at run time that its shape is `shape` (None: any size). A call
    through a SavedModel's `signatures[name]` (TF Serving) feeds the graph any shape.
    `EnsureShape` rather than an Assert on tf.shape(x): graph optimisation folds the rank of
    x to the declared one, so such an Assert would not see a wrong rank."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", what)     # op names allow fewer characters than messages
    return tf.ensure_shape(tf.identity(x, name=name), shape, name=f"{name}_shape")


def checked_in_graph(x, what: str, shape, support: str = "real"):
    """x, made to depend on in-graph asserts: shape `shape` ([None, ...]), batch not empty,
    values finite and, for support "unit_interval", in [0, 1]. The asserts run one after
    the other so that the first failing one names the problem (InvalidArgumentError)."""
    x = shape_checked_in_graph(x, what, shape)
    x = after(tf.debugging.assert_positive(
        tf.shape(x)[0], message=f"{what} is an empty batch; expected at least one example"), x)
    x = after(tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(x)),
        [f"{what} has non-finite values (NaN or Inf); expected finite numbers"]), x)
    if support == "unit_interval":
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        x = after(tf.debugging.Assert(
            tf.logical_and(low >= 0.0, high <= 1.0),
            [f"{what} must lie in [0, 1] for a Bernoulli likelihood (scale images with x / 255); "
             f"got min and max", low, high]), x)
    return x


def checked_in_pipeline(x, what: str, shape, support: str = "real"):
    """x after one assert of the checks of `checked_in_graph`, for a batch of a tf.data
    pipeline (`fit` maps it over every batch): one pass over x and one message. The
    separate asserts of `checked_in_graph` (or a tf.cond that runs them only for a bad
    batch) cost 10-15% of `vae_bmnist`'s training at batch 20; this costs ~2%."""
    x = shape_checked_in_graph(x, what, shape)
    if support == "unit_interval":
        ok = tf.reduce_all(tf.logical_and(x >= 0.0, x <= 1.0))            # false for NaN too
        data = [f"{what} must be finite and lie in [0, 1] for a Bernoulli likelihood (scale images with "
                f"x / 255); got min and max", tf.reduce_min(x), tf.reduce_max(x)]
    else:
        ok = tf.reduce_all(tf.math.is_finite(x))
        data = [f"{what} has non-finite values (NaN or Inf); expected finite numbers"]
    return after(tf.debugging.Assert(ok, data), x)


def check_count(name: str, value, minimum: int = 1, maximum: int = INT32_MAX):
    """Raises ValueError unless `value` is an int (not a bool) in [minimum, maximum]
    (minimum 1 or 0; TensorFlow sizes are int32, hence the default maximum)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        bound = f" (at most {maximum})" if isinstance(value, int) and value > maximum else ""
        raise ValueError(f"{name} must be {kind} integer{bound}, got {value!r}")


def check_sample_count(n, what: str = "n", maximum: int = INT32_MAX):
    """The number of samples `n` as a Python int in [1, maximum], or, for a symbolic scalar
    integer tensor (inside a compiled graph or an export), the tensor itself as int32 (its
    value is checked by whoever builds the graph: `tfvae.export` asserts it in-graph).

    Accepts Python and numpy integers and integer tensors of rank 0; raises ValueError for
    anything else (bool, float, str, None, arrays, n out of range).
    """
    if tf.is_tensor(n) and not hasattr(n, "numpy"):        # symbolic
        if not (n.dtype.is_integer and n.shape.rank == 0):
            raise ValueError(f"{what} must be a scalar integer tensor, got dtype {n.dtype.name}, shape {n.shape}")
        return tf.cast(n, tf.int32)
    if tf.is_tensor(n) or isinstance(n, np.ndarray):
        dtype = tf.as_dtype(n.dtype) if tf.is_tensor(n) else None
        is_int = dtype.is_integer if dtype is not None else n.dtype.kind in "iu"
        if not is_int or len(n.shape) != 0:
            raise ValueError(f"{what} must be a positive integer, got a {type(n).__name__} of dtype "
                             f"{getattr(n.dtype, 'name', n.dtype)} and shape {tuple(n.shape)}")
        n = int(n.numpy() if tf.is_tensor(n) else n)
    elif isinstance(n, np.integer):
        n = int(n)
    check_count(what, n, 1, maximum)
    return n


def check_condition(condition, condition_dim: int, batch_size=None, against: str = "x",
                    allow_one: bool = False):
    """The condition tensor [B, condition_dim] of a conditional model, or None for others.

    batch_size: the number of rows it must have (None: any), the rows of `against` (for
    the message); allow_one: a single row is accepted too (broadcast to all rows).
    """
    if condition_dim == 0:
        if condition is not None:
            raise ValueError("this model is not conditional (condition_dim=0) but a condition was given")
        return None
    if condition is None:
        raise ValueError(f"this model is conditional: pass condition=... of shape (batch, {condition_dim}) "
                         f"(for labels: a one-hot vector)")
    condition = check_batch(condition, (condition_dim,), "condition")
    rows = condition.shape[0]
    if batch_size is not None and rows is not None and rows != batch_size and not (allow_one and rows == 1):
        expected = f"{batch_size}" + (" (or 1)" if allow_one else "")
        raise ValueError(f"condition has {rows} rows but {against} has {batch_size}; expected {expected}")
    return condition


def num_examples(data, what: str = "data") -> int:
    """len(data) for an array of examples (rank >= 1, numeric), for callers that iterate
    over it in batches (each batch then goes through `check_batch`)."""
    shape = tuple(_as_numeric(data, what)[0].shape)
    if len(shape) == 0:
        raise ValueError(f"{what} must be an array of examples (batch, ...), got a scalar")
    if shape[0] is None:
        raise ValueError(f"{what} must have a known number of examples, got shape {shape}")
    return int(shape[0])
