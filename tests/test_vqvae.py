"""VQ-VAE (tfvae.models.vqvae, made of the parts of tfvae.parts.codebook): quantisation against a
brute-force numpy nearest neighbour, the losses and their gradients against numpy, the
straight-through gradient, one EMA step against a numpy re-implementation, the constant KL and
the uniform prior, codebook usage against numpy, importance sampling = ELBO, fit, config round
trip and export."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.inference.importance import importance_sampling
from tfvae.models.vqvae import VQVAE
from tfvae.parts.codebook import codebook_usage, quantize, restart_dead_codes, straight_through

SHAPE = (16,)
L, D, K = 2, 3, 5
TINY = dict(data_shape=SHAPE, num_latents=L, embedding_dim=D, codebook_size=K, encoder={"type": "mlp", "hidden": [8]})
X = variant_helpers.structured_data(10, SHAPE, seed=1)


def tiny(**kwargs):
    """A TINY model moved away from its initialisation, so that several codes are in use. The
    initial weights are seeded: Keras draws them from the global seed, which earlier tests move."""
    keras.utils.set_random_seed(0)
    model = VQVAE(**TINY, **kwargs)
    rng = np.random.default_rng(3)
    for v in model.trainable_variables:
        v.assign(v + rng.normal(0, 0.5, v.shape).astype("float32"))
    return model


def brute_force_nearest(z_e, codebook):
    """Indices [N, L] and codes [N, L * D], one vector at a time, in float64."""
    z_e, codebook = np.asarray(z_e, np.float64), np.asarray(codebook, np.float64)
    n = z_e.shape[0]
    indices = np.zeros((n, L), int)
    for b in range(n):
        for l in range(L):
            vector = z_e[b, l * D:(l + 1) * D]
            indices[b, l] = min(range(len(codebook)), key=lambda j: sum((vector - codebook[j]) ** 2))
    return indices, codebook[indices].reshape(n, L * D)


def bernoulli_log_prob(x, p):
    return np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)


# ------------------------------------------------------------------ quantisation
def test_quantize_matches_brute_force_nearest_neighbour():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(K, D)).astype("float32")
    z_e = rng.normal(scale=1.5, size=(12, L * D)).astype("float32")
    codes, indices = quantize(z_e, codebook, L)
    want_indices, want_codes = brute_force_nearest(z_e, codebook)
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_array_equal(codes.numpy(), want_codes.astype("float32"))
    assert len(np.unique(want_indices)) >= 3
    # leading dimensions are kept: [k, B, L * D] -> [k, B, L]
    codes3, indices3 = quantize(z_e.reshape(3, 4, L * D), codebook, L)
    np.testing.assert_array_equal(indices3.numpy().reshape(12, L), want_indices)
    assert codes3.shape == (3, 4, L * D)


def test_straight_through_value_is_the_code_and_gradient_the_identity():
    rng = np.random.default_rng(1)
    codebook = rng.normal(size=(K, D)).astype("float32")
    z_e = tf.Variable(rng.normal(size=(4, L * D)).astype("float32"))
    w = rng.normal(size=(4, L * D)).astype("float32")
    codes, _ = quantize(z_e, codebook, L)
    with tf.GradientTape() as tape:
        z_q = straight_through(z_e, codes)
        f = tf.reduce_sum(w * tf.sin(z_q))
    np.testing.assert_array_equal(z_q.numpy(), codes.numpy())          # bit for bit
    # d f / d z_e = (d f / d z) at z = z_q = w cos(z_q)
    np.testing.assert_allclose(tape.gradient(f, z_e).numpy(), w * np.cos(codes.numpy()), rtol=1e-6)


def test_reconstruction_gradient_reaches_the_encoder_output_not_the_codebook():
    """Through the model's posterior: d log p(x|z_q) / d z_e equals d log p(x|z) / d z at the
    codes, and the reconstruction term alone gives the codebook no gradient."""
    model = tiny()
    z_e = tf.Variable(model.posterior_params(X))
    with tf.GradientTape(persistent=True) as tape:
        z = model.posterior_family.distribution(z_e).sample(seed=[1, 2])
        log_px_z = tf.reduce_sum(model.decode(z).log_prob(X))
    codes = tf.Variable(quantize(z_e, model.codebook, L)[0])
    with tf.GradientTape() as reference:
        direct = tf.reduce_sum(model.decode(codes).log_prob(X))
    np.testing.assert_allclose(tape.gradient(log_px_z, z_e).numpy(), reference.gradient(direct, codes).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert tape.gradient(log_px_z, model.codebook) is None


@pytest.mark.parametrize("ema", [False, True])
def test_loss_terms_and_codebook_gradient_match_numpy(ema):
    model = tiny(ema=ema, commitment_cost=0.3)
    z_e = model.posterior_params(X).numpy()
    codebook = model.codebook.numpy()
    indices, codes = brute_force_nearest(z_e, codebook)
    squared = ((z_e - codes) ** 2).sum(-1)                          # ||z_e - e||^2 per example
    log_px_z = bernoulli_log_prob(X, model.decode(codes.astype("float32")).mean().numpy())
    want_loss = -log_px_z.mean() + ((0.0 if ema else 1.0) + 0.3) * squared.mean()
    with tf.GradientTape() as tape:
        loss, terms = model.objective_and_terms(X)
    np.testing.assert_allclose(loss.numpy(), want_loss, rtol=1e-5)
    np.testing.assert_allclose(terms["log_px_z"].numpy(), log_px_z, rtol=1e-5)
    np.testing.assert_allclose(terms["quantization_error"].numpy(), squared, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), L * math.log(K), rtol=1e-6)
    np.testing.assert_allclose(terms["elbo"].numpy(), log_px_z - L * math.log(K), rtol=1e-5)
    if ema:
        assert all(v is not model.codebook for v in model.trainable_variables)
        return
    # Only the codebook loss moves codes: d/de_j = -(2/B) sum over vectors assigned to j of (z_e - e_j).
    want_grad = np.zeros_like(codebook, np.float64)
    for b in range(len(X)):
        for l in range(L):
            want_grad[indices[b, l]] -= 2 * (z_e[b, l * D:(l + 1) * D] - codebook[indices[b, l]]) / len(X)
    np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(loss, model.codebook)).numpy(), want_grad,
                               rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ EMA
def test_one_ema_step_matches_numpy_and_happens_only_in_training():
    decay, eps = 0.9, 1e-3
    model = tiny(ema=True, decay=decay, epsilon=eps)
    rng = np.random.default_rng(4)
    model.cluster_size.assign(rng.uniform(0.5, 3.0, K).astype("float32"))
    model.embed_sum.assign(rng.normal(size=(K, D)).astype("float32"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))   # isolates the EMA update
    n_old, m_old = model.cluster_size.numpy().astype(np.float64), model.embed_sum.numpy().astype(np.float64)
    z_e = model.posterior_params(X).numpy()
    indices, _ = brute_force_nearest(z_e, model.codebook.numpy())

    model.test_step(tf.constant(X))                       # test steps and objectives leave it alone
    model.objective(X, training=True)
    np.testing.assert_array_equal(model.cluster_size.numpy(), n_old.astype("float32"))

    model.train_step(tf.constant(X))                      # eager; `fit` runs the same step compiled
    counts, sums = np.zeros(K), np.zeros((K, D))
    for b in range(len(X)):
        for l in range(L):
            counts[indices[b, l]] += 1
            sums[indices[b, l]] += z_e[b, l * D:(l + 1) * D]
    n_new = decay * n_old + (1 - decay) * counts
    m_new = decay * m_old + (1 - decay) * sums
    total = n_new.sum()
    codebook = m_new / ((n_new + eps) / (total + K * eps) * total)[:, None]
    np.testing.assert_allclose(model.cluster_size.numpy(), n_new, rtol=1e-6)
    np.testing.assert_allclose(model.embed_sum.numpy(), m_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.codebook.numpy(), codebook, rtol=1e-5, atol=1e-6)

    # With restarts, the codes whose updated N_j is below the threshold move onto z_e vectors.
    restarting = tiny(ema=True, decay=decay, epsilon=eps, restart_threshold=1.5)
    restarting.set_weights(model.get_weights())
    restarting.cluster_size.assign(n_new.astype("float32"))
    restarting.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    z_e = restarting.posterior_params(X).numpy().reshape(-1, D)
    indices, _ = brute_force_nearest(z_e.reshape(len(X), L * D), restarting.codebook.numpy())
    dead = decay * n_new + (1 - decay) * np.bincount(indices.ravel(), minlength=K) < 1.5
    assert 0 < dead.sum() < K
    restarting.train_step(tf.constant(X))
    np.testing.assert_array_equal(restarting.cluster_size.numpy()[dead], 1.0)
    for code in restarting.codebook.numpy()[dead]:
        assert np.any(np.all(np.isclose(z_e, code, rtol=1e-6, atol=1e-7), axis=1))


def test_dead_codes_restart_at_batch_vectors():
    rng = np.random.default_rng(5)
    n = np.array([0.2, 3.0, 0.99, 1.0, 0.0], np.float32)            # threshold 1: codes 0, 2, 4 are dead
    m = rng.normal(size=(K, D)).astype("float32")
    codebook = rng.normal(size=(K, D)).astype("float32")
    vectors = rng.normal(size=(40, D)).astype("float32")
    got_n, got_m, got_codebook = (t.numpy() for t in restart_dead_codes(n, m, codebook, vectors, 1.0, [3, 4]))
    dead = n < 1.0
    np.testing.assert_array_equal(got_n, np.where(dead, 1.0, n))
    np.testing.assert_array_equal(got_codebook[~dead], codebook[~dead])
    np.testing.assert_array_equal(got_m[~dead], m[~dead])
    np.testing.assert_array_equal(got_m[dead], got_codebook[dead])
    for code in got_codebook[dead]:                                     # each one a vector of the batch
        assert np.any(np.all(vectors == code, axis=1))
    again = restart_dead_codes(n, m, codebook, vectors, 1.0, [3, 4])[2].numpy()
    np.testing.assert_array_equal(again, got_codebook)                  # stateless: same seed, same codes


def test_ema_starts_from_the_initial_codebook():
    model = VQVAE(**TINY, ema=True)
    np.testing.assert_array_equal(model.embed_sum.numpy(), model.codebook.numpy())
    np.testing.assert_array_equal(model.cluster_size.numpy(), np.ones(K))


# ------------------------------------------------------------------ prior, KL, bounds
@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_kl_is_num_latents_log_k_and_the_prior_is_uniform_on_codes(kl):
    model = tiny(kl=kl)
    terms = model.elbo_terms(X)
    np.testing.assert_allclose(terms["kl"].numpy(), np.full(len(X), L * math.log(K)), rtol=1e-6)
    prior = model.prior()
    codebook = model.codebook.numpy()
    z = prior.sample(4000, seed=[5, 6]).numpy()
    assert z.shape == (4000, L * D)
    indices, codes = brute_force_nearest(z, codebook)
    np.testing.assert_array_equal(z, codes.astype("float32"))           # every sample is made of codes
    frequencies = np.bincount(indices.ravel(), minlength=K) / indices.size
    np.testing.assert_allclose(frequencies, 1 / K, atol=4 * math.sqrt(0.2 * 0.8 / indices.size))
    np.testing.assert_allclose(prior.log_prob(z[:5]).numpy(), -L * math.log(K), rtol=1e-6)
    off = z[:3] + 0.01
    assert np.all(prior.log_prob(off).numpy() == -np.inf)


def test_importance_sampling_equals_the_elbo():
    model = tiny()
    lw = model.log_weights(X, 4, seed=[1, 1])
    np.testing.assert_array_equal(lw["log_qz"].numpy(), 0.0)
    np.testing.assert_allclose(lw["log_pz"].numpy(), -L * math.log(K), rtol=1e-6)
    elbo = model.elbo_terms(X)["elbo"].numpy()
    np.testing.assert_allclose(importance_sampling(model, X, k=7, compiled=False)["log_px"].numpy(), elbo, rtol=1e-5)


def test_importance_sampling_draws_a_point_mass_proposal_once(monkeypatch):
    """Its k weights are equal, so L_k = log w_1: k = 5000 costs one draw and gives the same."""
    model = tiny()
    draws = []
    log_weights = model.log_weights

    def counting(x, k, *args, **kwargs):
        draws.append(int(k))
        return log_weights(x, k, *args, **kwargs)

    monkeypatch.setattr(model, "log_weights", counting)
    estimate = importance_sampling(model, X, k=5000, compiled=False)
    assert draws == [1]
    np.testing.assert_allclose(estimate["log_px"].numpy(), model.elbo_terms(X)["elbo"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(estimate["elbo"].numpy(), estimate["log_px"].numpy(), rtol=1e-5)
    # A proposal that is not a point mass is drawn k times.
    draws.clear()
    gaussian = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros([len(X), L * D]))
    importance_sampling(model, X, k=3, compiled=False, proposal=gaussian)
    assert sum(draws) == 3


def test_codebook_usage_matches_numpy():
    rng = np.random.default_rng(7)
    indices = rng.choice([0, 2, 3, 6], p=[0.5, 0.25, 0.15, 0.1], size=(9, 4))
    counts = np.bincount(indices.ravel(), minlength=8)
    p = counts[counts > 0] / indices.size
    perplexity, used = codebook_usage(tf.constant(indices, tf.int32), 8)
    np.testing.assert_allclose(perplexity.numpy(), np.exp(-(p * np.log(p)).sum()), rtol=1e-5)
    assert used.numpy() == pytest.approx((counts > 0).sum() / 8)
    assert codebook_usage(tf.zeros([5, 2], tf.int32), 8)[0].numpy() == pytest.approx(1.0)
    assert codebook_usage(tf.range(8), 8)[0].numpy() == pytest.approx(8.0, rel=1e-5)


def test_log_probabilities_stay_float32_under_mixed_precision():
    model = VQVAE(**TINY, precision="mixed_bfloat16")
    loss, terms = model.objective_and_terms(X)
    assert loss.dtype == tf.float32 and all(t.dtype == tf.float32 for t in terms.values())
    assert model.codebook.dtype == "float32"


# ------------------------------------------------------------------ training, config, export
@pytest.mark.parametrize("options", [{}, {"ema": True, "restart_threshold": 1.0}])
def test_fit_decreases_the_loss(options):
    keras.utils.set_random_seed(0)
    model = VQVAE(**TINY, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = variant_helpers.structured_data(64, SHAPE, seed=2)
    history = model.fit(data, batch_size=16, epochs=6, verbose=0, shuffle=False).history
    for name in ("loss", "elbo", "perplexity", "codes_used", "quantization_error"):
        assert np.all(np.isfinite(history[name])), name
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert 1.0 <= min(history["perplexity"]) and max(history["perplexity"]) <= K


def test_config_round_trip_and_validation():
    model = tiny(ema=True, decay=0.95, commitment_cost=0.5, restart_threshold=0.5)
    model.update_codebook(model.posterior_params(X), quantize(model.posterior_params(X), model.codebook, L)[1])
    config = model.get_config()
    assert (config["ema"], config["decay"], config["commitment_cost"], config["restart_threshold"],
            config["latent_dim"]) == (True, 0.95, 0.5, 0.5, L * D)
    rebuilt = tfvae.get_model_class("vqvae").from_config(config)
    assert isinstance(rebuilt, VQVAE) and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.codebook.numpy(), model.codebook.numpy())
    np.testing.assert_array_equal(rebuilt.objective(X), model.objective(X))
    for bad in ({"decay": 1.0}, {"codebook_size": 0}, {"commitment_cost": -1.0}, {"ema": "yes"},
                {"latent_dim": 7}, {"restart_threshold": 1.0}, {"ema": True, "restart_threshold": -1.0}):
        with pytest.raises(ConfigError):
            VQVAE(**{**TINY, **bad})


def test_export_matches_the_python_model(tmp_path):
    model = tiny()
    loaded = variant_helpers.export_and_check(model, tmp_path / "export", X, k=3)
    np.testing.assert_allclose(loaded.log_likelihood(X)["log_px"].numpy(), model.elbo_terms(X)["elbo"].numpy(),
                               rtol=1e-5)            # a point-mass q: log p(x) = ELBO
    encoded = loaded.encode(X)
    codes = quantize(model.posterior_params(X), model.codebook, L)[0].numpy()
    np.testing.assert_array_equal(encoded["mean"].numpy(), codes)
    np.testing.assert_array_equal(encoded["stddev"].numpy(), 0.0)
    np.testing.assert_allclose(loaded.decode(codes)["mean"].numpy(), model.decode(codes).mean().numpy(), rtol=1e-6)
    np.testing.assert_allclose(loaded.sample(n=4, seed=[1, 2])["x"].numpy(), model.sample(4, seed=[1, 2]).numpy(),
                               rtol=1e-6)
