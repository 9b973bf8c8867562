"""The objective variants (beta_vae, iwae, miwae, piwae, ciwae) against brute-force numpy
bounds, against the variants they must reduce to (same weights, same seeds), and, for the
DReG estimator, against the standard gradient over many seeds."""
import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.beta_vae import BetaVAE
from tfvae.models.iwae import IWAE, log_mean_exp
from tfvae.models.multisample import CIWAE, MIWAE, PIWAE
from tfvae.parts.objectives import draw_weights

SHAPE = (6, 6, 1)
TINY = dict(data_shape=SHAPE, latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
structured_data = functools.partial(variant_helpers.structured_data, shape=SHAPE)
twin = functools.partial(variant_helpers.twin, config=TINY)


X = structured_data(8, seed=1)


def loss_and_gradients(model, x, seed=None):
    """(loss, gradients over model.trainable_variables) of one training step's estimator."""
    result, grads = model.gradients(x, seed=seed, training=True)
    return result.value.numpy(), [g.numpy() for g in grads]


def assert_same_step(a, b, x, exact=True, seed_a=None, seed_b=None):
    """Models a and b give the same loss and gradients (seeds: explicit or each model's stream)."""
    check = np.testing.assert_array_equal if exact else (
        lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6))
    loss_a, grads_a = loss_and_gradients(a, x, seed_a)
    loss_b, grads_b = loss_and_gradients(b, x, seed_b)
    check(loss_a, loss_b)
    for g_a, g_b in zip(grads_a, grads_b):
        check(g_a, g_b)


def loss_of(model, x, seed):
    return model.objective_and_terms(x, seed=seed)[0].numpy()


def numpy_log_mean_exp(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).mean(axis=axis, keepdims=True))).squeeze(axis)


# ------------------------------------------------------------------ beta-VAE
def test_beta_one_is_the_vae_loss_gradients_and_training():
    vae = VAE(**TINY, seed=5)
    beta = twin(BetaVAE, vae, beta=1.0)
    assert_same_step(vae, beta, X)          # each model's own seed stream: the same draws
    data = structured_data(48, seed=2)
    for model in (vae, beta):
        keras.utils.set_random_seed(0)
        # Eager steps keep this fast; graph-mode fit of the variant is covered further down.
        model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
        model.fit(data, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for w_vae, w_beta in zip(vae.get_weights(), beta.get_weights()):
        np.testing.assert_array_equal(w_vae, w_beta)


def test_beta_weights_the_kl():
    model = BetaVAE(**TINY, beta=4.0)
    vae = twin(VAE, model)
    terms = vae.elbo_terms(X, 1, seed=[3, 4])
    expected = -np.mean(terms["log_px_z"].numpy() - 4.0 * terms["kl"].numpy())
    loss, got = model.objective_and_terms(X, seed=[3, 4])
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(got["elbo"], terms["elbo"])


def test_capacity_is_annealed_over_optimizer_steps():
    capacity, steps, gamma = 5.0, 10, 100.0
    model = BetaVAE(**TINY, capacity=capacity, capacity_steps=steps, gamma=gamma)
    terms = twin(VAE, model).elbo_terms(X, 1, seed=[1, 2])
    log_px_z, kl = terms["log_px_z"].numpy().mean(), terms["kl"].numpy().mean()

    def expected(c):
        return -log_px_z + gamma * abs(kl - c)

    # Outside fit the annealing counts as finished.
    np.testing.assert_allclose(model.objective_and_terms(X, seed=[1, 2])[0], expected(capacity), rtol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    for step in (0, 4, 10, 25):
        model.optimizer.iterations.assign(step)
        np.testing.assert_allclose(model.objective_and_terms(X, seed=[1, 2])[0],
                                   expected(capacity * min(1.0, step / steps)), rtol=1e-6)
    # fit advances the optimizer and so C: 3 steps of 10 -> C = 1.5 nats.
    model.optimizer.iterations.assign(0)
    model.fit(structured_data(48), batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(model.current_capacity().numpy(), 1.5, rtol=1e-6)


# ------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("cls, kwargs, key", [
    (BetaVAE, {"beta": -1.0}, "beta"), (BetaVAE, {"capacity_steps": 0}, "capacity_steps"),
    (BetaVAE, {"capacity": -2.0}, "capacity"), (BetaVAE, {"gamma": "big"}, "gamma"),
    (IWAE, {"k": 0}, "k"), (IWAE, {"estimator": "dreg2"}, "estimator"), (IWAE, {"k": 2.5}, "k"),
    (MIWAE, {"m": 0}, "m"), (PIWAE, {"k": -1}, "k"), (CIWAE, {"beta": 1.5}, "beta"),
])
def test_bad_arguments_raise_config_errors(cls, kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        cls(**TINY, **kwargs)


# ------------------------------------------------------------------ bounds vs numpy
def brute_force_losses(model, x, seed):
    """-mean over the batch of each variant's bound, from `BaseVAE.log_weights` (the
    contract's weights, drawn with the same seed) and numpy."""
    n = model.m * model.k if hasattr(model, "m") else model.k
    w = model.log_weights(x, n, seed=seed)
    log_w = w["log_w"].numpy().astype(np.float64)                 # [n, B]
    iwae = numpy_log_mean_exp(log_w, 0)
    if isinstance(model, PIWAE):
        return -iwae.mean()
    if isinstance(model, MIWAE):
        return -numpy_log_mean_exp(log_w.reshape(model.m, model.k, -1), 1).mean(0).mean()
    if isinstance(model, CIWAE):
        elbo = w["log_px_z"].numpy().mean(0) - model.analytic_kl(w["posterior"]).numpy()
        return -(model.beta * elbo.mean() + (1 - model.beta) * iwae.mean())
    return -iwae.mean()


@pytest.mark.parametrize("cls, kwargs", [
    (IWAE, {"k": 7}), (IWAE, {"k": 7, "estimator": "dreg"}), (MIWAE, {"m": 3, "k": 4}),
    (PIWAE, {"m": 3, "k": 4}), (CIWAE, {"k": 5, "beta": 0.3}),
])
def test_loss_and_terms_match_brute_force(cls, kwargs):
    model = cls(**TINY, **kwargs)
    loss, terms = model.objective_and_terms(X, seed=[7, 8])
    np.testing.assert_allclose(loss.numpy(), brute_force_losses(model, X, [7, 8]), rtol=1e-5)
    # The reported terms are the ordinary ELBO terms of the same samples.
    n = model.m * model.k if hasattr(model, "m") else model.k
    reference = twin(VAE, model).elbo_terms(X, n, seed=[7, 8])
    for name in ("log_px_z", "kl", "elbo"):
        np.testing.assert_allclose(terms[name], reference[name], rtol=1e-6, atol=1e-5)


def test_kl_warmup_tempers_the_importance_weights():
    """During KL warm-up (kl_weight < 1) the weights are p(x|z) (p(z)/q(z|x))^kl_weight."""
    model = IWAE(**TINY, k=6)
    model.kl_weight.assign(0.25)
    w = model.log_weights(X, 6, seed=[9, 9])
    tempered = (w["log_px_z"].numpy() + 0.25 * (w["log_pz"].numpy() - w["log_qz"].numpy())).astype(np.float64)
    np.testing.assert_allclose(loss_of(model, X, [9, 9]), -numpy_log_mean_exp(tempered, 0).mean(), rtol=1e-5)


@pytest.mark.parametrize("name, cls", [("beta_vae_bmnist", BetaVAE), ("iwae_bmnist", IWAE),
                                       ("miwae_bmnist", MIWAE), ("piwae_bmnist", PIWAE), ("ciwae_bmnist", CIWAE)])
def test_presets_build_their_variant(name, cls):
    preset = tfvae.load_preset(name)
    assert preset.paper is not None and preset.with_protocol("paper").training.schedule == "burda"
    model = tfvae.from_preset(name, compile=False)
    assert type(model) is cls
    arguments = {key: value for key, value in preset.model.items() if key != "class"}
    assert model.get_config() == cls(**arguments).get_config()
    assert all(getattr(model, key) == arguments[key] for key in ("k", "m", "beta", "estimator") if key in arguments)


# ------------------------------------------------------------------ limits: same weights, same seeds
def test_iwae_with_one_sample_is_the_elbo():
    iwae = IWAE(**TINY, k=1, seed=3)
    vae = twin(VAE, iwae, kl="monte_carlo")   # log w = log p(x|z) - (log q - log p): the 1-sample ELBO
    assert_same_step(iwae, vae, X, exact=False)
    # With the analytic KL the two agree in expectation: E[log w] = E[log p(x|z)] - KL(q || p).
    w = iwae.log_weights(X, 20000, seed=[5, 6])
    kl = iwae.analytic_kl(w["posterior"]).numpy()
    difference = w["log_w"].numpy() - (w["log_px_z"].numpy() - kl)      # paired, per sample
    se = difference.std(0) / math.sqrt(len(difference))
    assert np.all(np.abs(difference.mean(0)) < 5 * se)


def test_miwae_limits():
    iwae = IWAE(**TINY, k=5, seed=2)
    assert_same_step(twin(MIWAE, iwae, m=1, k=5), iwae, X)
    miwae = twin(MIWAE, iwae, m=6, k=1)
    vae = twin(VAE, iwae, kl="monte_carlo")
    np.testing.assert_allclose(loss_of(miwae, X, [4, 4]),
                               -np.mean(vae.elbo_terms(X, 6, seed=[4, 4])["elbo"]), rtol=1e-6)


def test_ciwae_limits():
    vae = VAE(**TINY, seed=9)
    assert_same_step(twin(CIWAE, vae, k=1, beta=1.0), vae, X)
    ciwae = twin(CIWAE, vae, k=4, beta=1.0)
    np.testing.assert_allclose(loss_of(ciwae, X, [2, 3]),
                               -np.mean(vae.elbo_terms(X, 4, seed=[2, 3])["elbo"]), rtol=1e-6)
    assert_same_step(twin(CIWAE, vae, k=4, beta=0.0), twin(IWAE, vae, k=4), X)


def test_piwae_limits_and_split_gradients():
    iwae = IWAE(**TINY, k=4, seed=1)
    assert_same_step(twin(PIWAE, iwae, m=1, k=4), iwae, X)
    # M=2, K=3: the decoder's gradient is IWAE_6's, the encoder's MIWAE_{2,3}'s, same samples.
    piwae = twin(PIWAE, iwae, m=2, k=3)
    _, grads = loss_and_gradients(piwae, X, seed=[6, 6])
    _, iwae_grads = loss_and_gradients(twin(IWAE, iwae, k=6), X, seed=[6, 6])
    _, miwae_grads = loss_and_gradients(twin(MIWAE, iwae, m=2, k=3), X, seed=[6, 6])
    encoder = {id(v) for v in piwae.encoder_net.trainable_variables}
    for v, g, g_iwae, g_miwae in zip(piwae.trainable_variables, grads, iwae_grads, miwae_grads):
        np.testing.assert_array_equal(g, g_miwae if id(v) in encoder else g_iwae)
    assert any(not np.allclose(a, b) for a, b in zip(iwae_grads, miwae_grads))   # they do differ


# ------------------------------------------------------------------ a trained IWAE: bound in k, DReG
@pytest.fixture(scope="module")
def trained():
    """A tiny IWAE (k=8) fitted to the prototype data: q close enough to p(z|x) that DReG's
    variance reduction shows."""
    keras.utils.set_random_seed(0)
    model = IWAE(**TINY, k=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(structured_data(600), batch_size=50, epochs=5, verbose=0)
    return model


def test_bound_increases_with_k(trained):
    """L_1 < L_4 < L_32 on a fixed model, each estimated from 100 independent replicates of
    the per-example bound (a tiled batch), beyond 4 standard errors."""
    x = structured_data(20, seed=3)
    replicas = np.tile(x, (100, 1, 1, 1))
    estimates = {}
    for k in (1, 4, 32):
        model = twin(IWAE, trained, k=k)
        draws = draw_weights(model, replicas, k, seed=[k, 1])
        bounds = log_mean_exp(draws["log_w"]).numpy().reshape(100, len(x)).mean(1)   # per replicate
        np.testing.assert_allclose(bounds.mean(), -loss_of(model, replicas, [k, 1]), rtol=1e-5)
        estimates[k] = (bounds.mean(), bounds.std(ddof=1) / math.sqrt(len(bounds)))
    for small, large in ((1, 4), (4, 32)):
        (low, se_low), (high, se_high) = estimates[small], estimates[large]
        assert high - low > 4 * math.hypot(se_low, se_high), estimates
    # Every L_k is below log p(x) (estimated with 5000 samples).
    log_px = tfvae.importance_sampling(trained, x, k=5000, compiled=False)["log_px"].numpy().mean()
    assert estimates[32][0] < log_px, (estimates, log_px)


def gradient_draws(model, x, seeds):
    """Per-seed gradients, one [seeds, size] array per trainable variable."""
    step = tf.function(lambda seed: model.gradients(x, seed=seed)[1])
    draws = [[g.numpy().ravel() for g in step(tf.constant([s, 11]))] for s in range(seeds)]
    return [np.stack(column) for column in zip(*draws)]


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_dreg_matches_the_standard_gradient_in_expectation_with_less_variance(trained, kl_weight):
    """Over 100 seeds at k=32, paired per seed: the DReG encoder gradient has the standard
    one's mean (within a few standard errors, coordinate by coordinate) and far less
    variance; the decoder's gradient is the standard one draw for draw. kl_weight < 1 (KL
    warm-up) tempers the weights, and the DReG coefficients with them."""
    x = structured_data(4, seed=4)
    standard, dreg = twin(IWAE, trained, k=32), twin(IWAE, trained, k=32, estimator="dreg")
    for model in (standard, dreg):
        model.kl_weight.assign(kl_weight)
    g_standard, g_dreg = gradient_draws(standard, x, 100), gradient_draws(dreg, x, 100)
    encoder = {id(v) for v in trained.encoder_net.trainable_variables}
    is_encoder = [id(v) in encoder for v in trained.trainable_variables]
    for enc, a, b in zip(is_encoder, g_standard, g_dreg):
        if not enc:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    a = np.concatenate([g for g, enc in zip(g_standard, is_encoder) if enc], axis=1)
    b = np.concatenate([g for g, enc in zip(g_dreg, is_encoder) if enc], axis=1)
    difference = b - a                   # paired: the same samples for both estimators
    t = difference.mean(0) / (difference.std(0, ddof=1) / math.sqrt(len(difference)) + 1e-12)
    # (The estimator with wt_i instead of wt_i^2 gives max |t| ~ 28 here.)
    assert np.abs(t).max() < 5 and np.mean(t**2) < 2, (np.abs(t).max(), np.mean(t**2))
    assert np.abs(b.mean(0)).max() > 1e-3                  # a non-trivial gradient is compared
    # Measured at kl_weight 1: the DReG encoder variance is ~2% of the standard one.
    assert b.var(0).sum() < 0.2 * a.var(0).sum(), (b.var(0).sum(), a.var(0).sum())


# ------------------------------------------------------------------ every variant: fit, log p(x), export
@pytest.mark.parametrize("cls, kwargs", [
    (BetaVAE, {"capacity": 3.0, "capacity_steps": 5, "gamma": 10.0}), (IWAE, {"k": 4, "estimator": "dreg"}),
    (MIWAE, {"m": 2, "k": 3}), (PIWAE, {"m": 2, "k": 3}), (CIWAE, {"k": 4, "beta": 0.5}),
])
def test_fit_evaluate_and_config_round_trip(cls, kwargs):
    model = cls(**TINY, **kwargs)
    rebuilt = cls.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config() and type(rebuilt).registered_name == cls.registered_name
    assert tfvae.get_model_class(cls.registered_name) is cls

    before = model.get_weights()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(structured_data(64), batch_size=16, epochs=1, verbose=0).history
    assert set(history) == {"loss", "elbo", "log_px_z", "kl"}
    logs = {name: values[-1] for name, values in history.items()}
    assert all(np.isfinite(v) for v in logs.values())
    np.testing.assert_allclose(logs["elbo"], logs["log_px_z"] - logs["kl"], rtol=1e-5, atol=1e-4)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    x = structured_data(5, seed=6)
    log_px = tfvae.importance_sampling(model, x, k=50, seed=0, compiled=False)["log_px"].numpy()
    assert np.all(np.isfinite(log_px)) and np.all(log_px < 0)
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(tfvae.importance_sampling(rebuilt, x, k=50, seed=0, compiled=False)["log_px"],
                               log_px, rtol=1e-6)
