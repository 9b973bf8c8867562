"""Gumbel-softmax VAE (tfvae.models.gumbel_vae): the relaxed densities against TFP's
RelaxedOneHotCategorical, draws against the Gumbel-max trick, the discrete KL against numpy,
the discrete model's log p(x) and ELBO against enumeration of all codes, the temperature
schedule against its formula, training, config round trip and export."""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models.gumbel_vae import GumbelVAE
from tfvae.parts.categorical import (OneHotProduct, RelaxedOneHotProduct, annealed_temperature,
                                     categorical_kl_to_uniform)

tfd = tfp.distributions

SHAPE = (16,)
N, K = 2, 3
TINY = dict(data_shape=SHAPE, num_latents=N, categories=K, encoder={"type": "mlp", "hidden": [8]})
binary_data = functools.partial(variant_helpers.binary_data, shape=SHAPE)
X = binary_data(10, seed=1)


perturbed = variant_helpers.perturb     # weights away from the initialisation


def tfp_log_prob(logits, y, categories, tau):
    """sum over categoricals of TFP's RelaxedOneHotCategorical.log_prob, slice by slice."""
    bounds = np.cumsum([0, *categories])
    return sum(tfd.RelaxedOneHotCategorical(tau, logits=logits[..., a:b]).log_prob(y[..., a:b])
               for a, b in zip(bounds[:-1], bounds[1:]))


def tfp_one_hot_log_prob(logits, z, categories):
    """sum over categoricals of TFP's OneHotCategorical.log_prob, slice by slice."""
    bounds = np.cumsum([0, *categories])
    return sum(tfd.OneHotCategorical(logits=logits[..., a:b]).log_prob(z[..., a:b])
               for a, b in zip(bounds[:-1], bounds[1:]))


def numpy_kl(logits, categories):
    """sum_i sum_k pi_ik log(pi_ik K_i), float64, one categorical at a time."""
    logits = np.asarray(logits, np.float64)
    bounds = np.cumsum([0, *categories])
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        l = logits[..., a:b]
        pi = np.exp(l - l.max(-1, keepdims=True))
        pi /= pi.sum(-1, keepdims=True)
        total = total + (pi * np.log(pi * (b - a))).sum(-1)
    return total


@pytest.mark.parametrize("categories", [(4, 4), (3, 3, 5)])
def test_density_matches_tfp_and_draws_lie_on_the_simplices(categories):
    rng = np.random.default_rng(0)
    logits = (2 * rng.normal(size=(3, sum(categories)))).astype("float32")
    q = RelaxedOneHotProduct(logits, categories, 0.7)
    assert q.batch_shape == (3,) and q.event_shape == (sum(categories),)
    z, log_q = q.experimental_sample_and_log_prob(5, seed=[3, 4])
    assert z.shape == (5, 3, sum(categories))
    bounds = np.cumsum([0, *categories])
    for a, b in zip(bounds[:-1], bounds[1:]):
        np.testing.assert_allclose(z[..., a:b].numpy().sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(log_q, tfp_log_prob(logits, z, categories, 0.7), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(q.sample(5, seed=[3, 4]), z)          # one draw path
    # TFP's own draws, scored by both
    y = tfd.RelaxedOneHotCategorical(0.7, logits=logits[:, :categories[0]]).sample(2, seed=[5, 6])
    y = tf.concat([y, tf.zeros([2, 3, sum(categories) - categories[0]]) + 1.0 / categories[-1]], -1)
    np.testing.assert_allclose(q.log_prob(y), tfp_log_prob(logits, y, categories, 0.7), rtol=1e-5, atol=1e-4)
    assert np.all(np.isneginf(q.log_prob(-z).numpy()))                   # outside the support
    with pytest.raises(NotImplementedError):
        q.mean()


def test_argmax_of_draws_follows_the_categorical():
    # The Gumbel-max trick: argmax of a relaxed draw is an exact draw of Cat(softmax(logits)).
    logits = np.array([[1.0, -0.5, 0.3, 2.0]], np.float32)
    z = RelaxedOneHotProduct(logits, (4,), 0.5).sample(20000, seed=[7, 8]).numpy()[:, 0]
    frequencies = np.bincount(z.argmax(-1), minlength=4) / len(z)
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(frequencies, probs, atol=4 * np.sqrt(0.25 / len(z)))


def test_confident_logits_give_finite_densities():
    # log y_k would underflow to -inf (y_k = 0) without the floor; q and p stay finite.
    logits = np.array([[60.0, 0.0, 0.0, -60.0]], np.float32)
    q = RelaxedOneHotProduct(logits, (4,), 0.5)
    prior = RelaxedOneHotProduct(np.zeros(4, np.float32), (4,), 0.5)
    z, log_q = q.experimental_sample_and_log_prob(50, seed=[1, 1])
    assert np.all(z.numpy() > 0)
    assert np.all(np.isfinite(log_q)) and np.all(np.isfinite(prior.log_prob(z)))
    np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-4)


def test_discrete_kl_closed_form():
    rng = np.random.default_rng(1)
    logits = (3 * rng.normal(size=(4, 11))).astype("float32")
    np.testing.assert_allclose(categorical_kl_to_uniform(logits, (3, 3, 5)), numpy_kl(logits, (3, 3, 5)), rtol=1e-5)
    # and TFP's categorical KL as a second reference
    blocks = np.split(logits, [3, 6], axis=-1)
    want = sum(tfd.kl_divergence(tfd.Categorical(logits=b), tfd.Categorical(logits=np.zeros_like(b))) for b in blocks)
    np.testing.assert_allclose(categorical_kl_to_uniform(logits, (3, 3, 5)), want, rtol=1e-5)
    # 0 for uniform logits; log K per categorical in the one-hot limit
    np.testing.assert_allclose(categorical_kl_to_uniform(np.full((2, 30), 0.7, np.float32), (10,) * 3), 0, atol=1e-6)
    one_hot = np.tile(np.array([0, 200.0, 0, 0, 0], np.float32), 3)
    np.testing.assert_allclose(categorical_kl_to_uniform(one_hot, (5,) * 3), 3 * np.log(5), rtol=1e-6)


def test_one_hot_draws_are_the_argmax_of_the_relaxed_ones():
    rng = np.random.default_rng(2)
    logits = (2 * rng.normal(size=(3, 11))).astype("float32")
    categories = (3, 3, 5)
    q = OneHotProduct(logits, categories)
    z = q.sample(4, seed=[8, 9]).numpy()
    y = RelaxedOneHotProduct(logits, categories, 0.3).sample(4, seed=[8, 9]).numpy()   # same Gumbel noise
    for a, b in ((0, 3), (3, 6), (6, 11)):
        np.testing.assert_array_equal(z[..., a:b], np.eye(b - a)[y[..., a:b].argmax(-1)])
        want = tfd.OneHotCategorical(logits=logits[:, a:b]).log_prob(z[..., a:b])
        np.testing.assert_allclose(OneHotProduct(logits[:, a:b], (b - a,)).log_prob(z[..., a:b]), want, rtol=1e-5)
        probs = np.exp(logits[:, a:b]) / np.exp(logits[:, a:b]).sum(-1, keepdims=True)
        np.testing.assert_allclose(q.mean()[:, a:b], probs, rtol=1e-5)
    np.testing.assert_allclose(q.log_prob(z), tfp_one_hot_log_prob(logits, z, categories), rtol=1e-5)


def test_discrete_evaluation_against_brute_force_enumeration():
    # 2 latents of 3 classes: the 9 codes enumerated give log p(x) and the ELBO exactly.
    keras.utils.set_random_seed(4)
    model = perturbed(GumbelVAE(**TINY, tau0=0.8, tau_min=0.8), scale=0.3)   # q puts > 1% on every code
    x = X[:4]
    codes = np.array([np.concatenate([np.eye(K)[i], np.eye(K)[j]]) for i in range(K) for j in range(K)], np.float32)
    log_px_z = model.decode(np.repeat(codes[:, None], len(x), 1)).log_prob(x).numpy().astype(np.float64)   # [9, B]
    exact_log_px = np.logaddexp.reduce(log_px_z - np.log(K ** N), axis=0)
    logits = model.posterior_params(x).numpy()
    log_q = np.stack([tfp_one_hot_log_prob(logits, np.broadcast_to(c, logits.shape), (K,) * N) for c in codes])
    exact_log_px_z = (np.exp(log_q) * log_px_z).sum(0)
    exact_elbo = exact_log_px_z - numpy_kl(logits, (K,) * N)
    assert np.all(exact_elbo < exact_log_px - 1e-3)
    k = 4000
    estimate = tfvae.importance_sampling(model, x, k=k, seed=3, compiled=False)
    # standard errors of the two k-sample estimates, from the exact moments under q
    log_w = log_px_z - np.log(K ** N) - log_q
    relative_variance = np.exp(np.logaddexp.reduce(log_q + 2 * log_w, axis=0) - 2 * exact_log_px) - 1
    se_log_px = np.sqrt(relative_variance / k)
    se_log_px_z = np.sqrt((np.exp(log_q) * (log_px_z - exact_log_px_z) ** 2).sum(0) / k)
    assert np.all(np.abs(estimate["log_px"] - exact_log_px) < 4 * se_log_px + 1e-3), (estimate["log_px"], exact_log_px)
    assert np.all(np.abs(estimate["elbo"] - exact_elbo) < 4 * se_log_px_z + 1e-3)
    assert np.all(se_log_px < 0.25) and np.all(se_log_px_z < 0.25)       # the checks have teeth
    np.testing.assert_allclose(estimate["kl"], numpy_kl(logits, (K,) * N), rtol=1e-5)
    # the decoder sees one-hot codes; samples decode one-hot prior draws
    z = model.encode(x).sample(seed=[1, 2]).numpy()
    assert set(np.unique(z)) == {0.0, 1.0} and np.all(z.reshape(len(x), N, K).sum(-1) == 1)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_training_objective_uses_relaxed_latents(kl):
    model = perturbed(GumbelVAE(**TINY, kl=kl, tau0=0.8, tau_min=0.8))
    logits = model.posterior_params(X).numpy()
    with model.relaxed_latents():
        q = model.encode(X)
        assert isinstance(q, RelaxedOneHotProduct) and isinstance(model.prior(), RelaxedOneHotProduct)
        z, log_q = q.experimental_sample_and_log_prob(1, seed=[4, 5])
        log_p = model.prior().log_prob(z)
        terms = model.elbo_terms(X, 1, seed=[4, 5])
    # The relaxed densities of the model are TFP's, at the stored temperature.
    np.testing.assert_allclose(log_q, tfp_log_prob(logits, z, (K,) * N, 0.8), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(log_p, tfp_log_prob(np.zeros_like(logits), z, (K,) * N, 0.8), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(terms["log_px_z"], model.decode(z[0]).log_prob(X), rtol=1e-6)
    want_kl = numpy_kl(logits, (K,) * N) if kl == "analytic" else (log_q - log_p).numpy()[0]
    np.testing.assert_allclose(terms["kl"], want_kl, rtol=1e-5, atol=1e-5)
    # A training step runs relaxed: its gradient reaches the encoder through the draws.
    with tf.GradientTape() as tape, model.relaxed_latents():
        loss = -tf.reduce_mean(model.elbo_terms(X, 1, seed=[4, 5])["log_px_z"])
    assert np.all(np.isfinite(loss)) and tf.norm(tape.gradient(loss, model.encoder_net.trainable_variables[0])) > 0
    assert isinstance(model.encode(X), OneHotProduct)                 # outside: one-hot again


def test_relaxed_evaluation_scores_the_relaxed_model():
    model = perturbed(GumbelVAE(**TINY, tau0=0.8, tau_min=0.8, evaluate_as="relaxed"))
    weights = model.log_weights(X, 3, seed=[6, 7])
    z, log_q = model.encode(X).experimental_sample_and_log_prob(3, seed=[6, 7])
    logits = model.posterior_params(X).numpy()
    np.testing.assert_allclose(weights["log_qz"], tfp_log_prob(logits, z, (K,) * N, 0.8), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(weights["log_pz"], tfp_log_prob(np.zeros_like(logits), z, (K,) * N, 0.8),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(weights["log_w"], model.decode(z).log_prob(X) + weights["log_pz"] - weights["log_qz"],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.elbo_terms(X, seed=[1, 1])["kl"], numpy_kl(logits, (K,) * N), rtol=1e-5)


def test_temperature_schedule_follows_the_formula():
    steps = np.array([0, 1, 10, 1000, 10 ** 6])
    np.testing.assert_allclose(annealed_temperature(steps, 2.0, 0.3, 1e-3),
                               np.maximum(0.3, 2.0 * np.exp(-1e-3 * steps)), rtol=1e-6)
    model = GumbelVAE(**TINY, tau0=1.0, tau_min=0.2, anneal_rate=0.05)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    np.testing.assert_allclose(model.temperature.numpy(), 1.0)
    model.fit(binary_data(28, seed=3), batch_size=4, epochs=1, verbose=0)      # 7 steps: t = 0..6
    assert model.optimizer.iterations.numpy() == 7
    np.testing.assert_allclose(model.temperature.numpy(), np.exp(-0.05 * 6), rtol=1e-6)
    # The step reads optimizer.iterations; the floor holds; q and p use the stored value.
    model.optimizer.iterations.assign(100)
    model.train_step(tf.constant(X))
    np.testing.assert_allclose(model.temperature.numpy(), 0.2, rtol=1e-6)
    with model.relaxed_latents():
        assert model.encode(X).temperature.numpy() == model.prior().temperature.numpy() == np.float32(0.2)


def test_fit_decreases_the_loss():
    keras.utils.set_random_seed(0)
    model = GumbelVAE(**TINY, anneal_rate=1e-2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = variant_helpers.structured_data(64, SHAPE, seed=2)
    history = model.fit(data, batch_size=16, epochs=6, verbose=0, shuffle=False).history
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["elbo"]))
    assert history["loss"][-1] < history["loss"][0], history["loss"]


def test_config_round_trip_and_validation():
    model = GumbelVAE(**TINY, tau0=2.0, tau_min=0.4, anneal_rate=1e-4, seed=2)
    config = model.get_config()
    assert (config["num_latents"], config["categories"], config["latent_dim"]) == (N, K, N * K)
    assert (config["tau0"], config["tau_min"], config["anneal_rate"]) == (2.0, 0.4, 1e-4)
    assert config["evaluate_as"] == "discrete"
    rebuilt = tfvae.get_model_class("gumbel_vae").from_config(config)
    assert isinstance(rebuilt, GumbelVAE) and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.elbo_terms(X, seed=[1, 1])["elbo"], model.elbo_terms(X, seed=[1, 1])["elbo"])
    for bad in ({"categories": 1}, {"tau_min": 3.0}, {"anneal_rate": -1.0}, {"latent_dim": 5}, {"num_latents": 0},
                {"evaluate_as": "hard"}):
        with pytest.raises(ConfigError):
            GumbelVAE(**{**TINY, **bad})


@pytest.mark.parametrize("evaluate_as", ["discrete", "relaxed"])
def test_export_matches_the_python_model(tmp_path, evaluate_as):
    model = perturbed(GumbelVAE(**TINY, evaluate_as=evaluate_as), seed=3)
    model.temperature.assign(0.6)                      # a relaxed export evaluates at the stored value
    loaded = variant_helpers.export_and_check(model, tmp_path / "export", X, k=20)
    draws = loaded.sample(n=3, seed=[1, 2])["x"].numpy()
    np.testing.assert_allclose(draws, model.sample(3, seed=[1, 2]).numpy(), rtol=1e-5, atol=1e-6)
    if evaluate_as == "discrete":                      # exact posterior means: the class probabilities
        np.testing.assert_allclose(loaded.encode(X)["mean"].numpy(), model.encode(X).mean().numpy(), rtol=1e-6)


def test_the_model_is_the_vae_with_the_categorical_parts():
    # gumbel_vae is the VAE with the posterior `categorical` and the prior `categorical_uniform`:
    # built either way, with the same weights, the two compute the same ELBO (one-hot and
    # relaxed), the same relaxed training loss, and step the temperature alike.
    model = perturbed(GumbelVAE(**TINY, tau0=0.9, tau_min=0.3, anneal_rate=0.1, seed=3))
    parts = tfvae.get_model_class("vae")(
        data_shape=SHAPE, latent_dim=N * K, encoder={"type": "mlp", "hidden": [8]}, seed=3,
        prior="categorical_uniform",
        posterior={"type": "categorical", "categories": [K] * N, "tau0": 0.9, "tau_min": 0.3, "anneal_rate": 0.1})
    parts.set_weights(model.get_weights())
    np.testing.assert_array_equal(parts.elbo_terms(X, 2, seed=[1, 2])["elbo"], model.elbo_terms(X, 2, seed=[1, 2])["elbo"])
    with model.relaxed_latents(), parts.posterior_part.latents.relaxed():
        np.testing.assert_array_equal(parts.training_loss(X, seed=[3, 4]).value, model.training_loss(X, seed=[3, 4]).value)
    for m in (model, parts):
        m.compile(optimizer=keras.optimizers.SGD(0.0))
        m.fit(X, batch_size=5, epochs=2, verbose=0, shuffle=False)
    temperature = model.current_temperature().numpy()     # set by the 4th step, t = 3
    assert parts.posterior_part.latents.current_temperature().numpy() == temperature
    assert temperature == pytest.approx(0.9 * np.exp(-0.1 * 3), rel=1e-6)
