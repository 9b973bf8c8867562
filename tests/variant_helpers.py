"""Helpers shared by the variant tests: small data sets, and a model's twin of another class."""
import numpy as np


def binary_data(n, shape, seed=0):
    """n examples of `shape`, every pixel 0 or 1 with probability 1/2."""
    return (np.random.default_rng(seed).random((n, *shape)) > 0.5).astype("float32")


def structured_data(n, shape, seed=0):
    """Three random binary prototypes of `shape` with 10% of the pixels flipped: data that a
    2- or 3-dimensional latent fits."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(123).random((3, *shape)) > 0.5
    x = prototypes[rng.integers(0, 3, n)]
    return np.where(rng.random(x.shape) < 0.1, ~x, x).astype("float32")


def twin(cls, reference, config, **kwargs):
    """A `cls` model built from `config` (and kwargs) with `reference`'s weights and
    sampling-stream seed."""
    model = cls(**config, seed=reference.seed, **kwargs)
    model.set_weights(reference.get_weights())
    return model


def perturb(model, scale=0.5, seed=2):
    """`model` with every trainable weight moved by N(0, scale^2) noise from `seed`, away from
    the initialisation (varied posteriors, confident logits); returns the model."""
    for v in model.trainable_variables:
        v.assign(v + np.random.default_rng(seed).normal(0, scale, v.shape).astype("float32"))
    return model


def export_and_check(model, directory, x, k, seed=7, max_samples=5):
    """Exports `model` with `k` importance samples, reloads the SavedModel and checks two of its
    endpoints against the Python model: `elbo` against `elbo_terms(x, 1, seed=[seed, 0])` (the
    export's fixed seed), and `log_likelihood` against `tfvae.evaluate(..., seed=seed)`, whose one
    batch draws from the same seed. Returns the loaded SavedModel for further checks."""
    import tensorflow as tf

    import tfvae
    path = tfvae.export(model, directory, k=k, max_samples=max_samples, seed=seed, verbose=False)
    loaded = tf.saved_model.load(path)
    got, want = loaded.elbo(x), model.elbo_terms(x, k=1, seed=[seed, 0])
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), rtol=1e-5, atol=1e-4)
    assert np.ptp(got["elbo"].numpy()) > 1e-3, "the examples' ELBOs should differ"
    log_px = loaded.log_likelihood(x)["log_px"].numpy()
    assert np.all(np.isfinite(log_px))
    report = tfvae.evaluate(model, x, k=k, seed=seed, batch_size=len(x), verbose=False, return_per_example=True)
    np.testing.assert_allclose(log_px, report["per_example"]["log_px"], rtol=1e-5, atol=1e-4)
    return loaded
