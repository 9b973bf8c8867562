"""beta-TCVAE: the minibatch-weighted-sampling estimates against brute-force numpy sums, the
stratified ones against the exact aggregate posterior (on the whole data set, and on average
over every batch of it), the
decomposition identity (alpha = beta = gamma = 1 gives the VAE loss with a Monte Carlo KL),
the weighting, fit and config round trip (export: tests/test_contract.py)."""
import functools
import math

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.beta_tcvae import BetaTCVAE, minibatch_stratified_sampling, minibatch_weighted_sampling
from tfvae.seeds import as_seed

tfd = tfp.distributions

SHAPE = (4, 4, 1)
TINY = dict(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [8]})
structured_data = functools.partial(variant_helpers.structured_data, shape=SHAPE)
twin = functools.partial(variant_helpers.twin, config=TINY)


X = structured_data(8, seed=1)


def normal_pdf(z, loc, scale):
    return math.exp(-0.5 * ((z - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))


def brute_force_mws(z, loc, scale, n):
    """log q(z_i) and log prod_l q(z_il) by explicit float64 loops over the batch:
    q(z_i) ~= 1/(N M) sum_j prod_l N(z_il; loc_jl, scale_jl), and per dimension likewise."""
    m, dims = z.shape
    log_qz, log_prod = np.zeros(m), np.zeros(m)
    for i in range(m):
        joint = sum(math.prod(normal_pdf(z[i, l], loc[j, l], scale[j, l]) for l in range(dims))
                    for j in range(m))
        log_qz[i] = math.log(joint / (n * m))
        log_prod[i] = sum(math.log(sum(normal_pdf(z[i, l], loc[j, l], scale[j, l]) for j in range(m)) / (n * m))
                          for l in range(dims))
    return log_qz, log_prod


# ------------------------------------------------------------------ (a) MWS vs brute force
def test_mws_estimates_match_brute_force():
    rng = np.random.default_rng(0)
    m, dims, n = 4, 3, 10
    loc = rng.normal(size=(m, dims))
    scale = rng.uniform(0.3, 1.5, size=(m, dims))
    z = loc + scale * rng.normal(size=(m, dims))
    got_qz, got_prod = minibatch_weighted_sampling(z.astype(np.float32), loc.astype(np.float32),
                                                   scale.astype(np.float32), n)
    want_qz, want_prod = brute_force_mws(z, loc, scale, n)
    np.testing.assert_allclose(got_qz.numpy(), want_qz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_prod.numpy(), want_prod, rtol=1e-5, atol=1e-5)
    # A z far from every posterior (other than its own) must not underflow to -inf.
    far = z.copy()
    far[0] += 40.0
    loc_far = loc.copy()
    loc_far[0] += 40.0
    qz, prod = minibatch_weighted_sampling(far.astype(np.float32), loc_far.astype(np.float32),
                                           scale.astype(np.float32), n)
    assert np.all(np.isfinite(qz.numpy())) and np.all(np.isfinite(prod.numpy()))


def exact_aggregate(z, loc, scale):
    """log q(z_i) and log prod_l q(z_il) under the exact aggregate posterior of a data set whose
    posteriors are N(loc_n, diag(scale_n^2)), n = 1..N: q(z) = (1/N) sum_n q(z|x_n)."""
    densities = np.array([[[normal_pdf(zl, loc[n, l], scale[n, l]) for l, zl in enumerate(zi)]
                           for n in range(len(loc))] for zi in z])                  # [i, n, l]
    return np.log(densities.prod(-1).mean(1)), np.log(densities.mean(1)).sum(-1)


def test_mss_is_exact_on_the_whole_data_set_and_unbiased_on_a_batch_of_it():
    rng = np.random.default_rng(3)
    n, dims = 5, 2
    loc = rng.normal(size=(n, dims))
    scale = rng.uniform(0.4, 1.2, size=(n, dims))
    z = loc + scale * rng.normal(size=(n, dims))
    as32 = functools.partial(np.asarray, dtype=np.float32)
    want_qz, want_prod = exact_aggregate(z, loc, scale)
    # The batch is the whole data set (M = N): the estimate is the aggregate posterior itself.
    got_qz, got_prod = minibatch_stratified_sampling(as32(z), as32(loc), as32(scale), n)
    np.testing.assert_allclose(got_qz.numpy(), want_qz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_prod.numpy(), want_prod, rtol=1e-5, atol=1e-5)
    # MWS weighs each pair 1/(N M) instead of 1/N: low by log M here.
    mws_qz, _ = minibatch_weighted_sampling(as32(z), as32(loc), as32(scale), n)
    np.testing.assert_allclose(mws_qz.numpy(), want_qz - math.log(n), rtol=1e-5, atol=1e-5)
    # A batch of M = 3: example 0 with every pair of the 4 others, equally likely. The mean of
    # the estimates of q(z_0) (and, with one latent, of q(z_01)) over all 6 batches is exact.
    for d in (slice(None), slice(0, 1)):
        estimates = [math.exp(minibatch_stratified_sampling(as32(z[batch, d]), as32(loc[batch, d]),
                                                            as32(scale[batch, d]), n)[0][0].numpy())
                     for batch in ([0, a, b] for a in range(1, n) for b in range(a + 1, n))]
        assert len(estimates) == 6
        np.testing.assert_allclose(np.mean(estimates), math.exp(exact_aggregate(z[:, d], loc[:, d],
                                                                                scale[:, d])[0][0]), rtol=1e-5)
    # One example: only its own term, weighed 1/N.
    single_qz, _ = minibatch_stratified_sampling(as32(z[:1]), as32(loc[:1]), as32(scale[:1]), n)
    own = sum(math.log(normal_pdf(z[0, l], loc[0, l], scale[0, l])) for l in range(dims))
    np.testing.assert_allclose(single_qz.numpy(), [own - math.log(n)], rtol=1e-5)


def test_the_estimator_is_a_setting_of_the_model():
    mws, mss = (BetaTCVAE(**TINY, dataset_size=8, estimator=e, seed=1) for e in ("mws", "mss"))
    mss.set_weights(mws.get_weights())
    q = mws.encode(X)
    z, log_qz = q.experimental_sample_and_log_prob(seed=as_seed(4))
    for model, estimate in ((mws, minibatch_weighted_sampling), (mss, minibatch_stratified_sampling)):
        parts = model.kl_decomposition(q, z, log_qz)
        log_q_agg, _ = estimate(z, q.mean(), q.stddev(), 8)
        np.testing.assert_allclose(parts["mi"], log_qz - log_q_agg, rtol=1e-5, atol=1e-5)
    assert mss.get_config()["estimator"] == "mss"
    assert BetaTCVAE.from_config(mss.get_config()).objective_part.estimator == "mss"
    with pytest.raises(ConfigError, match="estimator"):
        BetaTCVAE(**TINY, estimator="exact")


def test_model_terms_match_brute_force_on_a_fixed_posterior():
    """The model's mi, tc and dimwise_kl for a given q(z|x) and a draw of z from it, against
    numpy."""
    rng = np.random.default_rng(1)
    m, n = 4, 7
    loc = rng.normal(size=(m, 3)).astype(np.float32)
    scale = rng.uniform(0.3, 1.5, size=(m, 3)).astype(np.float32)
    q = tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)
    model = BetaTCVAE(**TINY, dataset_size=n)
    z, log_q = q.experimental_sample_and_log_prob(1, seed=as_seed([5, 6]))
    terms = model.kl_decomposition(q, z[0], log_q[0])
    z, log_q = z.numpy()[0].astype(np.float64), log_q.numpy()[0].astype(np.float64)
    # log q(z_i|x_i) and log p(z_i) also by hand.
    own = np.array([sum(math.log(normal_pdf(z[i, l], loc[i, l], scale[i, l])) for l in range(3)) for i in range(m)])
    np.testing.assert_allclose(own, log_q, rtol=1e-5, atol=1e-5)
    log_pz = -0.5 * (z**2).sum(1) - 1.5 * math.log(2 * math.pi)
    log_qz, log_prod = brute_force_mws(z, loc.astype(np.float64), scale.astype(np.float64), n)
    np.testing.assert_allclose(terms["mi"], own - log_qz, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(terms["tc"], log_qz - log_prod, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(terms["dimwise_kl"], log_prod - log_pz, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ (b) decomposition identity, weights
def test_unit_weights_give_the_vae_loss_with_a_monte_carlo_kl():
    model = BetaTCVAE(**TINY, alpha=1.0, beta=1.0, gamma=1.0, dataset_size=1000, seed=3)
    loss, terms = model.objective_and_terms(X, seed=[3, 4])
    # The three parts sum to log q(z|x) - log p(z) of the same draw (from the contract's log_weights).
    w = model.log_weights(X, 1, seed=[3, 4])
    mc_kl = (w["log_qz"] - w["log_pz"]).numpy()[0]
    np.testing.assert_allclose(terms["mi"] + terms["tc"] + terms["dimwise_kl"], mc_kl, rtol=1e-5, atol=1e-4)
    # The loss is minus the one-sample ELBO of a VAE with the same weights and a Monte Carlo KL.
    vae_mc = twin(VAE, model, kl="monte_carlo")
    np.testing.assert_allclose(loss.numpy(), -np.mean(vae_mc.elbo_terms(X, 1, seed=[3, 4])["elbo"]),
                               rtol=1e-5, atol=1e-4)
    # The reported ELBO terms are the VAE's (analytic KL) for the same draw.
    reference = twin(VAE, model).elbo_terms(X, 1, seed=[3, 4])
    for name in ("log_px_z", "kl", "elbo"):
        np.testing.assert_allclose(terms[name], reference[name], rtol=1e-6, atol=1e-5)
    # The identity holds whatever N (N only shifts mass between MI, TC and dimwise KL).
    other = twin(BetaTCVAE, model, alpha=1.0, beta=1.0, gamma=1.0, dataset_size=7)
    other_loss, other_terms = other.objective_and_terms(X, seed=[3, 4])
    np.testing.assert_allclose(other_loss.numpy(), loss.numpy(), rtol=1e-5)
    assert not np.allclose(other_terms["tc"], terms["tc"])


def test_weights_and_kl_warmup():
    model = BetaTCVAE(**TINY, alpha=0.5, beta=6.0, gamma=2.0, dataset_size=100)
    loss, t = model.objective_and_terms(X, seed=[1, 2])
    expected = -np.mean(t["log_px_z"] - (0.5 * t["mi"] + 6.0 * t["tc"] + 2.0 * t["dimwise_kl"]))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    model.kl_weight.assign(0.25)
    loss, t = model.objective_and_terms(X, seed=[1, 2])
    expected = -np.mean(t["log_px_z"] - 0.25 * (0.5 * t["mi"] + 6.0 * t["tc"] + 2.0 * t["dimwise_kl"]))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("kwargs, key", [({"alpha": -1.0}, "alpha"), ({"beta": -0.5}, "beta"),
                                         ({"gamma": "big"}, "gamma"), ({"dataset_size": 0}, "dataset_size"),
                                         ({"dataset_size": 2.5}, "dataset_size")])
def test_bad_arguments_raise_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        BetaTCVAE(**TINY, **kwargs)


# ------------------------------------------------------------------ (c) fit, config, export
def test_fit_reports_the_decomposition_and_config_round_trips():
    keras.utils.set_random_seed(0)
    model = BetaTCVAE(**TINY, dataset_size=64, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(structured_data(64, seed=2), batch_size=16, epochs=6, verbose=0).history
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    for name in ("mi", "tc", "dimwise_kl", "elbo", "kl"):
        assert name in history and np.all(np.isfinite(history[name])), name

    config = model.get_config()
    assert {k: config[k] for k in ("alpha", "beta", "gamma", "dataset_size", "estimator")} == \
        {"alpha": 1.0, "beta": 6.0, "gamma": 1.0, "dataset_size": 64, "estimator": "mws"}
    clone = BetaTCVAE.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.objective_and_terms(X, seed=[2, 2])[0],
                                  model.objective_and_terms(X, seed=[2, 2])[0])
    assert type(tfvae.get_model_class("beta_tcvae").from_config(config)) is BetaTCVAE


def test_preset_builds_the_variant():
    preset = tfvae.load_preset("beta_tcvae_bmnist")
    assert preset.paper is None
    model = tfvae.from_preset("beta_tcvae_bmnist", compile=False)
    assert type(model) is BetaTCVAE
    assert (model.alpha, model.beta, model.gamma, model.dataset_size) == (1.0, 6.0, 1.0, 50000)
