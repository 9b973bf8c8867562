"""Hyperspherical VAE (tfvae.models.svae): the KLs against closed forms written here (De Cao &
Aziz's Power Spherical entropy with a series digamma; the vMF on S^2) and against numerical
integration over the angle to the mean direction, Monte Carlo KLs, samples and moments,
pathwise gradients against closed-form derivatives, log p(x) against a brute-force integral
over the circle, training and config round trip (export: tests/test_contract.py)."""
import functools
import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.distributions import moments
from tfvae.models.svae import SVAE, log_sphere_area
from tfvae.parts import build_part
from tfvae.parts.spherical import VonMisesFisher

SHAPE = (16,)
TINY = dict(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [8]})
structured_data = functools.partial(variant_helpers.structured_data, shape=SHAPE)
X = structured_data(6, seed=1)
EULER_GAMMA = 0.5772156649015329
tfd = tfp.distributions


# ----------------------------------------------------------------- independent references
def digamma(x: float) -> float:
    """psi(x), x > 0: the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10, then the
    asymptotic series ln x - 1/(2x) - sum_n B_2n / (2n x^2n)."""
    shift = 0.0
    while x < 10.0:
        shift -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return shift + math.log(x) - 0.5 / x - series


def power_spherical_kl(d: int, kappa: float) -> float:
    """KL(PS(mu, kappa) || U(S^{d-1})) = log|S^{d-1}| - H(PS), with De Cao & Aziz (2020)'s
    H = log C - kappa (log 2 + psi(a) - psi(a + b)), C = 2^{a+b} pi^b Gamma(a) / Gamma(a + b),
    a = (d - 1)/2 + kappa, b = (d - 1)/2."""
    a, b = (d - 1) / 2 + kappa, (d - 1) / 2
    log_c = (a + b) * math.log(2) + b * math.log(math.pi) + math.lgamma(a) - math.lgamma(a + b)
    entropy = log_c - kappa * (math.log(2) + digamma(a) - digamma(a + b))
    log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
    return log_area - entropy


def vmf_kl_s2(kappa: float) -> float:
    """KL(vMF(mu, kappa) || U(S^2)): q = kappa / (4 pi sinh kappa) exp(kappa mu.z), p = 1/(4 pi),
    E_q[mu.z] = coth kappa - 1/kappa, so KL = kappa coth kappa - 1 + log(kappa / sinh kappa)."""
    return kappa / math.tanh(kappa) - 1 + math.log(kappa / math.sinh(kappa))


def angular_quadrature(log_h, d: int, n: int = 100_001):
    """For q(z) ∝ h(mu.z) on S^{d-1}: (KL(q || uniform), E_q[t], E_q[t^2]), t = mu.z = cos(theta),
    by the trapezoidal rule over theta in [0, pi]. Both q and the uniform distribution give
    theta a density ∝ h(cos theta) sin^{d-2}(theta) (resp. h = 1), and q/p is a function of
    theta alone, so the KL is that between the two densities of theta."""
    theta = np.linspace(0.0, np.pi, n)
    t = np.cos(theta)
    with np.errstate(divide="ignore", invalid="ignore"):      # log 0 = -inf at the ends
        log_g = (d - 2) * np.log(np.sin(theta)) if d > 2 else np.zeros_like(theta)
        log_f = log_g + log_h(t)

        def log_normaliser(a):
            return a.max() + np.log(np.trapezoid(np.exp(a - a.max()), theta))

        log_f, log_g = log_f - log_normaliser(log_f), log_g - log_normaliser(log_g)
        f = np.exp(log_f)
        integrand = np.where(f > 0, f * (log_f - log_g), 0.0)
    return np.trapezoid(integrand, theta), np.trapezoid(f * t, theta), np.trapezoid(f * t * t, theta)


LOG_H = {"power_spherical": lambda kappa: (lambda t: kappa * np.log1p(t)),
         "von_mises_fisher": lambda kappa: (lambda t: kappa * t)}


def family_q(family, mu, kappa):
    """q from `family`'s parameter map with mean direction mu [B, d] and concentration kappa [B]
    (kappa > 1): raw = (any positive multiple of mu, softplus^-1(kappa - 1))."""
    mu, kappa = np.asarray(mu, np.float64), np.asarray(kappa, np.float64)
    raw_kappa = kappa - 1 + np.log(-np.expm1(-(kappa - 1)))          # softplus^-1
    params = np.concatenate([3.0 * mu, raw_kappa[:, None]], axis=1).astype("float32")
    return build_part("posterior", family).distribution(params)


def unit_vectors(n, d, seed):
    v = np.random.default_rng(seed).normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ----------------------------------------------------------------- KL
def test_digamma_series_matches_known_values():
    assert abs(digamma(1.0) + EULER_GAMMA) < 1e-12
    assert abs(digamma(0.5) + EULER_GAMMA + 2 * math.log(2)) < 1e-12
    assert abs(digamma(7.3) - digamma(6.3) - 1 / 6.3) < 1e-12


@pytest.mark.parametrize("d", [2, 3, 10])
def test_power_spherical_kl_matches_de_cao_aziz_closed_form_and_quadrature(d):
    kappas = np.array([1.5, 6.0, 60.0])
    model = SVAE(**{**TINY, "latent_dim": d})
    q = family_q("power_spherical", unit_vectors(3, d, seed=d), kappas)
    np.testing.assert_allclose(q.concentration.numpy(), kappas, rtol=1e-5)
    kl = model.analytic_kl(q).numpy()
    closed = [power_spherical_kl(d, k) for k in kappas]
    quadrature = [angular_quadrature(LOG_H["power_spherical"](k), d)[0] for k in kappas]
    np.testing.assert_allclose(closed, quadrature, rtol=1e-5)
    np.testing.assert_allclose(kl, closed, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("d", [2, 3, 5, 10])
def test_von_mises_fisher_kl_matches_closed_form_on_s2_and_quadrature(d):
    kappas = np.array([1.5, 6.0, 60.0])
    model = SVAE(**{**TINY, "latent_dim": d})     # analytic_kl(q) is KL(q || the model's prior)
    kl = model.analytic_kl(family_q("von_mises_fisher", unit_vectors(3, d, seed=d), kappas)).numpy()
    quadrature = [angular_quadrature(LOG_H["von_mises_fisher"](k), d)[0] for k in kappas]
    if d == 3:
        np.testing.assert_allclose([vmf_kl_s2(k) for k in kappas], quadrature, rtol=1e-6)
    np.testing.assert_allclose(kl, quadrature, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["power_spherical", "von_mises_fisher"])
def test_monte_carlo_kl_of_the_model_matches_the_analytic_one(family):
    # A model with kl="monte_carlo" estimates E_q[log q(z) - log p(z)] from its k samples.
    keras.utils.set_random_seed(2)
    model = SVAE(**TINY, family=family, seed=2)
    for v in model.trainable_variables:          # concentrations spread over a few units
        v.assign(v + np.random.default_rng(3).normal(0, 0.7, v.shape).astype("float32"))
    bias = model.encoder_net.out.bias
    bias.assign(bias + np.eye(4, dtype="float32")[3] * 3.0)
    mc = SVAE(**TINY, family=family, seed=2, kl="monte_carlo")
    mc.set_weights(model.get_weights())
    q = model.encode(X)
    z, log_q = q.experimental_sample_and_log_prob(10_000, seed=[5, 6])
    per_sample = (log_q - model.prior().log_prob(z)).numpy()
    standard_error = per_sample.std(0) / math.sqrt(10_000)
    analytic = model.elbo_terms(X, k=1, seed=[1, 2])["kl"].numpy()
    estimate = mc.elbo_terms(X, k=10_000, seed=[5, 6])["kl"].numpy()
    np.testing.assert_allclose(estimate, per_sample.mean(0), rtol=1e-5)
    assert np.all(np.abs(estimate - analytic) < 5 * standard_error + 1e-4), (estimate, analytic, standard_error)
    assert np.ptp(analytic) > 0.1, analytic


@pytest.mark.parametrize("d", [2, 3])
def test_von_mises_fisher_closed_forms_agree_with_tfps_bessel_series(d):
    # For d = 2, 3 the log-normalizer, E[z], Cov[z], the entropy and its gradient in kappa come
    # from elementary functions and i0e/i1e; TFP's general form (its Bessel series) must agree.
    kappa = tf.constant([0.5, 1.0, 5.0, 60.0])
    mu = tf.constant(unit_vectors(4, d, seed=3), tf.float32)
    ours, general = (lambda k: VonMisesFisher(mu, k)), (lambda k: tfd.VonMisesFisher(mu, k))
    for name in ("mean", "covariance"):
        np.testing.assert_allclose(getattr(ours(kappa), name)(), getattr(general(kappa), name)(), atol=1e-6)
    z = general(kappa).sample(3, seed=[1, 2])
    np.testing.assert_allclose(ours(kappa).log_prob(z), general(kappa).log_prob(z), rtol=1e-5, atol=1e-5)
    gradients = []
    for make in (ours, general):
        with tf.GradientTape() as tape:
            tape.watch(kappa)
            entropy = make(kappa).entropy()
        gradients.append((entropy, tape.gradient(entropy, kappa)))
    np.testing.assert_allclose(gradients[0][0], gradients[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gradients[0][1], gradients[1][1], rtol=2e-3, atol=1e-6)


# ----------------------------------------------------------------- samples, moments, gradients
@pytest.mark.parametrize("family, d", [("power_spherical", 3), ("power_spherical", 8), ("von_mises_fisher", 2),
                                       ("von_mises_fisher", 3), ("von_mises_fisher", 8)])
def test_samples_lie_on_the_sphere_with_the_closed_form_moments(family, d):
    mu, kappas = unit_vectors(2, d, seed=4), np.array([2.0, 25.0])
    mu[0] = np.eye(d)[0]                         # mu = e_1: the Householder reflection is the identity
    q = family_q(family, mu, kappas)
    z = q.sample(20_000, seed=[7, 8]).numpy().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    for b, kappa in enumerate(kappas):
        _, mean_t, mean_t2 = angular_quadrature(LOG_H[family](kappa), d)
        if family == "power_spherical":          # (t + 1)/2 ~ Beta(a, b)
            a, bb = (d - 1) / 2 + kappa, (d - 1) / 2
            np.testing.assert_allclose(mean_t, (a - bb) / (a + bb), rtol=1e-6)
        # E[z] = E[t] mu; Var[z_i] = Var[t] mu_i^2 + E[1 - t^2]/(d - 1) (1 - mu_i^2)
        variance = (mean_t2 - mean_t ** 2) * mu[b] ** 2 + (1 - mean_t2) / (d - 1) * (1 - mu[b] ** 2)
        np.testing.assert_allclose(q.mean().numpy()[b], mean_t * mu[b], atol=1e-5)
        np.testing.assert_allclose(q.stddev().numpy()[b], np.sqrt(variance), rtol=1e-4)
        t = z[:, b] @ mu[b]
        assert abs(t.mean() - mean_t) < 5 * t.std() / math.sqrt(len(t))
        np.testing.assert_allclose(z[:, b].std(0), np.sqrt(variance), rtol=0.03)
    mean, stddev = moments(q)                    # exact, not the sampling fallback
    np.testing.assert_array_equal(mean, q.mean())
    np.testing.assert_array_equal(stddev, q.stddev())


def pathwise_gradient(family, d, kappa, n=100_000):
    """d/dkappa of the sample mean of t = mu.z over n reparameterised draws."""
    mu = np.eye(d, dtype="float32")[:1]
    kappa = tf.constant([kappa], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(kappa)
        q = build_part("posterior", family).distribution_class(mean_direction=mu, concentration=kappa)
        t = tf.reduce_mean(q.sample(n, seed=[9, 10])[..., 0])
    return float(tape.gradient(t, kappa)[0])


def derivative_of_mean_t(family, d, kappa, h=1e-4):
    """d E[t] / d kappa by central differences of the quadrature."""
    at = [angular_quadrature(LOG_H[family](k), d)[1] for k in (kappa - h, kappa + h)]
    return (at[1] - at[0]) / (2 * h)


@pytest.mark.parametrize("family, d", [("power_spherical", 3), ("power_spherical", 10), ("von_mises_fisher", 3)])
def test_pathwise_concentration_gradient_is_unbiased(family, d):
    kappa = 4.0
    exact = derivative_of_mean_t(family, d, kappa)
    if family == "power_spherical":              # E[t] = kappa / (kappa + d - 1)
        np.testing.assert_allclose(exact, (d - 1) / (kappa + d - 1) ** 2, rtol=1e-4)
    np.testing.assert_allclose(pathwise_gradient(family, d, kappa), exact, rtol=0.03)


def test_von_mises_fisher_rejection_sampler_gradient_is_biased_as_documented():
    # What the warning for von_mises_fisher with latent_dim != 3 says: TFP's Wood sampler
    # differentiates through the accepted proposal only (about 20% too small here).
    exact = derivative_of_mean_t("von_mises_fisher", 4, 2.0)
    assert pathwise_gradient("von_mises_fisher", 4, 2.0) < 0.9 * exact
    with pytest.warns(UserWarning, match="biased"):
        SVAE(**{**TINY, "latent_dim": 4}, family="von_mises_fisher")


# ----------------------------------------------------------------- the model
def test_encoder_prior_and_reconstruction_follow_the_parameterisation():
    model = SVAE(**TINY)
    assert model.encoder_net.out.kernel.shape[-1] == 4                  # direction (3) + concentration
    raw = model.posterior_params(X).numpy().astype(np.float64)
    q = model.encode(X)
    np.testing.assert_allclose(q.mean_direction, raw[:, :3] / np.linalg.norm(raw[:, :3], axis=1, keepdims=True),
                               rtol=1e-5)
    np.testing.assert_allclose(q.concentration, np.logaddexp(0, raw[:, 3]) + 1, rtol=1e-5)
    z = unit_vectors(5, 3, seed=6)
    np.testing.assert_allclose(model.prior().log_prob(z), np.full(5, -math.log(4 * math.pi)), rtol=1e-6)
    assert abs(log_sphere_area(10) - math.log(2 * math.pi ** 5 / math.factorial(4))) < 1e-12
    prior_z = model.prior().sample(100, seed=[1, 1]).numpy()
    np.testing.assert_allclose(np.linalg.norm(prior_z, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(model.reconstruct(X), model.decode(q.mean_direction).mean(), rtol=1e-6)
    assert model.sample(4, seed=3).shape == (4, *SHAPE)


def test_importance_sampling_matches_a_brute_force_integral_over_the_circle():
    # d = 2: log p(x) = log (1/2pi) int_0^2pi p(x | (cos a, sin a)) da, by the rectangle rule
    # (exact to round-off for a smooth periodic integrand).
    N = 40_000                                   # grid points and samples (one shape to compile)
    keras.utils.set_random_seed(4)
    model = SVAE(**{**TINY, "latent_dim": 2}, seed=4)
    for v in model.trainable_variables:
        v.assign(v + np.random.default_rng(5).normal(0, 0.3, v.shape).astype("float32"))
    angle = np.linspace(0, 2 * np.pi, N, endpoint=False)
    z = np.broadcast_to(np.stack([np.cos(angle), np.sin(angle)], 1).astype("float32")[:, None, :], (N, len(X), 2))
    log_px_z = model.decode(z).log_prob(X).numpy().astype(np.float64)
    brute = np.logaddexp.reduce(log_px_z, axis=0) - math.log(N)
    q = model.encode(X)
    np.testing.assert_allclose(np.exp(q.log_prob(z).numpy()).mean(0) * 2 * np.pi, 1.0, rtol=1e-4)   # q normalised
    # log_w = log p(x|z) + log p(z) - log r(z) with log p(z) = -log 2pi: a broad proposal r
    # (PS with kappa = 0.4 < (d - 1)/2: weights of finite variance) recovers log p(x).
    broad = tfd.PowerSpherical(mean_direction=q.mean_direction, concentration=tf.fill([len(X)], 0.4))
    log_w = model.log_weights(X, N, seed=[3, 4], posterior=broad)["log_w"].numpy().astype(np.float64)
    np.testing.assert_allclose(np.logaddexp.reduce(log_w, axis=0) - math.log(N), brute, atol=0.04)   # ~5 sd
    # With q itself: finite weights, and the ELBO below log p(x).
    assert np.all(np.isfinite(model.log_weights(X, N, seed=[5, 6])["log_w"]))
    assert np.all(model.elbo_terms(X, k=N, seed=[5, 6])["elbo"].numpy() < brute)


def test_fit_decreases_the_loss():
    keras.utils.set_random_seed(0)
    model = SVAE(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(structured_data(64, seed=2), batch_size=16, epochs=5, verbose=0, shuffle=False).history
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["kl"]))
    assert history["loss"][-1] < history["loss"][0] - 0.5, history["loss"]
    assert model.supports_jit is False           # stateless_gamma has no XLA kernel


def test_mixed_precision_keeps_the_bound_in_float32():
    model = SVAE(**TINY, precision="mixed_bfloat16")
    terms = model.elbo_terms(X, k=2, seed=[1, 2])
    assert all(t.dtype == tf.float32 and np.all(np.isfinite(t)) for t in terms.values())


def test_config_round_trip_and_validation():
    model = SVAE(**TINY, family="von_mises_fisher", seed=2)
    config = model.get_config()
    assert (config["family"], config["latent_dim"]) == ("von_mises_fisher", 3)
    rebuilt = tfvae.get_model_class("svae").from_config(config)
    assert isinstance(rebuilt, SVAE) and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.objective_and_terms(X)[1]["kl"], model.objective_and_terms(X)[1]["kl"])
    with tf.GradientTape() as tape:              # the vMF (d = 3) objective trains every weight
        loss = model.objective(X, training=True)
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) and np.any(g != 0) for g in gradients)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # power_spherical never warns
        SVAE(**{**TINY, "latent_dim": 7})
    for bad, message in (({"family": "gaussian"}, "family"), ({"latent_dim": 1}, ">= 2"),
                         ({"latent_dim": 0}, "latent_dim")):
        with pytest.raises(ConfigError, match=message):
            SVAE(**{**TINY, **bad})
