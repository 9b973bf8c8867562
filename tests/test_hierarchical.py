"""The two-stochastic-layer VAEs (hvae2, ladder), checked against numpy re-computations of
every factor, quadrature over the latent space, the plain VAE they reduce to, and the
exported SavedModel."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae.config import ConfigError
from tfvae.distributions import moments
from tfvae.export import export
from tfvae.inference import importance_sampling, optimize_posterior, refine_posterior
from tfvae.models import VAE
from tfvae.models.hvae2 import HVAE2
from tfvae.models.ladder import LadderVAE, precision_weighted_merge
from tfvae.presets import build_model
from tfvae.seeds import as_seed

SHAPE = (6, 6, 1)
TOL = dict(rtol=1e-5, atol=1e-4)


def tiny_hvae2(**kwargs):
    keras.utils.set_random_seed(0)    # initial weights
    config = dict(data_shape=SHAPE, latent_dims=(3, 2), encoder={"type": "mlp", "hidden": [16]},
                  stochastic_hidden=(8,))
    config.update(kwargs)
    return HVAE2(**config)


def tiny_ladder(**kwargs):
    keras.utils.set_random_seed(0)
    config = dict(data_shape=SHAPE, latent_dims=(3, 2), encoder={"type": "mlp", "hidden": [16]},
                  bottom_up=(12, 8), top_down=(8,))
    config.update(kwargs)
    return LadderVAE(**config)


def perturb(model, seed, scale=0.3):
    """Moves every trainable weight by N(0, scale^2) noise (biases away from 0, etc.)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))
    return model


def binary_batch(n=8, seed=0):
    return (np.random.default_rng(seed).random((n, *SHAPE)) > 0.5).astype("float32")


# ------------------------------------------------------------------ numpy re-implementation
def softplus(v):
    return np.logaddexp(0.0, v)


def norm_logpdf(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


ACTIVATIONS = {"tanh": np.tanh, "leaky_relu": lambda h: np.where(h > 0, h, 0.2 * h), "linear": lambda h: h}


def dense(h, layer, activation="linear"):
    return ACTIVATIONS[activation](h @ layer.kernel.numpy().astype(np.float64) + layer.bias.numpy())


def mlp(h, hidden_layers, out_layer, activation):
    for layer in hidden_layers:
        h = dense(h, layer, activation)
    return dense(h, out_layer)


def gaussian(params):
    """(loc, scale) from raw parameters: scale = softplus(raw) + 1e-4."""
    loc, raw = np.split(params, 2, axis=-1)
    return loc, softplus(raw) + 1e-4


def bernoulli_log_prob(x, logits):
    x = x.reshape(len(x), -1)
    logits = logits.reshape(*logits.shape[:-3], -1)
    return (x * logits - np.logaddexp(0.0, logits)).sum(-1)


def decoder_logits(model, z1):
    net = model.decoder_net
    logits = mlp(z1, net.hidden, net.out, "tanh")
    return logits.reshape(*z1.shape[:-1], *SHAPE)


def by_hand_terms(model, x, z):
    """The five log-densities of the ELBO decomposition at z [k, B, d1 + d2], in numpy."""
    d1, d2 = model.latent_dims
    z = z.astype(np.float64)
    z1, z2 = z[..., :d1], z[..., d1:]
    flat_x = x.reshape(len(x), -1).astype(np.float64)
    enc = mlp(flat_x, model.encoder_net.hidden, model.encoder_net.out, "tanh")
    terms = {"log_px_z1": bernoulli_log_prob(x, decoder_logits(model, z1)),
             "log_pz2": norm_logpdf(z2, 0.0, 1.0)}
    top_down = model.top_down
    loc_p, scale_p = gaussian(mlp(z2, top_down.hidden, top_down.out, "tanh" if isinstance(model, HVAE2)
                                  else "leaky_relu"))
    terms["log_pz1_z2"] = norm_logpdf(z1, loc_p, scale_p)
    if isinstance(model, HVAE2):
        terms["log_q_first"] = norm_logpdf(z1, *gaussian(enc))                       # q(z1|x)
        up = model.bottom_up
        terms["log_q_second"] = norm_logpdf(z2, *gaussian(mlp(z1, up.hidden, up.out, "tanh")))   # q(z2|z1)
    else:
        d_1 = ACTIVATIONS["leaky_relu"](enc)
        d_2 = d_1
        for layer in model.bottom_up_mlp:
            d_2 = dense(d_2, layer, "leaky_relu")
        loc_hat, scale_hat = gaussian(dense(d_1, model.bottom_up_head1))
        terms["log_q_first"] = norm_logpdf(z2, *gaussian(dense(d_2, model.bottom_up_head2)))   # q(z2|x)
        precision = 1 / scale_hat**2 + 1 / scale_p**2
        loc_q = (loc_hat / scale_hat**2 + loc_p / scale_p**2) / precision
        terms["log_q_second"] = norm_logpdf(z1, loc_q, np.sqrt(1 / precision))         # q(z1|z2, x)
    return terms


MAKERS = {"hvae2": tiny_hvae2, "ladder": tiny_ladder}


# ------------------------------------------------------------------ the ladder's merge
def test_merge_is_the_normalised_product_of_two_gaussians():
    """log N(z; mu, s) = log N(z; a) + log N(z; b) - log N(mu_a; mu_b, s_a^2 + s_b^2)."""
    rng = np.random.default_rng(0)
    loc_a, loc_b, z = rng.normal(size=(3, 50)) * 2
    scale_a, scale_b = np.exp(rng.normal(size=(2, 50)))
    loc, scale = (t.numpy() for t in precision_weighted_merge(*map(tf.constant, (loc_a, scale_a, loc_b, scale_b))))

    def log_n(v, m, s):
        return -0.5 * ((v - m) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)

    log_z = log_n(loc_a, loc_b, np.sqrt(scale_a**2 + scale_b**2))
    np.testing.assert_allclose(log_n(z, loc, scale), log_n(z, loc_a, scale_a) + log_n(z, loc_b, scale_b) - log_z,
                               rtol=1e-10, atol=1e-10)
    # And by quadrature: the normalised product has this mean and variance.
    grid = np.linspace(-30, 30, 600001)
    density = np.exp(log_n(grid, loc_a[0], scale_a[0]) + log_n(grid, loc_b[0], scale_b[0]))
    density /= density.sum()
    mean = (density * grid).sum()
    np.testing.assert_allclose(mean, loc[0], atol=1e-6)
    np.testing.assert_allclose((density * (grid - mean) ** 2).sum(), scale[0] ** 2, rtol=1e-5)


# ------------------------------------------------------------------ the ELBO decomposition
@pytest.mark.parametrize("kind", ["hvae2", "ladder"])
def test_log_weights_and_elbo_decompose_into_the_five_factors(kind):
    model = perturb(MAKERS[kind](), seed=1)
    x, k, seed = binary_batch(5), 4, 3
    w = model.log_weights(x, k, seed=seed)
    z = model.encode(x).sample(k, seed=as_seed(seed)).numpy()     # the samples log_weights drew
    t = by_hand_terms(model, x, z)
    log_q = t["log_q_first"] + t["log_q_second"]
    log_p = t["log_pz1_z2"] + t["log_pz2"]
    np.testing.assert_allclose(w["log_px_z"], t["log_px_z1"], **TOL)
    np.testing.assert_allclose(w["log_pz"], log_p, **TOL)
    np.testing.assert_allclose(w["log_qz"], log_q, **TOL)
    np.testing.assert_allclose(w["log_w"], t["log_px_z1"] + log_p - log_q, **TOL)
    # No closed-form KL: elbo_terms uses the Monte Carlo KL over the same samples.
    assert model.analytic_kl(model.encode(x)) is None
    terms = model.elbo_terms(x, k, seed=seed)
    np.testing.assert_allclose(terms["log_px_z"], t["log_px_z1"].mean(0), **TOL)
    np.testing.assert_allclose(terms["kl"], (log_q - log_p).mean(0), **TOL)
    np.testing.assert_allclose(terms["elbo"], (t["log_px_z1"] + log_p - log_q).mean(0), **TOL)
    # The KL of each layer, with q's factor as q draws it: hvae2 draws z1 first, the ladder z2.
    q_z1, q_z2 = ((t["log_q_first"], t["log_q_second"]) if kind == "hvae2"
                  else (t["log_q_second"], t["log_q_first"]))
    layer_kls = {"kl_z1": (q_z1 - t["log_pz1_z2"]).mean(0), "kl_z2": (q_z2 - t["log_pz2"]).mean(0)}
    for name, expected in layer_kls.items():
        np.testing.assert_allclose(terms[name], expected, err_msg=name, **TOL)
    # The k-sample objectives report them too, from their own draws (those of log_weights).
    iwae = perturb(MAKERS[kind](objective={"type": "iwae", "k": k}), seed=1)
    reported = iwae.training_loss(x, seed=seed).terms
    for name, expected in layer_kls.items():
        np.testing.assert_allclose(reported[name], expected, err_msg=name, **TOL)


@pytest.mark.parametrize("kind", ["hvae2", "ladder"])
def test_posterior_and_prior_samples_follow_their_log_prob(kind):
    """With d1 = d2 = 1, exp(log_prob) integrates to 1 on a grid covering the samples, and
    its mean and covariance match those of 40000 samples (within 5 standard errors)."""
    model = perturb(MAKERS[kind](latent_dims=(1, 1)), seed=2)
    x = binary_batch(1, seed=4)
    for name, dist in (("posterior", model.encode(x)), ("prior", model.prior())):
        draws = dist.sample(40000, seed=[5, 6]).numpy().reshape(-1, 2).astype(np.float64)
        axes = [np.linspace(lo - 2, hi + 2, 1001) for lo, hi in zip(draws.min(0), draws.max(0))]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
        cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
        log_p = dist.log_prob(grid[:, None, :] if name == "posterior" else grid).numpy().reshape(-1)
        p = np.exp(log_p.astype(np.float64)) * cell
        assert abs(p.sum() - 1) < 1e-3, (name, p.sum())
        mean = (p[:, None] * grid).sum(0) / p.sum()
        np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 5 * draws.std(0) / math.sqrt(len(draws)),
                                     err_msg=name)
        centred = grid - mean
        cov = (p[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) / p.sum()
        np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.05, atol=0.02, err_msg=name)
        assert dist.batch_shape == ((1,) if name == "posterior" else ())
        assert dist.event_shape == (2,)


def test_chain_moments_are_exact_for_the_first_block_and_rao_blackwellised_for_the_second():
    """q(z1|x) = N(mu(x), 2^2) with only unit 0 moving with x, q(z2|z1) = N(z1 / 2, 1): the
    means are mu and mu / 2 (only unit 0 moves), the standard deviations 2 and sqrt(2). The
    estimate gets z1's means exactly and z2's with the noise of z1 / 2 alone (variance over x
    1 / 256 = 0.004), where 256 plain draws scatter them by variances 4 / 256 = 0.016 and
    2 / 256 = 0.008: enough for an unused z1 unit to pass as active (threshold 0.01)."""
    from tfvae.distributions import DiagonalNormal
    from tfvae.models.hierarchy import TwoLevelChain

    mu = np.zeros((1000, 3), np.float32)
    mu[:, 0] = np.linspace(-1, 1, 1000)
    chain = TwoLevelChain(DiagonalNormal(loc=mu, scale_diag=2 * np.ones_like(mu)),
                          lambda z1: DiagonalNormal(loc=z1 / 2, scale_diag=tf.ones_like(z1)),
                          first_is_z1=True, sizes=(3, 3))
    mean, stddev = moments(chain, seed=(1, 2), samples=256)
    expected_mean = np.concatenate([mu, mu / 2], axis=-1)
    np.testing.assert_allclose(mean[:, :3], mu)
    np.testing.assert_allclose(mean[:, 3:], mu / 2, atol=0.3)     # z1 / 2 averaged: noise 1 / 16 (sd)
    np.testing.assert_allclose(stddev[:, :3], 2.0)
    np.testing.assert_allclose(np.mean(stddev[:, 3:]), math.sqrt(2), rtol=0.02)
    # Activity Var_x(E[z_i]) of the unused units (1, 2 of each block): zero for z1, 0.004 for z2.
    activity = np.var(mean.numpy(), axis=0, ddof=1)
    assert activity[[1, 2]].max() == 0 and activity[[4, 5]].max() < 0.005
    plain = np.var(np.mean(chain.sample(256, seed=[1, 2]).numpy(), 0), axis=0, ddof=1)
    assert plain[[1, 2]].min() > 0.01                  # what the estimate avoids
    np.testing.assert_allclose(activity[[0, 3]], np.var(expected_mean[:, [0, 3]], axis=0, ddof=1), rtol=0.05)


def test_active_units_are_counted_per_stochastic_layer():
    """An hvae2 whose q(z1|x) mean ignores x in all but 2 units and whose q(z2|z1) mean
    ignores z1 entirely: 2 active units, both in z1 (numpy: the encoder's output kernel and
    q(z2|z1)'s mean kernel zeroed)."""
    from tfvae.inference.units import active_units

    model = perturb(HVAE2(data_shape=(6, 6, 1), latent_dims=(3, 2), encoder={"type": "mlp", "hidden": [8]}), seed=3)
    kernel, bias = model.encoder_net.out.get_weights()          # [8, 2 * 3]: means, then raw scales
    kernel[:, 2:3] = 0.0                                        # z1 unit 2: a constant mean
    kernel[:, :2] *= 20.0                                       # units 0, 1: means that move a lot
    model.encoder_net.out.set_weights([kernel, bias])
    kernel, bias = model.bottom_up.out.get_weights()            # q(z2|z1): [hidden, 2 * 2]
    kernel[:, :2] = 0.0
    model.bottom_up.out.set_weights([kernel, bias])
    out = active_units(model, binary_batch(200, seed=5))
    assert out["active_per_layer"] == [2, 0] and out["active"] == 2
    assert "active_per_layer" not in active_units(VAE(data_shape=(6, 6, 1), latent_dim=2), binary_batch(20))


# ------------------------------------------------------------------ the one-layer limit
def test_one_layer_hvae2_is_exactly_the_vae():
    config = dict(data_shape=SHAPE, encoder={"type": "mlp", "hidden": [16]}, seed=3)
    vae = perturb(VAE(latent_dim=3, **config), seed=5)
    one = HVAE2(latent_dims=(3,), **config)
    assert [v.shape for v in one.weights] == [v.shape for v in vae.weights]
    one.set_weights(vae.get_weights())
    x = binary_batch(6)
    for a, b in ((vae.elbo_terms(x, 3, seed=2), one.elbo_terms(x, 3, seed=2)),
                 (vae.log_weights(x, 3, seed=2), one.log_weights(x, 3, seed=2))):
        for key in ("log_px_z", "kl", "elbo", "log_w", "log_pz", "log_qz"):
            if key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(importance_sampling(vae, x, 50, compiled=False)["log_px"],
                               importance_sampling(one, x, 50, compiled=False)["log_px"], rtol=1e-6)
    np.testing.assert_allclose(vae.sample(3, seed=4), one.sample(3, seed=4), rtol=1e-6)
    np.testing.assert_allclose(vae.reconstruct(x), one.reconstruct(x), rtol=1e-6)
    # A training step from the same weights and seed moves the weights the same way.
    for m in (vae, one):
        m.compile(optimizer=keras.optimizers.Adam(1e-2))
        m.train_step(tf.constant(binary_batch(8, seed=1)))
    for a, b in zip(vae.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("kind", ["hvae2", "ladder"])
def test_config_round_trips(kind):
    model = perturb(MAKERS[kind](latent_dim=5), seed=6)
    config = model.get_config()
    assert config["latent_dims"] == [3, 2] and config["latent_dim"] == 5
    rebuilt = type(model).from_config(config)
    assert rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    x = binary_batch(4)
    np.testing.assert_allclose(rebuilt.log_weights(x, 3, seed=1)["log_w"], model.log_weights(x, 3, seed=1)["log_w"],
                               rtol=1e-6)
    # Through the preset machinery's validated builder as well.
    built = build_model({"class": kind, **config})
    assert built.get_config() == config


@pytest.mark.parametrize("make, overrides, message", [
    (tiny_hvae2, {"latent_dim": 4}, "sum of latent_dims"),
    (tiny_hvae2, {"latent_dims": ()}, "latent_dims must list 1 or 2"),
    (tiny_hvae2, {"latent_dims": (3, 2, 1)}, "latent_dims must list 1 or 2"),
    (tiny_hvae2, {"latent_dims": (3, 0)}, "latent_dims"),
    (tiny_hvae2, {"stochastic_hidden": (8, -1)}, "stochastic_hidden"),
    (tiny_ladder, {"latent_dims": (3,)}, "latent_dims must list 2"),
    (tiny_ladder, {"bottom_up": (12,)}, "bottom_up lists"),
    (tiny_ladder, {"top_down": "wide"}, "top_down"),
])
def test_bad_arguments_raise_config_errors(make, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(**overrides)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_the_own_prior_and_posterior_refuse_parts_instead_of_ignoring_them(kind):
    # Earlier a prior or posterior part given to these models was built and never used.
    make = MAKERS[kind]
    for given, message in (({"prior": {"type": "vamp", "pseudo_inputs": 3}}, "takes no 'prior'"),
                           ({"posterior": "iaf"}, "takes no 'posterior'"),
                           ({"objective": "beta_tcvae"}, "posterior is its own chain")):
        with pytest.raises(ConfigError, match=message):
            make(**given)
    # The default parts, which configs written by earlier versions hold, and any other objective pass.
    model = make(prior="standard_normal", posterior={"type": "diagonal"}, objective={"type": "iwae", "k": 2})
    assert "prior" not in model.get_config() and model.get_config()["objective"]["type"] == "iwae"


def test_bad_activation_and_unknown_key():
    with pytest.raises(ValueError, match="unknown activation"):
        tiny_hvae2(stochastic_activation="wiggle")
    with pytest.raises(ValueError, match="unknown activation"):
        tiny_ladder(activation="wiggle")
    with pytest.raises(ConfigError, match="Did you mean 'stochastic_hidden'"):
        build_model({"class": "hvae2", "stochastic_hiden": [8]})


def test_decode_reads_z1_only_and_checks_the_size():
    model = perturb(tiny_hvae2(), seed=7)
    z = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    other = z.copy()
    other[:, 3:] += 5.0                                   # change z2 only
    np.testing.assert_array_equal(model.decode(z).mean(), model.decode(other).mean())
    np.testing.assert_allclose(model.decode(z).mean(), 1 / (1 + np.exp(-decoder_logits(model, z[:, :3]))),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 5\)"):
        model.decode(z[:, :3])


def test_conditional_hvae2_sees_the_condition():
    model = perturb(tiny_hvae2(condition_dim=2), seed=8)
    x = binary_batch(3)
    a, b = np.tile([[1.0, 0.0]], (3, 1)), np.tile([[0.0, 1.0]], (3, 1))
    log_px = [importance_sampling(model, x, 20, condition=c, compiled=False)["log_px"].numpy() for c in (a, b)]
    assert np.all(np.isfinite(log_px)) and np.abs(log_px[0] - log_px[1]).max() > 1e-3


# ------------------------------------------------------------------ the generic tools
@pytest.mark.parametrize("kind", ["hvae2", "ladder"])
def test_refinement_and_posterior_optimisation_work_on_the_joint(kind):
    model = perturb(MAKERS[kind](), seed=9)
    x = binary_batch(4)
    z = model.encode(x).sample(3, seed=[1, 1])
    start = refine_posterior(model, x, steps=0, seed=1)
    np.testing.assert_allclose(start.distribution.log_prob(z), model.encode(x).log_prob(z), rtol=1e-6)
    refined = refine_posterior(model, x, steps=3, learning_rate=0.05, seed=1)
    assert refined.params.shape == (4, model.posterior_param_count())
    proposal = refined.distribution
    assert np.all(np.isfinite(importance_sampling(model, x, 16, proposal=proposal, compiled=False)["log_px"]))
    if kind == "hvae2":   # per-example fits start from the encoder's (sampled) moments of the joint
        fit = optimize_posterior(model, x, family="diag", steps=3, seed=0)
        assert fit.distribution.event_shape == (5,)
        assert np.all(np.isfinite(model.elbo_terms(x, 4, seed=0, posterior=fit.distribution)["elbo"]))


@pytest.mark.parametrize("kind", ["hvae2", "ladder"])
def test_fit_evaluate_export_reload(kind, tmp_path):
    keras.utils.set_random_seed(0)
    model = MAKERS[kind](seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = tf.data.Dataset.from_tensor_slices(binary_batch(16, seed=2)).batch(8)
    history = model.fit(data, epochs=2, verbose=0, shuffle=False).history
    assert set(history) == {"loss", "elbo", "log_px_z", "kl", "kl_z1", "kl_z2"}
    for name, values in history.items():
        assert np.all(np.isfinite(values)), name
    np.testing.assert_allclose(history["loss"], -np.asarray(history["elbo"]), rtol=1e-5)   # kl_weight = 1
    np.testing.assert_allclose(history["elbo"], np.subtract(history["log_px_z"], history["kl"]), rtol=1e-5)
    np.testing.assert_allclose(history["kl"], np.add(history["kl_z1"], history["kl_z2"]), rtol=1e-5)

    x = binary_batch(6, seed=3)
    estimates = importance_sampling(model, x, 64, seed=[7, 0])
    # Same samples: log mean w >= mean log w (Jensen), the latter being the Monte Carlo ELBO.
    assert np.all(estimates["log_px"].numpy() >= estimates["elbo"].numpy() - 1e-4)
    assert np.all(estimates["log_px"].numpy() < 0)

    path = export(model, tmp_path / "export", k=64, max_samples=10, seed=7, verbose=False)
    loaded = tf.saved_model.load(path)
    np.testing.assert_allclose(loaded.log_likelihood(x)["log_px"], estimates["log_px"], **TOL)
    terms = model.elbo_terms(x, k=1, seed=[7, 0])
    for key in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(loaded.elbo(x)[key], terms[key], err_msg=key, **TOL)
    mean, stddev = moments(model.encode(x))
    np.testing.assert_allclose(loaded.encode(x)["mean"], mean, **TOL)
    np.testing.assert_allclose(loaded.encode(x)["stddev"], stddev, **TOL)
    z = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(loaded.decode(z)["mean"], model.decode(z).mean(), **TOL)
    np.testing.assert_allclose(loaded.sample(4, [1, 2])["x"], model.sample(4, seed=[1, 2]), **TOL)
    np.testing.assert_allclose(loaded.reconstruct(x)["reconstruction"], model.reconstruct(x), **TOL)
