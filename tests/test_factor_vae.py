"""FactorVAE (tfvae.models.factor_vae): the density-ratio trick against the closed-form total
correlation of a correlated Gaussian, the per-dimension permutation against numpy, the loss
against the VAE's negative ELBO plus a numpy forward pass of the discriminator, the two
optimizers' separation, fit, config round trip and saved weights (export: tests/test_contract.py)."""
import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import variant_helpers
from tfvae import seeds
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.factor_vae import (FactorVAE, discriminator_step, discriminator_terms, make_discriminator,
                                     make_discriminator_optimizer, permute_dims)
from tfvae.seeds import as_seed

SHAPE = (16,)
TINY = dict(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [8]}, discriminator_hidden=[16])
binary_data = functools.partial(variant_helpers.binary_data, shape=SHAPE)
structured_data = functools.partial(variant_helpers.structured_data, shape=SHAPE)

X = binary_data(10, seed=1)


def vae_twin(model: FactorVAE) -> VAE:
    """A VAE with `model`'s encoder, decoder and likelihood weights and sampling seed."""
    config = {k: v for k, v in TINY.items() if k != "discriminator_hidden"}
    vae = VAE(**config, seed=model.seed)
    for name in ("encoder_net", "decoder_net", "likelihood"):
        getattr(vae, name).set_weights(getattr(model, name).get_weights())
    return vae


def perturb(model, scale=0.5, seed=2):
    """Moves the weights away from the initialisation (posteriors that differ per example)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v + rng.normal(0, scale, v.shape).astype("float32"))


def numpy_logits(discriminator, z):
    """D's logits by hand, in float64: Dense layers with LeakyReLU(0.2) between them."""
    weights = discriminator.get_weights()
    h = np.asarray(z, np.float64)
    for i in range(0, len(weights), 2):
        h = h @ weights[i].astype(np.float64) + weights[i + 1].astype(np.float64)
        if i + 2 < len(weights):
            h = np.where(h > 0, h, 0.2 * h)
    return h[:, 0]


# ------------------------------------------------------------------ (1) density-ratio trick
def train_on_gaussian(rho, steps=400, batch=1024):
    """D trained alone, by the module's own step, on z ~ N(0, [[1, rho], [rho, 1]])."""
    keras.utils.set_random_seed(0)
    discriminator = make_discriminator(2, (32, 32))
    optimizer = make_discriminator_optimizer(3e-3)
    optimizer.build(discriminator.trainable_variables)
    chol = tf.constant(np.linalg.cholesky([[1.0, rho], [rho, 1.0]]), tf.float32)

    @tf.function
    def step(i):
        z = tf.matmul(tf.random.stateless_normal([batch, 2], seed=tf.stack([i, 0])), chol, transpose_b=True)
        return discriminator_step(discriminator, optimizer, z, tf.stack([i, 1]))

    for i in range(steps):
        step(tf.constant(i))
    z = tf.matmul(tf.random.stateless_normal([20000, 2], seed=[12345, 6]), chol, transpose_b=True).numpy()
    return discriminator, z


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_discriminator_estimates_the_total_correlation_of_a_gaussian(rho):
    discriminator, z = train_on_gaussian(rho)
    true_tc = -0.5 * math.log(1 - rho**2)           # KL(N(0, Sigma) || N(0, I)) for unit variances
    estimate = float(np.mean(discriminator(z).numpy()))
    assert abs(estimate - true_tc) < 0.15, (estimate, true_tc)
    # Pointwise, the logit approximates log q(z) - log q(z_1) q(z_2) (a quadratic form).
    log_ratio = (-0.5 * math.log(1 - rho**2)
                 - (rho**2 * (z**2).sum(1) - 2 * rho * z[:, 0] * z[:, 1]) / (2 * (1 - rho**2)))
    logits = discriminator(z).numpy()[:, 0]
    inner = np.all(np.abs(z) < 2, axis=1)             # where the training data are dense
    assert np.mean(np.abs(logits - log_ratio)[inner]) < 0.25
    # The module's tc term is the same mean logit on the real samples.
    terms = discriminator_terms(discriminator, z, [0, 0])
    np.testing.assert_allclose(terms["tc"].numpy(), estimate, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ (2) the permutation
def test_permute_dims_permutes_each_column_independently():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4)).astype("float32")
    seed = [3, 4]
    got = permute_dims(z, seed).numpy()
    # Each column holds the same values as before, in another order.
    np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(z, axis=0))
    # The order is numpy's argsort of the same stateless noise, column by column.
    noise = seeds.uniform(z.shape, as_seed(seed)).numpy()
    want = np.stack([z[np.argsort(noise[:, l], kind="stable"), l] for l in range(4)], axis=1)
    np.testing.assert_array_equal(got, want)
    # Columns move independently: the row index each value came from differs between columns.
    source = np.stack([np.array([np.flatnonzero(z[:, l] == v)[0] for v in got[:, l]]) for l in range(4)], axis=1)
    assert np.mean(source[:, 0] == source[:, 1]) < 0.2 and np.mean(source[:, 0] == np.arange(50)) < 0.2
    # Same seed, same permutation; another seed, another one.
    np.testing.assert_array_equal(permute_dims(z, seed).numpy(), got)
    assert not np.array_equal(permute_dims(z, [3, 5]).numpy(), got)


def test_permutation_breaks_the_joint():
    # Two identical columns (correlation 1): after permuting, the correlation is ~ N(0, 1/B).
    column = np.random.default_rng(1).normal(size=(2000, 1))
    z = np.concatenate([column, column, -column], axis=1).astype("float32")
    permuted = permute_dims(z, [7, 7]).numpy()
    corr = np.corrcoef(permuted, rowvar=False)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.1), corr
    np.testing.assert_allclose(permuted.mean(0), z.mean(0), rtol=1e-4, atol=1e-5)   # marginals kept


# ------------------------------------------------------------------ (3) the loss and the VAE
def test_loss_is_negative_elbo_plus_gamma_times_the_discriminator_logit():
    model = FactorVAE(**TINY, gamma=3.0, seed=3)
    perturb(model)
    vae = vae_twin(model)
    terms_vae = vae.elbo_terms(X, 1, seed=[4, 5])
    negative_elbo = -np.mean(terms_vae["log_px_z"].numpy() - terms_vae["kl"].numpy())
    loss, terms = model.objective_and_terms(X, seed=[4, 5])
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_array_equal(terms[name], terms_vae[name])
    # The same draw of z, reproduced from the stateless seed, through D by hand.
    z = model.encode(X).experimental_sample_and_log_prob(1, seed=as_seed([4, 5]))[0].numpy()[0]
    logits = numpy_logits(model.discriminator, z)
    assert np.std(logits) > 1e-3
    np.testing.assert_allclose(terms["tc"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss.numpy(), negative_elbo + 3.0 * logits.mean(), rtol=1e-5)


def test_gamma_zero_is_the_vae_loss_and_gradient():
    model = FactorVAE(**TINY, gamma=0.0, seed=5)
    perturb(model, seed=4)
    vae = vae_twin(model)
    steps = []
    for m, variables in ((vae, vae.trainable_variables), (model, model.optimized_variables)):
        with tf.GradientTape() as tape:           # each model's own seed stream: the same draws
            loss = m.objective(X, training=True)
        steps.append((loss.numpy(), tape.gradient(loss, variables)))
    (loss_vae, grads_vae), (loss_f, grads_f) = steps
    np.testing.assert_allclose(loss_f, loss_vae, rtol=1e-6)
    assert len(grads_f) == len(grads_vae) == len(vae.trainable_variables)
    for a, b in zip(grads_f, grads_vae):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ (4) two optimizers
def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


@pytest.mark.parametrize("vae_rate, disc_rate", [(0.0, 1e-2), (1e-2, 0.0)])
def test_each_optimizer_updates_only_its_own_network(vae_rate, disc_rate):
    model = FactorVAE(**TINY, gamma=5.0, discriminator_learning_rate=disc_rate, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(vae_rate))
    vae_vars, disc_vars = model.optimized_variables, model.discriminator.trainable_variables
    assert len(vae_vars) + len(disc_vars) == len(model.trainable_variables)
    vae_before, disc_before = snapshot(vae_vars), snapshot(disc_vars)
    metrics = model.train_step(X)
    assert all(np.isfinite(float(metrics[k])) for k in ("loss", "tc", "disc_loss", "disc_accuracy"))
    # A network moves (every one of its variables) exactly when its own optimizer's rate is > 0.
    for before, variables, rate in ((vae_before, vae_vars, vae_rate), (disc_before, disc_vars, disc_rate)):
        moved = changed(before, variables)
        assert all(moved) if rate > 0 else not any(moved), (rate, moved)
    assert int(model.discriminator_optimizer.iterations.numpy()) == 1


def test_discriminator_loss_gives_the_encoder_no_gradient():
    model = FactorVAE(**TINY)
    encoder = model.encoder_net.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        z = model.encode(X).sample(seed=[1, 1])
        terms = discriminator_terms(model.discriminator, z, [2, 2])
        vae_tc = tf.reduce_mean(model.tc_logits(z))
    assert all(g is None for g in tape.gradient(terms["disc_loss"], encoder))
    assert all(g is not None for g in tape.gradient(terms["disc_loss"], model.discriminator.trainable_variables))
    # ...while the VAE's TC term does reach the encoder, through z.
    assert any(g is not None and np.any(g.numpy() != 0) for g in tape.gradient(vae_tc, encoder))
    # The BCE by hand: real labelled 1, permuted labelled 0.
    real = numpy_logits(model.discriminator, z.numpy())
    fake = numpy_logits(model.discriminator, permute_dims(z, [2, 2]).numpy())
    bce = 0.5 * (np.mean(np.log1p(np.exp(-real))) + np.mean(np.log1p(np.exp(fake))))
    np.testing.assert_allclose(terms["disc_loss"].numpy(), bce, rtol=1e-5)
    np.testing.assert_allclose(terms["disc_accuracy"].numpy(), (np.sum(real > 0) + np.sum(fake < 0)) / 20)


# ------------------------------------------------------------------ (5) fit, config, weights, export
def test_fit_config_and_weights_with_the_discriminator(tmp_path):
    keras.utils.set_random_seed(0)
    model = FactorVAE(**TINY, gamma=2.0, discriminator_learning_rate=1e-3, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), steps_per_execution=2)
    history = model.fit(structured_data(64, seed=2), batch_size=16, epochs=4, verbose=0).history
    for name in ("loss", "elbo", "kl", "tc", "disc_loss", "disc_accuracy"):
        assert name in history and np.all(np.isfinite(history[name])), name
    assert history["elbo"][-1] > history["elbo"][0], history["elbo"]
    assert int(model.discriminator_optimizer.iterations.numpy()) == 16

    config = model.get_config()
    assert (config["gamma"], config["discriminator_hidden"], config["discriminator_learning_rate"]) == \
        (2.0, [16], 1e-3)
    clone = tfvae.get_model_class("factor_vae").from_config(config)
    assert type(clone) is FactorVAE and clone.get_config() == config

    # Saved weights carry D and its optimizer's state.
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    clone.load_weights(path)
    np.testing.assert_array_equal(clone.objective_and_terms(X, seed=[2, 2])[0],
                                  model.objective_and_terms(X, seed=[2, 2])[0])
    for a, b in zip(clone.discriminator_optimizer.variables, model.discriminator_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kwargs, key", [
    ({"gamma": -1.0}, "gamma"), ({"discriminator_hidden": []}, "discriminator_hidden"),
    ({"discriminator_hidden": [8, 0]}, "discriminator_hidden"),
    ({"discriminator_learning_rate": "fast"}, "discriminator_learning_rate")])
def test_bad_arguments_raise_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        FactorVAE(**{**TINY, **kwargs})


def test_mixed_precision_keeps_the_discriminator_and_terms_float32():
    model = FactorVAE(**TINY, precision="mixed_bfloat16")
    loss, terms = model.objective_and_terms(X, seed=[1, 2])
    assert loss.dtype == tf.float32 and all(t.dtype == tf.float32 for t in terms.values())
    assert model.discriminator.compute_dtype == "float32"
    # The logits are D's float32 forward pass of the (float32) z, by hand.
    z = model.encode(X).experimental_sample_and_log_prob(1, seed=as_seed([1, 2]))[0].numpy()[0]
    np.testing.assert_allclose(terms["tc"], numpy_logits(model.discriminator, z), rtol=1e-5, atol=1e-5)


def test_preset_builds_the_variant():
    model = tfvae.from_preset("factor_vae_shapes", compile=False)
    assert type(model) is FactorVAE and model.latent_dim == 10
    assert (model.gamma, model.get_config()["discriminator_hidden"]) == (35.0, [256, 256])
    assert model.discriminator.layers[0].kernel.shape == (10, 256)
