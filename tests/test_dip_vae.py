"""DIP-VAE (tfvae.models.dip_vae): the covariance penalties against numpy, the loss against the
VAE's negative ELBO plus a numpy penalty, training and config round trip (export: tests/test_contract.py)."""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.dip_vae import DIPVAE, dip_penalty

SHAPE = (16,)
TINY = dict(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [8]})
binary_data = functools.partial(variant_helpers.binary_data, shape=SHAPE)
twin = functools.partial(variant_helpers.twin, config=TINY)


X = binary_data(10, seed=1)


def numpy_penalty(mu, sigma, dip_type, lambda_od, lambda_d):
    """Written out entry by entry, in float64."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    n, L = mu.shape
    mean = mu.mean(axis=0)
    cov = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            cov[i, j] = sum((mu[b, i] - mean[i]) * (mu[b, j] - mean[j]) for b in range(n)) / n
            if dip_type == "ii" and i == j:
                cov[i, j] += sum(sigma[b, i] ** 2 for b in range(n)) / n
    off = sum(cov[i, j] ** 2 for i in range(L) for j in range(L) if i != j)
    diag = sum((cov[i, i] - 1.0) ** 2 for i in range(L))
    return lambda_od * off + lambda_d * diag


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_penalty_matches_numpy(dip_type):
    rng = np.random.default_rng(0)
    mu = (rng.normal(size=(7, 4)) @ rng.normal(size=(4, 4))).astype("float32")   # correlated means
    sigma = rng.uniform(0.1, 1.5, size=(7, 4)).astype("float32")
    got = dip_penalty(mu, sigma, dip_type, 3.0, 0.5).numpy()
    np.testing.assert_allclose(got, numpy_penalty(mu, sigma, dip_type, 3.0, 0.5), rtol=1e-5)
    # The two weights act on separate parts; np.cov (bias=True) as a second reference for Cov[mu].
    cov = np.cov(mu.astype(np.float64), rowvar=False, bias=True)
    if dip_type == "ii":
        cov = cov + np.diag((sigma.astype(np.float64) ** 2).mean(0))
    np.testing.assert_allclose(dip_penalty(mu, sigma, dip_type, 0.0, 1.0).numpy(),
                               ((np.diag(cov) - 1) ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(dip_penalty(mu, sigma, dip_type, 1.0, 0.0).numpy(),
                               (cov ** 2).sum() - (np.diag(cov) ** 2).sum(), rtol=1e-5)


def test_penalty_is_zero_for_whitened_means():
    # Means with batch covariance exactly I: DIP-I is 0; DIP-II adds E[sigma^2] to the diagonal.
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(50, 3))
    mu -= mu.mean(0)
    mu = mu @ np.linalg.inv(np.linalg.cholesky(mu.T @ mu / 50)).T
    sigma = np.full((50, 3), 0.5)
    assert abs(dip_penalty(mu, sigma, "i", 10.0, 10.0).numpy()) < 1e-8
    np.testing.assert_allclose(dip_penalty(mu, sigma, "ii", 10.0, 10.0).numpy(), 10 * 3 * 0.25 ** 2, rtol=1e-4)


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_loss_is_negative_elbo_plus_penalty(dip_type):
    vae = VAE(**TINY, seed=3)
    for v in vae.trainable_variables:      # away from the initialisation: means spread out
        v.assign(v + np.random.default_rng(2).normal(0, 0.5, v.shape).astype("float32"))
    terms = vae.elbo_terms(X, 1, seed=[4, 5])
    negative_elbo = -np.mean(terms["log_px_z"].numpy() - terms["kl"].numpy())

    # Penalty weights 0: the VAE's loss, and the same terms, for the same seed.
    plain = twin(DIPVAE, vae, dip_type=dip_type, lambda_od=0.0, lambda_d=0.0)
    loss, got = plain.objective_and_terms(X, seed=[4, 5])
    np.testing.assert_allclose(loss.numpy(), negative_elbo, rtol=1e-6)
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_array_equal(got[name], terms[name])

    model = twin(DIPVAE, vae, dip_type=dip_type, lambda_od=2.0, lambda_d=5.0)
    q = vae.encode(X)
    penalty = numpy_penalty(q.mean().numpy(), q.stddev().numpy(), dip_type, 2.0, 5.0)
    assert penalty > 1e-2
    np.testing.assert_allclose(model.objective_and_terms(X, seed=[4, 5])[0].numpy(), negative_elbo + penalty,
                               rtol=1e-5)


def test_zero_weights_give_the_vae_training_step():
    vae = VAE(**TINY, seed=5)
    dip = twin(DIPVAE, vae, lambda_od=0.0, lambda_d=0.0)
    steps = []
    for model in (vae, dip):                # each model's own seed stream: the same draws
        with tf.GradientTape() as tape:
            loss = model.objective(X, training=True)
        steps.append((loss.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]))
    (loss_vae, grads_vae), (loss_dip, grads_dip) = steps
    np.testing.assert_allclose(loss_dip, loss_vae, rtol=1e-6)
    for a, b in zip(grads_dip, grads_vae):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_fit_decreases_the_loss(dip_type):
    keras.utils.set_random_seed(0)
    model = DIPVAE(**TINY, dip_type=dip_type, lambda_od=10.0, lambda_d=10.0 if dip_type == "ii" else 100.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(binary_data(64, seed=2), batch_size=16, epochs=6, verbose=0, shuffle=False).history
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(history["elbo"]))
    assert losses[-1] < losses[0], losses


def test_config_round_trip_and_validation():
    model = DIPVAE(**TINY, dip_type="i", lambda_od=1.5, lambda_d=15.0, seed=2)
    config = model.get_config()
    assert (config["dip_type"], config["lambda_od"], config["lambda_d"]) == ("i", 1.5, 15.0)
    rebuilt = tfvae.get_model_class("dip_vae").from_config(config)
    assert isinstance(rebuilt, DIPVAE) and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.objective_and_terms(X, seed=[1, 1])[0],
                                  model.objective_and_terms(X, seed=[1, 1])[0])
    for bad in ({"dip_type": "iii"}, {"lambda_od": -1.0}, {"lambda_d": "ten"}):
        with pytest.raises(ConfigError):
            DIPVAE(**TINY, **bad)
