"""SavedModel export with named, deterministic endpoints that need only TensorFlow to run.

    tfvae.export.export(model, "exports/vae", k=1000)
    m = tf.saved_model.load("exports/vae")       # no tfvae import needed
    m.encode(x)["mean"];  m.sample(n=16, seed=[1, 2])["x"];  m.log_likelihood(x)["log_px"]

Endpoints (x: float32 [B, *data_shape]; for a conditional model every endpoint also takes
`condition`, float32 [B, condition_dim], after its other inputs; all return dicts of tensors):

    encode(x)          {"mean", "stddev"} of q(z|x), each [B, latent_dim]
    decode(z)          {"mean"}: E[x|z], [B, *data_shape] (Bernoulli: the probabilities)
    reconstruct(x)     {"reconstruction"}: E[x | z = E_q[z]] (`model.reconstruct`)
    sample(n, seed)    {"x"}: n means of p(x|z), z ~ p(z); n int32 scalar in [1, max_samples],
                       seed int32 [2] (stateless: the same seed gives the same samples); a
                       condition has n rows or 1 row (used for all n samples)
    elbo(x)            {"elbo", "log_px_z", "kl"}, each [B]: log p(x|z) - KL(q || p) with
                       one z ~ q drawn from the fixed seed [seed, 0] (= `model.elbo_terms(x,
                       k=1, seed=[seed, 0])`)
    log_likelihood(x)  {"log_px"}: log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q, k fixed
                       at export, seed [seed, 0] (= `importance_sampling(model, x, k,
                       seed=[seed, 0])["log_px"]`, for any batch size)
    serving_default(x) {"reconstruction", "elbo"}: the same values as the endpoints above

Every endpoint is deterministic: randomness comes from explicit stateless seeds only, never
from the model's `SeedGenerator` (`export` checks that no endpoint reads its state).
Each endpoint is written both as a function attribute of the loaded object and as a
SavedModel signature under its own name, so `saved_model_cli show --all`
lists all seven signatures (`serving_default` being the one TF Serving calls by default).
Called as attributes, endpoints take their inputs positionally or by name; called through
`loaded.signatures[name]`, by name only (x, z, condition, n, seed).

Hostile input. Every endpoint either returns outputs of the shapes above or raises one of
`INPUT_ERRORS`; the checks are part of the graph, so they travel with the SavedModel:

  * Values are asserted in the graph and raise `tf.errors.InvalidArgumentError` whose
    message names the input and the problem: "x is an empty batch" (also z, condition:
    an empty batch is refused, as by the Python API, rather than returning empty
    outputs), "x has non-finite values (NaN or Inf)" (also z, condition), "x must lie in
    [0, 1] for a Bernoulli likelihood" (continuous values in [0, 1] are accepted, as by
    the Python API), "condition must have one row per example of x" (per row of z; per
    sample or a single row for `sample`), "n must be at least 1", "n must be at most
    max_samples=...".
  * Structure: called as an attribute, an endpoint binds its arguments to the signature
    first, and a wrong rank or size (x[0], a z of the wrong width, a seed of 3 ints), a
    missing or extra argument, or a tensor of another dtype (float64, int, bfloat16,
    string) raises TypeError (or ValueError) showing the signature ("... TensorSpec(shape=
    (None, 6), dtype=tf.float32, name='x')"). Through `loaded.signatures[name]` (TF
    Serving) a tensor of another dtype raises InvalidArgumentError ("input #0(zero-based)
    was expected to be a float tensor but is a double tensor": inputs are numbered in the
    alphabetical order of their names, condition, n, seed, x, z), and shapes are not checked
    by the signature: the graph checks them itself (`tf.ensure_shape`), so a wrong shape
    raises InvalidArgumentError "Shape of tensor x [3,5] is not compatible with expected
    shape [?,6]" instead of reaching the networks (where a reshape could silently accept
    it).
  * Python values and numpy arrays are not tensors yet: TensorFlow converts them to the
    signature's dtype with numpy's casting rules before the graph sees them, as for any
    `tf.function`. So int pixels 0..255 reach the [0, 1] check of a Bernoulli model;
    None, dicts, Python strings and ragged lists raise TypeError; float64 values beyond
    the float32 range become Inf and are refused as non-finite; and, unlike the Python
    API (which refuses them with ValueError), numpy complex arrays lose their imaginary
    part (numpy's ComplexWarning), numpy string arrays of numbers are parsed, a numpy
    float n is truncated, and an integer n is taken modulo 2**32 (2**32 + 5 becomes 5):
    the graph only ever sees an int32 n, so the cap still bounds the work. Pass tensors of
    the signature's dtype (as TF Serving does) for strict dtype checks.

Work is bounded: `sample` draws at most `max_samples` rows; `log_likelihood` uses the k
fixed at export, decoding at most max(batch, 2**16) samples at a time, so its time grows
as batch * k and its memory as the batch. Finite inputs of any magnitude are accepted,
and outputs are finite for inputs in the range of the data the model was trained on; far
outside it float32 can overflow (with a Gaussian likelihood, |x| beyond about 1e19 makes
(x - mean)^2 infinite), and outputs can then be Inf or NaN.

The export is written to a temporary directory next to `path` and renamed into place, so a
failure leaves the previous content of `path` (or nothing) there, never half a model.
`path/assets.extra/tfvae_export.json` (the SavedModel folder for files the graph does not
load) describes the endpoints, shapes, k, max_samples, seed, the model config and versions.
"""
from __future__ import annotations

import inspect
import json
import os

import keras
import tensorflow as tf

from tfvae.distributions import moments
from tfvae.inputs import checked_in_graph, shape_checked_in_graph
from tfvae.inference.importance import importance_terms
from tfvae.io import atomic_path
from tfvae.version import versions

ENDPOINTS = ("encode", "decode", "reconstruct", "sample", "elbo", "log_likelihood", "serving_default")
METADATA_PATH = os.path.join("assets.extra", "tfvae_export.json")
# What an endpoint of the loaded SavedModel may raise for a bad input (module docstring).
INPUT_ERRORS = (tf.errors.InvalidArgumentError, TypeError, ValueError)
FORMAT_VERSION = 1
_INT32_MAX = 2**31 - 1
_MODEL_CONTRACT = ("encode", "decode", "reconstruct", "sample", "elbo_terms", "log_weights",
                   "data_shape", "latent_dim", "condition_dim", "likelihood")


# --------------------------------------------------------------------- in-graph checks
def _rows_match(condition, rows, per: str, allow_one: bool = False):
    """condition, after asserting that it has `rows` rows (one per `per`), or 1 when `allow_one`."""
    have = tf.shape(condition)[0]
    ok = tf.equal(have, rows)
    if allow_one:
        ok = tf.logical_or(ok, tf.equal(have, 1))
    expected = f"one row per {per}" + (" or a single row" if allow_one else "")
    check = tf.debugging.Assert(ok, [f"condition must have {expected}; got rows, expected", have, rows])
    with tf.control_dependencies([check]):
        return tf.identity(condition)


# --------------------------------------------------------------------- endpoints
def _endpoints(model, k: int, max_samples: int, export_seed: int) -> dict:
    """{name: (function, input signature)} of every endpoint. The functions' parameters are
    the names of their signature's specs: `condition` only for a conditional model."""
    data_shape, latent_dim, condition_dim = tuple(model.data_shape), model.latent_dim, model.condition_dim
    support = getattr(model.likelihood, "support", "real")
    x_shape, condition_shape = (None, *data_shape), (None, condition_dim)

    def fixed_seed():
        return tf.constant([export_seed, 0], tf.int32)

    def inputs(x, condition):
        x = checked_in_graph(x, "x", x_shape, support)
        if condition_dim:
            condition = _rows_match(checked_in_graph(condition, "condition", condition_shape), tf.shape(x)[0],
                                    "example of x")
        return x, condition

    def encode(x, condition):
        mean, stddev = moments(model.encode(*inputs(x, condition)))
        return {"mean": mean, "stddev": stddev}

    def decode(z, condition):
        z = checked_in_graph(z, "z", (None, latent_dim))
        if condition_dim:
            condition = _rows_match(checked_in_graph(condition, "condition", condition_shape), tf.shape(z)[0],
                                    "row of z")
        return {"mean": model.decode(z, condition).mean()}

    def reconstruct(x, condition):
        return {"reconstruction": model.reconstruct(*inputs(x, condition))}

    def sample(n, seed, condition):
        n, seed = shape_checked_in_graph(n, "n", ()), shape_checked_in_graph(seed, "seed", (2,))
        checks = [tf.debugging.assert_greater_equal(n, 1, message="n must be at least 1"),
                  tf.debugging.assert_less_equal(n, max_samples,
                                                 message=f"n must be at most max_samples={max_samples}")]
        with tf.control_dependencies(checks):
            n = tf.identity(n)
        if condition_dim:
            condition = _rows_match(checked_in_graph(condition, "condition", condition_shape), n, "sample",
                                    allow_one=True)
        return {"x": model.sample(n, seed=seed, condition=condition)}

    def elbo(x, condition):
        x, condition = inputs(x, condition)
        terms = model.elbo_terms(x, k=1, condition=condition, seed=fixed_seed())
        return {name: terms[name] for name in ("elbo", "log_px_z", "kl")}

    def log_likelihood(x, condition):
        x, condition = inputs(x, condition)
        return {"log_px": importance_terms(model, x, k, condition, fixed_seed())["log_px"]}

    def serving_default(x, condition):
        x, condition = inputs(x, condition)
        return {"reconstruction": model.reconstruct(x, condition),
                "elbo": model.elbo_terms(x, k=1, condition=condition, seed=fixed_seed())["elbo"]}

    x_spec = tf.TensorSpec([None, *data_shape], tf.float32, name="x")
    condition_spec = [tf.TensorSpec([None, condition_dim], tf.float32, name="condition")] if condition_dim else []
    x_signature = [x_spec, *condition_spec]
    signatures = {
        encode: x_signature,
        decode: [tf.TensorSpec([None, latent_dim], tf.float32, name="z"), *condition_spec],
        reconstruct: x_signature,
        sample: [tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([2], tf.int32, name="seed"), *condition_spec],
        elbo: x_signature,
        log_likelihood: x_signature,
        serving_default: x_signature,
    }
    return {fn.__name__: (_with_parameters(fn, signature), signature) for fn, signature in signatures.items()}


def _with_parameters(fn, signature):
    """fn, exposed with exactly one parameter per spec of `signature` (named like the spec),
    which is what tf.function and the SavedModel show; `condition` defaults to None. An error
    while tracing it names the endpoint."""
    parameters = inspect.Signature([inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                    for spec in signature])

    def endpoint(*args, **kwargs):
        try:
            return fn(**{"condition": None, **parameters.bind(*args, **kwargs).arguments})
        except Exception as e:      # raised while tracing: name the endpoint (Python >= 3.11)
            if hasattr(e, "add_note"):
                e.add_note(f"(raised by tfvae.export while tracing the endpoint {fn.__name__!r})")
            raise

    endpoint.__signature__ = parameters
    endpoint.__name__ = endpoint.__qualname__ = fn.__name__
    return endpoint


def _described_while_traced(fn, signature, model, described: dict):
    """fn, which records its input and output specs in `described[name]` as it is traced, and
    raises RuntimeError if its graph reads the model's SeedGenerator state (exported draws
    must use explicit seeds). Checked during the save's own trace: a trace before the save
    would be wasted, since tf.saved_model.save traces again in its context."""
    seed_state = getattr(getattr(model, "seed_generator", None), "state", None)
    seed_handle = getattr(getattr(seed_state, "value", seed_state), "handle", None)

    def endpoint(*args, **kwargs):
        outputs = fn(*args, **kwargs)
        graph = tf.compat.v1.get_default_graph()
        if seed_handle is not None and any(c is seed_handle for c in getattr(graph, "external_captures", ())):
            raise RuntimeError(f"export: endpoint {fn.__name__!r} reads the model's SeedGenerator state; "
                               f"exported endpoints must use explicit stateless seeds only")
        described[fn.__name__] = {"inputs": {s.name: _spec_json(s) for s in signature},
                                  "outputs": {key: _spec_json(tf.TensorSpec.from_tensor(t))
                                              for key, t in outputs.items()}}
        return outputs

    endpoint.__signature__ = inspect.signature(fn)
    endpoint.__name__ = endpoint.__qualname__ = fn.__name__
    return endpoint


def _spec_json(spec) -> dict:
    return {"shape": list(spec.shape.as_list()) if spec.shape.rank is not None else None,
            "dtype": spec.dtype.name}


# --------------------------------------------------------------------- validation
def _check_int(value, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _INT32_MAX:
        raise ValueError(f"{what} must be an integer in [{low}, {_INT32_MAX}], got {value!r}")
    return value


def _check_target(path: str):
    """Refuses a target that is a file, or a non-empty directory that is not a SavedModel
    (replacing it would delete unrelated content)."""
    if os.path.isfile(path):
        raise ValueError(f"export path {path!r} is an existing file; expected a directory path")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"export path {path!r} is a non-empty directory that is not a SavedModel; "
                         f"refusing to replace it (choose a new path or remove it first)")


def _check_model(model):
    missing = [name for name in _MODEL_CONTRACT if not hasattr(model, name)]
    if not isinstance(model, keras.Model) or missing:
        raise TypeError(f"export takes a tfvae model (a keras.Model on the tfvae contract), got "
                        f"{type(model).__name__}" + (f" without {', '.join(missing)}" if missing else ""))
    if not model.built:
        raise ValueError("the model is not built; build it (or call it once) before exporting")


# --------------------------------------------------------------------- export
def export(model, path, k: int = 1000, max_samples: int = 10000, seed: int = 0, verbose: bool = True) -> str:
    """Writes `model` as a SavedModel at `path` with the endpoints listed in the module
    docstring, atomically; returns the absolute path. The endpoints check their inputs in
    the graph and refuse bad ones with one of `INPUT_ERRORS` (module docstring, "Hostile
    input"); `k` and `max_samples` bound their work.

    Args:
      model: a model on the tfvae contract (`tfvae.models.BaseVAE` or a subclass).
      path: target directory; an existing export there is replaced once the new one is
        complete.
      k: importance samples per example of the `log_likelihood` endpoint.
      max_samples: the largest n the `sample` endpoint accepts.
      seed: the fixed stateless seed [seed, 0] of the `elbo` and `log_likelihood` endpoints.
      verbose: print where the export went and its endpoints.

    Raises:
      ValueError: k or max_samples < 1, seed outside int32, or `path` an existing file or a
        non-empty directory that is not a SavedModel.
      TypeError: `model` is not a tfvae model.
    """
    _check_model(model)
    k = _check_int(k, "k", 1)
    max_samples = _check_int(max_samples, "max_samples", 1)
    seed = _check_int(seed, "seed", -_INT32_MAX - 1)
    path = os.path.abspath(os.fspath(path))
    _check_target(path)

    # The SavedModel's root: the model's variables and one tf.function per endpoint. (Keras'
    # ExportArchive traced every endpoint twice, once to list its variables and once more in
    # the save's own context, which doubled the time of an export.)
    root = tf.Module()
    root.model_variables = [getattr(v, "value", v) for v in model.variables]
    described = {}
    functions = {name: tf.function(_described_while_traced(fn, signature, model, described),
                                   input_signature=signature, autograph=False)
                 for name, (fn, signature) in _endpoints(model, k, max_samples, seed).items()}
    for name, function in functions.items():
        setattr(root, name, function)
    with atomic_path(path) as tmp:
        # Traces each endpoint once; each is also a signature under its own name.
        tf.saved_model.save(root, tmp, signatures=dict(functions))
        os.makedirs(os.path.join(tmp, os.path.dirname(METADATA_PATH)), exist_ok=True)
        with open(os.path.join(tmp, METADATA_PATH), "w") as f:
            json.dump(_metadata(model, k, max_samples, seed, {name: described[name] for name in functions}),
                      f, indent=2, sort_keys=True)
    if verbose:
        print(f"Exported {type(model).__name__} to {path} with endpoints: {', '.join(described)} "
              f"(log_likelihood k={k}, sample n <= {max_samples}, seed [{seed}, 0])")
    return path


def _metadata(model, k, max_samples, seed, described) -> dict:
    return {
        "format": "tfvae.export", "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__, "model_name": getattr(type(model), "registered_name", None),
        "model_config": model.get_config(),
        "data_shape": list(model.data_shape), "latent_dim": model.latent_dim,
        "condition_dim": model.condition_dim, "likelihood_support": getattr(model.likelihood, "support", "real"),
        "k": k, "max_samples": max_samples, "seed": [seed, 0], "endpoints": described,
        "versions": versions(),
    }


def read_metadata(path) -> dict:
    """The description `export` wrote next to the SavedModel at `path`."""
    with open(os.path.join(os.fspath(path), METADATA_PATH)) as f:
        return json.load(f)
