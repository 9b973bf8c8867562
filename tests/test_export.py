"""Tests of tfvae.export: every endpoint of the loaded SavedModel against the Python model's
own methods (in this process and in a fresh one that never imports tfvae), the in-graph
input checks, saved_model_cli, and the atomic write."""
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfvae.export import ENDPOINTS, METADATA_PATH, export, read_metadata
from tfvae.inference import importance_sampling
from tfvae.models import VAE, LinearGaussian

# The module, not the function `tfvae.export` that the package exports under the same name.
export_module = importlib.import_module("tfvae.export")

# InvalidArgumentError for the in-graph checks; ValueError/TypeError for inputs no signature accepts.
REFUSED = (tf.errors.InvalidArgumentError, ValueError, TypeError)
TOL = dict(rtol=1e-5, atol=1e-4)
SHAPE = (8, 8, 1)


def perturb(model, seed, scale=0.3):
    """Moves every weight by N(0, scale^2) noise so that outputs are far from initial ones."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


class Case:
    """An exported model with the settings it was exported with and test inputs."""

    def __init__(self, model, path, k, max_samples, seed, x, condition):
        self.model, self.path, self.k, self.max_samples, self.seed = model, path, k, max_samples, seed
        self.x, self.condition = x, condition
        self.loaded = tf.saved_model.load(path)

    def cond(self, rows=None):
        """(condition,) sliced to `rows`, or () for an unconditional model: extra call args."""
        if self.condition is None:
            return ()
        return (self.condition if rows is None else self.condition[:rows],)

    def kw(self, rows=None):
        return {"condition": c for c in self.cond(rows)}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """Unconditional Bernoulli MLP VAE; x in [0, 1]."""
    model = VAE(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [16]})
    perturb(model, 1)
    path = export(model, tmp_path_factory.mktemp("mlp") / "export", k=1000, max_samples=50, seed=7,
                  verbose=False)
    x = np.random.default_rng(2).random((6, *SHAPE)).astype(np.float32)
    return Case(model, path, 1000, 50, 7, x, None)


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """Conditional conv VAE with a learned Gaussian scale; x real-valued."""
    model = VAE(data_shape=SHAPE, latent_dim=2, condition_dim=3, likelihood={"type": "gaussian", "scale": "learned"},
                encoder={"type": "conv", "filters": [4, 8], "kernel_size": 3, "dense": [16]})
    perturb(model, 3, scale=0.2)
    path = export(model, tmp_path_factory.mktemp("conv") / "export", k=64, max_samples=20, seed=3, verbose=False)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, *SHAPE)).astype(np.float32)
    condition = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 5)]
    return Case(model, path, 64, 20, 3, x, condition)


@pytest.fixture(params=["mlp", "conv"])
def case(request):
    return request.getfixturevalue(request.param)


def python_outputs(case, z, n, seed):
    """What each endpoint must return, from the Python model's own methods."""
    m, x, kw = case.model, case.x, case.kw()
    q = m.encode(x, **kw)
    terms = m.elbo_terms(x, k=1, seed=[case.seed, 0], **kw)
    return {
        "encode": {"mean": q.mean(), "stddev": q.stddev()},
        "decode": {"mean": m.decode(z, **kw).mean()},
        "reconstruct": {"reconstruction": m.reconstruct(x, **kw)},
        "sample": {"x": m.sample(n, seed=seed, **case.kw(n))},
        "elbo": {name: terms[name] for name in ("elbo", "log_px_z", "kl")},
        "log_likelihood": {"log_px": importance_sampling(m, x, case.k, seed=[case.seed, 0], **kw)["log_px"]},
        "serving_default": {"reconstruction": m.reconstruct(x, **kw), "elbo": terms["elbo"]},
    }


def assert_outputs_equal(got, want):
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), err_msg=key, **TOL)


def test_every_endpoint_matches_the_python_model(case):
    z = np.random.default_rng(5).normal(size=(len(case.x), case.model.latent_dim)).astype(np.float32)
    n, seed = 4, [11, 12]
    want = python_outputs(case, z, n, seed)
    x, cond = case.x, case.cond()
    got = {
        "encode": case.loaded.encode(x, *cond),
        "decode": case.loaded.decode(z, *cond),
        "reconstruct": case.loaded.reconstruct(x, *cond),
        "sample": case.loaded.sample(n, seed, *case.cond(n)),
        "elbo": case.loaded.elbo(x, *cond),
        "log_likelihood": case.loaded.log_likelihood(x, *cond),
        "serving_default": case.loaded.serving_default(x, *cond),
    }
    assert set(got) == set(ENDPOINTS)
    for name in ENDPOINTS:
        assert_outputs_equal(got[name], want[name])
    # The signatures (what TF Serving calls, keyword arguments only) give the same values.
    signatures = case.loaded.signatures
    assert_outputs_equal(signatures["encode"](x=tf.constant(x), **case.kw()), want["encode"])
    assert_outputs_equal(signatures["decode"](z=tf.constant(z), **case.kw()), want["decode"])
    assert_outputs_equal(signatures["sample"](n=tf.constant(n), seed=tf.constant(seed), **case.kw(n)),
                         want["sample"])
    assert_outputs_equal(signatures["log_likelihood"](x=tf.constant(x), **case.kw()), want["log_likelihood"])
    assert_outputs_equal(signatures["serving_default"](x=tf.constant(x), **case.kw()), want["serving_default"])


def test_outputs_are_not_trivial(mlp):
    """Guards the comparisons above against vacuous agreement (e.g. constant outputs)."""
    out = mlp.loaded.encode(mlp.x)
    assert np.ptp(out["mean"].numpy(), axis=0).min() > 1e-3
    assert np.ptp(mlp.loaded.log_likelihood(mlp.x)["log_px"].numpy()) > 1e-2
    assert np.all(np.isfinite(mlp.loaded.elbo(mlp.x)["elbo"].numpy()))


@pytest.mark.parametrize("batch", [1, 100])
def test_log_likelihood_matches_for_any_chunking(mlp, batch):
    """B = 100, k = 1000: importance_sampling decodes 655 samples per chunk plus a remainder
    of 345; the exported graph must find the same chunks from the dynamic batch size."""
    x = np.random.default_rng(batch).random((batch, *SHAPE)).astype(np.float32)
    want = importance_sampling(mlp.model, x, mlp.k, seed=[mlp.seed, 0])["log_px"]
    np.testing.assert_allclose(mlp.loaded.log_likelihood(x)["log_px"], want, **TOL)


def test_sample_is_stateless_and_seeded(case):
    a = case.loaded.sample(5, [1, 2], *case.cond(5))["x"].numpy()
    b = case.loaded.sample(5, [1, 2], *case.cond(5))["x"].numpy()
    c = case.loaded.sample(5, [1, 3], *case.cond(5))["x"].numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # Fixed-seed endpoints are deterministic too.
    np.testing.assert_array_equal(case.loaded.elbo(case.x, *case.cond())["elbo"],
                                  case.loaded.elbo(case.x, *case.cond())["elbo"])


def test_conditional_sample_broadcasts_one_condition_row(conv):
    got = conv.loaded.sample(4, [5, 6], conv.condition[:1])["x"]
    want = conv.model.sample(4, seed=[5, 6], condition=conv.condition[:1])
    np.testing.assert_allclose(got, want, **TOL)


def test_endpoints_never_read_the_seed_generator(mlp, tmp_path, monkeypatch):
    """An endpoint that falls back on the model's SeedGenerator (here an elbo_terms that drops
    its seed) is refused at export, and nothing is written."""
    model = mlp.model
    original = type(model).elbo_terms
    monkeypatch.setattr(model, "elbo_terms", lambda x, k=1, condition=None, seed=None, **kw:
                        original(model, x, k, condition, None, **kw), raising=False)
    with pytest.raises(RuntimeError, match="SeedGenerator"):
        export(model, tmp_path / "export", verbose=False)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ fresh process, CLI
FRESH_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import tensorflow as tf

    path, inputs, outputs = sys.argv[1:4]
    m = tf.saved_model.load(path)
    x = np.load(os.path.join(inputs, "x.npy"))
    cond = [np.load(os.path.join(inputs, "condition.npy"))] if os.path.exists(
        os.path.join(inputs, "condition.npy")) else []
    out = {}
    enc = m.encode(x, *cond)
    out["encode_mean"], out["encode_stddev"] = enc["mean"].numpy(), enc["stddev"].numpy()
    out["sample_a"] = m.sample(3, [1, 2], *[c[:3] for c in cond])["x"].numpy()
    out["sample_b"] = m.sample(3, [1, 2], *[c[:3] for c in cond])["x"].numpy()
    out["sample_c"] = m.sample(3, [2, 1], *[c[:3] for c in cond])["x"].numpy()
    out["log_px"] = m.log_likelihood(x, *cond)["log_px"].numpy()
    serving = m.signatures["serving_default"](x=tf.constant(x), **{"condition": tf.constant(c) for c in cond})
    out["serving_reconstruction"] = serving["reconstruction"].numpy()
    out["serving_elbo"] = serving["elbo"].numpy()
    np.savez(outputs, **out)
    assert "tfvae" not in sys.modules, "the SavedModel pulled in tfvae"
    assert not any(name.startswith("tfvae.") for name in sys.modules)
""")


def test_fresh_process_without_tfvae(conv, tmp_path):
    # One case (the conditional conv model, the richer signature): every endpoint of both cases
    # is checked against Python in this process above; this checks that plain TensorFlow loads
    # and runs an export with no tfvae installed.
    case = conv
    np.save(tmp_path / "x.npy", case.x)
    if case.condition is not None:
        np.save(tmp_path / "condition.npy", case.condition)
    outputs = tmp_path / "out.npz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    run = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, case.path, str(tmp_path), str(outputs)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = dict(np.load(outputs))

    m, x, kw = case.model, case.x, case.kw()
    q = m.encode(x, **kw)
    np.testing.assert_allclose(got["encode_mean"], q.mean(), **TOL)
    np.testing.assert_allclose(got["encode_stddev"], q.stddev(), **TOL)
    np.testing.assert_allclose(got["sample_a"], m.sample(3, seed=[1, 2], **case.kw(3)), **TOL)
    np.testing.assert_array_equal(got["sample_a"], got["sample_b"])
    assert np.abs(got["sample_a"] - got["sample_c"]).max() > 1e-3
    np.testing.assert_allclose(got["log_px"],
                               importance_sampling(m, x, case.k, seed=[case.seed, 0], **kw)["log_px"], **TOL)
    np.testing.assert_allclose(got["serving_reconstruction"], m.reconstruct(x, **kw), **TOL)
    np.testing.assert_allclose(got["serving_elbo"], m.elbo_terms(x, k=1, seed=[case.seed, 0], **kw)["elbo"], **TOL)


def saved_model_cli():
    here = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    found = here if os.path.exists(here) else shutil.which("saved_model_cli")
    if found is None:
        pytest.fail("saved_model_cli (shipped with tensorflow) not found next to python or on PATH")
    return found


def test_saved_model_cli_lists_every_endpoint_as_a_signature(conv):
    run = subprocess.run([saved_model_cli(), "show", "--dir", conv.path, "--all"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ENDPOINTS:
        assert f"signature_def['{name}']" in run.stdout
        assert callable(getattr(conv.loaded, name))
    assert set(conv.loaded.signatures) == set(ENDPOINTS)
    assert "inputs['condition']" in run.stdout and "outputs['log_px']" in run.stdout


def test_metadata_describes_the_export(case):
    meta = read_metadata(case.path)
    assert meta["data_shape"] == list(SHAPE)
    assert (meta["latent_dim"], meta["condition_dim"]) == (case.model.latent_dim, case.model.condition_dim)
    assert (meta["k"], meta["max_samples"], meta["seed"]) == (case.k, case.max_samples, [case.seed, 0])
    assert set(meta["endpoints"]) == set(ENDPOINTS)
    assert meta["endpoints"]["encode"]["outputs"]["mean"]["shape"] == [None, case.model.latent_dim]
    assert ("condition" in meta["endpoints"]["encode"]["inputs"]) == (case.condition is not None)
    assert meta["versions"]["tensorflow"] == tf.__version__
    # The config rebuilds the same architecture.
    assert meta["model_config"] == json.loads(json.dumps(case.model.get_config()))
    rebuilt = VAE.from_config(meta["model_config"])
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in case.model.weights]


# ------------------------------------------------------------------ bad inputs
def bad_calls(case):
    """(description, call) pairs that the loaded SavedModel must refuse."""
    m, x, cond = case.loaded, case.x, case.cond()
    calls = [
        ("wrong shape", lambda: m.encode(x[:, :7], *cond)),
        ("single example without batch axis", lambda: m.reconstruct(x[0], *cond)),
        # Tensors must have the signature's dtype (numpy arrays are converted, as by any tf.function).
        ("int tensor", lambda: m.encode(tf.constant(x.astype(np.int32)), *cond)),
        ("int tensor to a signature", lambda: m.signatures["elbo"](x=tf.constant(x.astype(np.int32)), **case.kw())),
        ("float64 z tensor", lambda: m.decode(tf.zeros((2, case.model.latent_dim), tf.float64), *case.cond(2))),
        ("float n", lambda: m.sample(tf.constant(2.0), [1, 2], *case.cond(2))),
        ("z of the wrong size", lambda: m.decode(np.zeros((2, case.model.latent_dim + 1), np.float32),
                                                 *case.cond(2))),
        ("sample n=0", lambda: m.sample(0, [1, 2], *case.cond(1))),
        ("sample n > max_samples", lambda: m.sample(case.max_samples + 1, [1, 2], *case.cond(1))),
        ("sample negative n", lambda: m.sample(-3, [1, 2], *case.cond(1))),
        ("seed of the wrong size", lambda: m.sample(2, [1, 2, 3], *case.cond(2))),
        ("z with NaN", lambda: m.decode(np.full((2, case.model.latent_dim), np.nan, np.float32), *case.cond(2))),
        ("empty z", lambda: m.decode(np.zeros((0, case.model.latent_dim), np.float32), *case.cond(0))),
    ]
    for name in ("encode", "reconstruct", "elbo", "log_likelihood", "serving_default"):
        endpoint = getattr(m, name)
        calls += [
            (f"{name}: NaN", lambda e=endpoint: e(np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x)
                                                  .astype(np.float32), *cond)),
            (f"{name}: Inf", lambda e=endpoint: e(x + np.float32(np.inf), *cond)),
            (f"{name}: empty batch", lambda e=endpoint: e(x[:0], *case.cond(0))),
        ]
    if case.condition is None:
        calls += [
            ("Bernoulli x = 2", lambda: m.encode(np.where(x > 0.5, 2.0, x).astype(np.float32))),
            ("Bernoulli x < 0", lambda: m.log_likelihood(x - 1.0)),
            ("condition for an unconditional model", lambda: m.encode(x, np.zeros((len(x), 3), np.float32))),
        ]
    else:
        c = case.condition
        calls += [
            ("missing condition", lambda: m.encode(x)),
            ("condition rows differ from x", lambda: m.encode(x, c[:2])),
            ("condition rows differ from z", lambda: m.decode(np.zeros((4, 2), np.float32), c[:3])),
            ("condition rows differ from n", lambda: m.sample(4, [1, 2], c[:2])),
            ("condition with NaN", lambda: m.elbo(x, np.full_like(c, np.nan))),
            ("condition of the wrong width", lambda: m.encode(x, c[:, :2])),
        ]
    return calls


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_bad_inputs_are_refused(kind, request):
    case = request.getfixturevalue(kind)
    returned = []
    for description, call in bad_calls(case):
        try:
            call()
        except REFUSED:
            continue
        returned.append(description)
    assert not returned, f"returned outputs instead of raising: {returned}"


@pytest.mark.parametrize("make_x, message", [
    (lambda x: x[:0], "empty batch"),
    (lambda x: np.where(x > 0.5, np.nan, x).astype(np.float32), "non-finite"),
    (lambda x: (x * 2).astype(np.float32), r"\[0, 1\] for a Bernoulli"),
])
def test_value_errors_say_what_was_expected(mlp, make_x, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        mlp.loaded.serving_default(make_x(mlp.x))


def test_sample_bounds_say_what_was_expected(mlp):
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1"):
        mlp.loaded.signatures["sample"](n=tf.constant(0), seed=tf.constant([1, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at most max_samples={mlp.max_samples}"):
        mlp.loaded.sample(mlp.max_samples + 1, [1, 2])
    assert mlp.loaded.sample(mlp.max_samples, [1, 2])["x"].shape == (mlp.max_samples, *SHAPE)


# ------------------------------------------------------------------ arguments, atomic write
@pytest.fixture(scope="module")
def linear():
    model = LinearGaussian(data_dim=5, latent_dim=2)
    perturb(model, 6)
    return model


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be"), ({"k": 2.5}, "k must be"), ({"k": True}, "k must be"),
    ({"max_samples": 0}, "max_samples must be"), ({"seed": 2**31}, "seed must be"),
])
def test_bad_export_arguments(linear, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export(linear, tmp_path / "export", verbose=False, **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_export_targets(linear, tmp_path):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ValueError, match="existing file"):
        export(linear, tmp_path / "file", verbose=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a SavedModel"):
        export(linear, tmp_path / "notes", verbose=False)
    assert (tmp_path / "file").read_text() == "keep me"
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["file", "notes"]
    with pytest.raises(TypeError, match="tfvae model"):
        export(object(), tmp_path / "export", verbose=False)


def test_export_replaces_an_existing_export_atomically(linear, tmp_path, capsys):
    x = np.random.default_rng(7).normal(size=(4, 5)).astype(np.float32)
    target = tmp_path / "export"
    first = export(linear, target, k=10, verbose=True)
    assert first == str(target) and os.path.isabs(first)
    assert str(target) in capsys.readouterr().out
    previous = tf.saved_model.load(first)   # keep the loaded object alive while its functions run
    before = previous.reconstruct(x)["reconstruction"].numpy()

    other = LinearGaussian(data_dim=5, latent_dim=2)
    perturb(other, 8)
    assert export(other, target, k=20, verbose=False) == first
    assert os.listdir(tmp_path) == ["export"]                       # no temporary directories left
    loaded = tf.saved_model.load(first)
    after = loaded.reconstruct(x)["reconstruction"].numpy()
    np.testing.assert_allclose(after, other.reconstruct(x), **TOL)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(loaded.log_likelihood(x)["log_px"],
                               importance_sampling(other, x, 20, seed=[0, 0])["log_px"], **TOL)
    assert read_metadata(first)["k"] == 20


def test_failed_export_leaves_the_previous_one(linear, tmp_path, monkeypatch):
    x = np.random.default_rng(9).normal(size=(3, 5)).astype(np.float32)
    target = tmp_path / "export"
    export(linear, target, k=10, verbose=False)
    files = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs)

    real_save = tf.saved_model.save

    def save_then_crash(obj, export_dir, *args, **kwargs):   # a crash after half the files are out
        real_save(obj, export_dir, *args, **kwargs)
        os.remove(os.path.join(export_dir, "saved_model.pb"))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(tf.saved_model, "save", save_then_crash)
    other = LinearGaussian(data_dim=5, latent_dim=2)
    perturb(other, 10)
    with pytest.raises(OSError, match="simulated"):
        export(other, target, k=10, verbose=False)
    with pytest.raises(OSError, match="simulated"):
        export(other, tmp_path / "new", k=10, verbose=False)

    assert os.listdir(tmp_path) == ["export"]                       # nothing at "new", no leftovers
    assert sorted(os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs) == files
    loaded = tf.saved_model.load(str(target))
    np.testing.assert_allclose(loaded.reconstruct(x)["reconstruction"], linear.reconstruct(x), **TOL)
    assert os.path.isfile(target / METADATA_PATH)


def test_failure_after_the_savedmodel_is_written(linear, tmp_path, monkeypatch):
    """A crash while writing the metadata (the last step) leaves no export either."""
    def crash(*args, **kwargs):
        raise OSError("crash while writing metadata (simulated)")

    monkeypatch.setattr(export_module.json, "dump", crash)
    with pytest.raises(OSError, match="simulated"):
        export(linear, tmp_path / "export", verbose=False)
    assert os.listdir(tmp_path) == []
