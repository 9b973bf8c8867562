"""Hostile input, fuzzed with hypothesis: arrays of random rank (0-4), sizes (0-5), dtypes
(float16/32/64, bfloat16, int8/32/64, uint8, bool, complex64, str, object), containers
(numpy, nested lists, tensors, non-arrays) and values (finite, NaN, +-Inf, huge, outside
the Bernoulli support), against the Python API of a tiny VAE and the endpoints of its
exported SavedModel (and of a conditional one, for the condition input).

The property, for every drawn input: the call either works, with outputs of the expected
shape that are finite when the input is a valid one of moderate size, or raises one of the
documented error types (ValueError, TypeError as `NotNumericError`, in the Python API;
`tfvae.export.INPUT_ERRORS` for the SavedModel); nothing else escapes. Whether an input is
valid is decided by an oracle written here from the documented rules (numpy only), not by
the code under test, and the call must agree with it both ways: valid inputs work, invalid
ones raise, with a message naming the input.
"""
import re
import warnings

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tfvae
from tfvae.export import INPUT_ERRORS
from tfvae.inputs import NotNumericError

DATA, LATENT, CONDITION = (6,), 2, 2
K, MAX_SAMPLES = 3, 8
FLOAT32_MAX = float(np.finfo(np.float32).max)
MODERATE = 1e4        # valid inputs up to this magnitude must give finite outputs
# Derandomized (the same examples on every run; a failure reproduces), with no example database.
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ_MORE = settings(FUZZ, max_examples=50)     # for the cheap calls (no tracing)

REAL = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool"]
OTHER = ["complex64", "str", "object"]
# Values a clean array gets a few of: non-finite, huge (1e300 only fits float64), and
# outside the Bernoulli support [0, 1] (255: unscaled pixels).
SPECIAL = {"non-finite": [np.nan, np.inf, -np.inf], "huge": [1e30, -1e30, 1e300, -1e300],
           "unsupported": [-0.5, 1.5, 2.0, 255.0]}

# TensorFlow's own conversion of numpy arrays for the SavedModel (documented in tfvae.export).
pytestmark = pytest.mark.filterwarnings("ignore:Casting complex values to real discards the imaginary part",
                                        "ignore:overflow encountered in cast:RuntimeWarning")


# ------------------------------------------------------------------ inputs and the oracle
class Drawn:
    """A drawn input: `value` is what the call gets; `array` its content as numpy (None
    for non-arrays), `dtype` the dtype name, `container` numpy | list | tensor | other."""

    def __init__(self, value, array, dtype, container):
        self.value, self.array, self.dtype, self.container = value, array, dtype, container

    def __repr__(self):
        shape = None if self.array is None else self.array.shape
        return f"Drawn({self.container}, {self.dtype}, shape={shape}, value={self.value!r:.200})"


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "bfloat16":
            return values.astype(ml_dtypes.bfloat16)
        if dtype == "complex64":
            return (values + 1j).astype(np.complex64)
        if dtype == "str":
            return values.astype(str)
        if dtype == "object":
            out = values.astype(object)
            out.flat[::2] = None
            return out
        return values.astype(dtype)


@st.composite
def arrays(draw, event_shape, low, high):
    """A hostile input for an argument of shape [B, *event_shape] with values in [low, high]."""
    kind = draw(st.sampled_from(["array"] * 12 + ["None", "dict", "str", "ragged"]))
    if kind != "array":
        value = {"None": None, "dict": {"x": 1.0}, "str": "0.5", "ragged": [[0.5] * event_shape[0], [0.5]]}[kind]
        return Drawn(value, None, kind, "other")
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 5)), *event_shape)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    values = draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high)))
    special = draw(st.sampled_from(["clean", *SPECIAL]))
    dirty = special != "clean" and values.size > 0
    if dirty:    # a few entries (at least one) of that kind
        for index in draw(st.lists(st.integers(0, values.size - 1), min_size=1, max_size=3)):
            values.flat[index] = draw(st.sampled_from(SPECIAL[special]))
    # Hypothesis favours the first entries: float32 (a third of the draws), in a tensor.
    dtype = draw(st.sampled_from(["float32"] * 8 + REAL * 2 + OTHER))
    if dtype in ("bool", "uint8", "int8", "int32", "int64") and not dirty:
        values = np.round(values)
    array = _cast(values, dtype)
    container = draw(st.sampled_from(["tensor", "numpy", "list"]))
    if container == "tensor" and dtype != "object":
        value = tf.constant(array.astype(np.float32), tf.bfloat16) if dtype == "bfloat16" else tf.constant(array)
    elif container == "list" and dtype not in ("bfloat16", "object"):
        value = array.tolist()
        array = np.asarray(value)         # what the list means: [[]] has shape (1, 0), [] is float64
        dtype = {"b": "bool", "i": "int64", "u": "int64", "f": "float64", "c": "complex64", "U": "str"}[array.dtype.kind]
    else:
        value, container = array, "numpy"
    return Drawn(value, array, dtype, container)


def drawn(array, container="numpy"):
    """A Drawn for an explicit example."""
    array = np.asarray(array)
    return Drawn(tf.constant(array) if container == "tensor" else array, array, array.dtype.name, container)


def valid_values(a: np.ndarray, event_shape, support: str, min_rank: int = 2) -> bool:
    """The documented rules on a real array: shape [B >= 1, *event_shape] (for z: [..., L]),
    finite, within float32, inside the support."""
    if min_rank == 2:
        shape_ok = a.ndim == 1 + len(event_shape) and a.shape[1:] == tuple(event_shape) and a.shape[0] >= 1
    else:          # decode's z: [..., latent_dim], not empty
        shape_ok = a.ndim >= 1 and a.shape[-1] == event_shape[-1] and a.size > 0
    if not shape_ok:
        return False
    f = a.astype(np.float64)
    if not (np.isfinite(f).all() and np.abs(f).max() <= FLOAT32_MAX):
        return False
    return bool(support == "real" or (f.min() >= 0 and f.max() <= 1))


def python_accepts(d: Drawn, event_shape, support, min_rank=2) -> bool:
    """The Python API accepts real dtypes (bool, ints, floats, bfloat16) of any container."""
    return d.dtype in REAL and valid_values(d.array, event_shape, support, min_rank)


def savedmodel_accepts(d: Drawn, event_shape, support):
    """True/False, or None when the documented rules leave it to numpy's casting (str,
    object). Tensors must be float32; numpy arrays and lists are cast to float32 first
    (complex numpy arrays keep their real part; complex lists cannot be cast)."""
    if d.container == "other":
        return False
    if d.container == "tensor":
        return d.dtype == "float32" and valid_values(d.array, event_shape, support)
    if d.dtype in ("str", "object"):
        return None
    if d.dtype == "complex64" and d.container == "list":
        return False
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        as_float32 = np.real(d.array).astype(np.float32)
    return valid_values(as_float32, event_shape, support)


def moderate(*drawn) -> bool:
    return all(np.abs(np.real(d.array).astype(np.float64)).max() <= MODERATE for d in drawn)


def outcome(call):
    """(outputs, None) or (None, the exception); outputs as a dict of numpy arrays."""
    try:
        out = call()
    except Exception as e:      # noqa: BLE001 - the tests check the type
        return None, e
    if not isinstance(out, dict):
        out = {"out": out}
    return {key: np.asarray(value) for key, value in out.items()}, None


def check_python(call, accepts: bool, what: str, shapes: dict, finite: bool, not_numeric: bool = False):
    """The Python API's contract for one call (see the module docstring)."""
    out, error = outcome(call)
    if error is not None:
        assert isinstance(error, ValueError), f"{type(error).__name__} escaped: {error}"
        assert not accepts or not finite, f"a valid input was refused: {error}"
        assert re.search(rf"\b{what}\b", str(error)), f"the message does not name {what!r}: {error}"
        if not_numeric:
            assert isinstance(error, NotNumericError), f"{type(error).__name__} for a non-numeric input: {error}"
        return
    assert accepts, f"an invalid {what} was accepted: {({k: v.shape for k, v in out.items()})}"
    for key, shape in shapes.items():
        assert out[key].shape == shape, (key, out[key].shape, shape)
        if finite:
            assert np.isfinite(out[key]).all(), (key, out[key])


def check_savedmodel(call, accepts, what: str, shapes):
    """The SavedModel's contract for one call; `shapes(out)` gives the expected output shapes
    (they depend on how the input was cast when the oracle leaves it open)."""
    accepts = None if accepts is None else bool(accepts)     # True, False or None (not numpy's bool_)
    out, error = outcome(call)
    if error is not None:
        assert isinstance(error, INPUT_ERRORS), f"{type(error).__name__} escaped: {error}"
        assert accepts is not True, f"a valid input was refused: {error}"
        # The ways tfvae.export documents that an error names the input: its own asserts,
        # tf.ensure_shape, the signature's dtype check (by position), the binding's signature.
        names = (rf"assertion failed: \[{what}\b|Shape of tensor {what} \[|"
                 rf"input #\d\(zero-based\) was expected to be a \w+ tensor|name='{what}'")
        assert re.search(names, str(error)), f"the message does not name {what!r}: {error}"
        return
    assert accepts is not False, f"an invalid {what} was accepted"
    for key, shape in shapes(out).items():
        assert out[key].shape == shape, (key, out[key].shape, shape)


def not_numeric(d: Drawn, none_means_missing: bool = False) -> bool:
    """Must the Python API raise NotNumericError? (condition=None means "no condition":
    a conditional model then says that it needs one.)"""
    if none_means_missing and d.value is None:
        return False
    return d.container == "other" or d.dtype in ("str", "object")


# ------------------------------------------------------------------ models and exports
def tiny(**kwargs):
    return tfvae.get_model_class("vae")(data_shape=DATA, latent_dim=LATENT, encoder={"type": "mlp", "hidden": [4]},
                                        **kwargs)


@pytest.fixture(scope="module")
def model():
    """Bernoulli likelihood: x must lie in [0, 1]."""
    return tiny()


@pytest.fixture(scope="module")
def conditional():
    """Gaussian likelihood (x any finite value) with a condition of width 2."""
    return tiny(condition_dim=CONDITION, likelihood={"type": "gaussian", "scale": 0.5})


@pytest.fixture(scope="module")
def loaded(model, tmp_path_factory):
    path = tfvae.export(model, tmp_path_factory.mktemp("fuzz") / "plain", k=K, max_samples=MAX_SAMPLES, verbose=False)
    return tf.saved_model.load(path)


@pytest.fixture(scope="module")
def loaded_conditional(conditional, tmp_path_factory):
    path = tfvae.export(conditional, tmp_path_factory.mktemp("fuzz") / "conditional", k=K, max_samples=MAX_SAMPLES,
                        verbose=False)
    return tf.saved_model.load(path)


def rows_of(d: Drawn, default=3):
    a = d.array
    return a.shape[0] if a is not None and a.ndim >= 1 and a.shape[0] >= 1 else default


def valid_x(rows, support="unit", seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((rows, *DATA)) if support == "unit" else rng.normal(size=(rows, *DATA))).astype(np.float32)


# ------------------------------------------------------------------ the Python API
@FUZZ
@given(x=arrays(DATA, 0.0, 1.0))
@example(x=drawn(np.full((2, 6), 0.5)))
@example(x=drawn(np.full((2, 6), 255, np.uint8)))
@example(x=drawn(np.full((2, 6), 1e300)))
@example(x=drawn(np.full((2, 6), 0.5, np.complex64)))
@example(x=drawn(np.full((2, 6), 0.5, np.float32), "tensor"))
def test_python_api_refuses_or_works_on_any_x(model, x):
    accepts = python_accepts(x, DATA, "unit")
    finite = accepts and moderate(x)
    kwargs = dict(accepts=accepts, what="x", finite=finite, not_numeric=not_numeric(x))
    rows = x.array.shape[0] if accepts else None
    check_python(lambda: model.encode(x.value).mean(), shapes={"out": (rows, LATENT)}, **kwargs)
    check_python(lambda: model.reconstruct(x.value), shapes={"out": (rows, *DATA)}, **kwargs)
    check_python(lambda: model.elbo_terms(x.value, seed=[1, 2]), shapes={k: (rows,) for k in ("elbo", "kl")}, **kwargs)
    check_python(lambda: tfvae.log_likelihood(model, x.value, k=K, seed=1), shapes={"out": (rows,)}, **kwargs)


@FUZZ_MORE
@given(z=arrays((LATENT,), -3.0, 3.0))
@example(z=drawn([[0.5, 1e300]]))
@example(z=drawn(np.zeros((0, 2))))
def test_python_api_refuses_or_works_on_any_z(model, z):
    accepts = python_accepts(z, (LATENT,), "real", min_rank=1)
    shape = z.array.shape[:-1] + DATA if accepts else None
    check_python(lambda: model.decode(z.value).mean(), accepts, "z", {"out": shape}, accepts and moderate(z),
                 not_numeric(z))


@FUZZ
@given(x=arrays(DATA, 0.0, 1.0))
def test_evaluate_refuses_or_reports_on_any_array(model, x):
    if x.container == "other" or x.array.ndim == 0:
        return      # not an array of examples: test_evaluate_refuses_what_is_not_an_array_of_examples
    if x.container == "list":
        x = Drawn(x.array, x.array, x.dtype, "numpy")   # a list of 2 rows would be read as an (x, condition) pair
    accepts = python_accepts(x, DATA, "unit")
    keys = ("log_px", "elbo", "kl", "bits_per_dim")
    check_python(lambda: {key: value for key, value in tfvae.evaluate(model, x.value, k=K, batch_size=2,
                                                                      verbose=False).items() if key in keys},
                 accepts, "(x|data|evaluate)", {key: () for key in keys}, accepts and moderate(x))


@FUZZ_MORE
@given(condition=arrays((CONDITION,), -2.0, 2.0), same_rows=st.booleans())
def test_python_api_refuses_or_works_on_any_condition(conditional, condition, same_rows):
    rows = rows_of(condition) if same_rows else 1 + rows_of(condition) % 5
    x = valid_x(rows, "real")
    accepts = python_accepts(condition, (CONDITION,), "real") and condition.array.shape[0] == rows
    finite = accepts and moderate(condition)
    kwargs = dict(accepts=accepts, what="condition", finite=finite, not_numeric=not_numeric(condition, True))
    check_python(lambda: conditional.encode(x, condition.value).mean(), shapes={"out": (rows, LATENT)}, **kwargs)
    check_python(lambda: conditional.elbo_terms(x, condition=condition.value, seed=[3, 4]),
                 shapes={"elbo": (rows,)}, **kwargs)
    if same_rows:   # decode's row check is part of the pending change (test below)
        z = np.zeros((rows, LATENT), np.float32)
        check_python(lambda: conditional.decode(z, condition.value).mean(), shapes={"out": (rows, *DATA)}, **kwargs)


@FUZZ
@given(n=st.one_of(st.integers(-3, 2 * MAX_SAMPLES), st.sampled_from([2**31 - 1, 2**31, 2**32 + 3, 10**12, -2**40]),
                   st.integers(-3, 12).map(np.int64), st.integers(-3, 12).map(tf.constant),
                   st.sampled_from([2.0, 2.5, True, "3", None, [2], np.array([2, 3]), tf.constant(2.0),
                                    tf.constant([2, 3])])))
@example(n=tf.constant(-2))
def test_python_api_sample_count(model, n):
    count = n.numpy() if tf.is_tensor(n) and n.dtype.is_integer and n.shape.rank == 0 else n
    accepts = (isinstance(count, (int, np.integer)) and not isinstance(count, bool) and 1 <= count <= 2**31 - 1)
    if accepts and count > 1000:
        return          # would allocate count * 6 floats
    check_python(lambda: model.sample(n, seed=[1, 2]), accepts, "n", {"out": (count, *DATA)} if accepts else {},
                 accepts)


@FUZZ
@given(condition=arrays((CONDITION,), -2.0, 2.0), n=st.integers(1, 5))
@example(condition=drawn(np.zeros(3, np.float32)), n=2)
def test_python_api_sample_and_decode_condition_rows(conditional, condition, n):
    a = condition.array if condition.array is not None else np.zeros(())
    accepts = (condition.dtype in REAL and a.ndim in (1, 2) and a.shape[-1:] == (CONDITION,)
               and (a.ndim == 1 or a.shape[0] in (1, n)) and valid_values(a.reshape(-1, CONDITION), (CONDITION,),
                                                                           "real"))
    kwargs = dict(accepts=accepts, what="condition", finite=accepts and moderate(condition),
                  not_numeric=not_numeric(condition, True))
    check_python(lambda: conditional.sample(n, seed=[1, 2], condition=condition.value),
                 shapes={"out": (n, *DATA)}, **kwargs)
    accepts = accepts and a.ndim == 2
    z = np.zeros((n, LATENT), np.float32)
    check_python(lambda: conditional.decode(z, condition.value).mean(), shapes={"out": (n, *DATA)},
                 **{**kwargs, "accepts": accepts, "finite": accepts and kwargs["finite"]})


@pytest.mark.parametrize("data", [np.float32(0.5), None, {"x": 1}, "abc", [[0.5] * 6, [0.5], [0.5]]],
                         ids=["scalar", "None", "dict", "str", "ragged"])
def test_evaluate_refuses_what_is_not_an_array_of_examples(model, data):
    with pytest.raises(ValueError, match=r"\bdata\b|\bx\b"):
        tfvae.evaluate(model, data, k=K, verbose=False)


# ------------------------------------------------------------------ the SavedModel
@FUZZ_MORE
@given(x=arrays(DATA, 0.0, 1.0))
@example(x=drawn(np.full((3, 5), 0.5, np.float32), "tensor"))
@example(x=drawn(np.full((2, 6), 1.5, np.float32), "tensor"))
@example(x=drawn(np.full((2, 6), 255, np.uint8)))
def test_savedmodel_refuses_or_works_on_any_x(loaded, x):
    accepts = savedmodel_accepts(x, DATA, "unit")
    def rows(out, key):
        return x.array.shape[0] if accepts else len(out[key])

    for name, keys in (("encode", {"mean": (LATENT,), "stddev": (LATENT,)}), ("reconstruct", {"reconstruction": DATA}),
                       ("elbo", {"elbo": (), "log_px_z": (), "kl": ()}), ("log_likelihood", {"log_px": ()}),
                       ("serving_default", {"reconstruction": DATA, "elbo": ()})):
        def shapes(out, keys=keys):
            return {key: (rows(out, key), *event) for key, event in keys.items()}
        check_savedmodel(lambda name=name: getattr(loaded, name)(x.value), accepts, "x", shapes)
    # TF Serving's way in: by name, through the signature.
    check_savedmodel(lambda: loaded.signatures["log_likelihood"](x=x.value), accepts, "x",
                     lambda out: {"log_px": (rows(out, "log_px"),)})
    if accepts and moderate(x):
        assert np.isfinite(loaded.log_likelihood(x.value)["log_px"].numpy()).all()


@FUZZ_MORE
@given(z=arrays((LATENT,), -3.0, 3.0))
@example(z=drawn(np.zeros((2, 3), np.float32), "tensor"))
@example(z=drawn([[0.5, 1e300]]))
def test_savedmodel_refuses_or_works_on_any_z(loaded, z):
    accepts = savedmodel_accepts(z, (LATENT,), "real")
    for decode in (loaded.decode, lambda value: loaded.signatures["decode"](z=value)):
        check_savedmodel(lambda: decode(z.value), accepts, "z",
                         lambda out: {"mean": (z.array.shape[0] if accepts else len(out["mean"]), *DATA)})
    if accepts and moderate(z):
        assert np.isfinite(loaded.decode(z.value)["mean"].numpy()).all()


def wrapped_int32(n: int) -> int:
    return (n + 2**31) % 2**32 - 2**31


@FUZZ_MORE
@given(n=st.one_of(st.integers(-3, 2 * MAX_SAMPLES), st.sampled_from([2**31 - 1, 2**31, 2**32 + 3, 2**40, -2**40]),
                   st.integers(-3, 12).map(np.int64), st.integers(-3, 12).map(tf.constant),
                   st.sampled_from([2.0, "3", None, [2], tf.constant(2, tf.int64), tf.constant([2, 3])])),
       seed=st.one_of(st.lists(st.integers(-2**31, 2**31 - 1), min_size=2, max_size=2),
                      st.sampled_from([[1], [1, 2, 3], "ab", None, [1.5, 2.0]])))
def test_savedmodel_sample_count_is_capped(loaded, n, seed):
    count = n.numpy() if tf.is_tensor(n) and n.dtype == tf.int32 and n.shape.rank == 0 else n
    accepts = isinstance(seed, list) and len(seed) == 2 and all(isinstance(s, int) for s in seed)
    if isinstance(count, (int, np.integer)) and not tf.is_tensor(count):
        count = wrapped_int32(int(count))        # the int32 conversion (module docstring of tfvae.export)
        accepts = accepts and 1 <= count <= MAX_SAMPLES
    else:
        accepts = False
    check_savedmodel(lambda: loaded.sample(n, seed), accepts, "(n|seed)", lambda out: {"x": (count, *DATA)})
    check_savedmodel(lambda: loaded.signatures["sample"](n=n, seed=seed), accepts, "(n|seed)",
                     lambda out: {"x": (count, *DATA)})
    if accepts:
        assert np.isfinite(loaded.sample(n, seed)["x"].numpy()).all()


@FUZZ_MORE
@given(condition=arrays((CONDITION,), -2.0, 2.0), rows=st.integers(1, 5),
       endpoint=st.sampled_from(["encode", "log_likelihood", "decode", "sample"]), by_name=st.booleans())
@example(condition=drawn(np.zeros((1, 2), np.float32)), rows=3, endpoint="sample", by_name=False)
@example(condition=drawn(np.zeros((1, 2), np.float32)), rows=3, endpoint="decode", by_name=True)
@example(condition=drawn(np.full((3, 2), np.inf, np.float32), "tensor"), rows=3, endpoint="encode", by_name=True)
def test_savedmodel_refuses_or_works_on_any_condition(loaded_conditional, condition, rows, endpoint, by_name):
    accepts = savedmodel_accepts(condition, (CONDITION,), "real")
    have = condition.array.shape[0] if accepts else None
    if accepts and have != rows and not (endpoint == "sample" and have == 1):
        accepts = False
    inputs, key, event = {
        "encode": ({"x": valid_x(rows, "real")}, "mean", (LATENT,)),
        "log_likelihood": ({"x": valid_x(rows, "real")}, "log_px", ()),
        "decode": ({"z": np.zeros((rows, LATENT), np.float32)}, "mean", DATA),
        "sample": ({"n": rows, "seed": [1, 2]}, "x", DATA),
    }[endpoint]
    # As an attribute (positional arguments), or through the signature (by name, as TF Serving).
    function = loaded_conditional.signatures[endpoint] if by_name else getattr(loaded_conditional, endpoint)

    def call():
        if by_name:
            return function(**inputs, condition=condition.value)
        return function(*inputs.values(), condition.value)

    check_savedmodel(call, accepts, "condition", lambda out: {key: (rows, *event)})
    if accepts and moderate(condition):
        assert np.isfinite(call()[key].numpy()).all()
