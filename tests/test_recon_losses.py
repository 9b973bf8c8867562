"""Reconstruction-loss VAEs (tfvae.models.recon_losses): log-cosh against float64 numpy and its
limits, SSIM / MS-SSIM against a numpy implementation and tf.image, the training loss against
one rebuilt from a VAE twin's draws, training and config round trip (export: tests/test_contract.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.recon_losses import LogCoshVAE, MSSIMVAE, log_cosh_loss, ms_ssim, ms_ssim_loss

IMAGE = (16, 16, 1)
SMALL_MSSIM = dict(power_factors=[0.5, 0.5], filter_size=5, filter_sigma=1.0)   # scales 16 and 8
TINY = {
    "logcosh_vae": dict(data_shape=(16,), latent_dim=3, encoder={"type": "mlp", "hidden": [8]}),
    "mssim_vae": dict(data_shape=IMAGE, latent_dim=3, encoder={"type": "mlp", "hidden": [8]}, **SMALL_MSSIM),
}
CLASSES = {"logcosh_vae": LogCoshVAE, "mssim_vae": MSSIMVAE}
VARIANTS = sorted(CLASSES)
# Wang et al.'s first three scale weights, renormalised: the default power_factors
DEFAULT_POWER_FACTORS = tuple(w / (0.0448 + 0.2856 + 0.3001) for w in (0.0448, 0.2856, 0.3001))


def vae_config(name):
    return {k: v for k, v in TINY[name].items() if k not in SMALL_MSSIM}


def data(name, n, seed=0):
    return variant_helpers.structured_data(n, TINY[name]["data_shape"], seed=seed)


# ------------------------------------------------------------------ numpy references (float64)
def numpy_window(size, sigma):
    i = np.arange(size) - (size - 1) / 2
    g = np.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def numpy_ssim_and_cs(x, y, window, c1=0.01 ** 2, c2=0.03 ** 2):
    """Mean SSIM and mean cs over every placement of the window in one channel x, y [H, W],
    with the covariances written in centred form: sum_w w (x - mu_x)(y - mu_y)."""
    f = window.shape[0]
    xs = np.lib.stride_tricks.sliding_window_view(x, (f, f))      # [H-f+1, W-f+1, f, f]
    ys = np.lib.stride_tricks.sliding_window_view(y, (f, f))
    mu_x, mu_y = (xs * window).sum((-2, -1)), (ys * window).sum((-2, -1))
    dx, dy = xs - mu_x[..., None, None], ys - mu_y[..., None, None]
    var_x, var_y, cov = (dx * dx * window).sum((-2, -1)), (dy * dy * window).sum((-2, -1)), (dx * dy * window).sum((-2, -1))
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    return (luminance * cs).mean(), cs.mean()


def numpy_halve(image):
    """2x2 means of [H, W]; an odd side gets its last row/column repeated first."""
    h, w = image.shape
    image = np.pad(image, ((0, h % 2), (0, w % 2)), mode="edge")
    return image.reshape(image.shape[0] // 2, 2, image.shape[1] // 2, 2).mean((1, 3))


def numpy_ms_ssim(x, y, power_factors, filter_size, filter_sigma):
    """MS-SSIM of one image pair [H, W, C]: per channel, prod_s max(cs_s, 0)^w_s over all
    scales but the last, times max(ssim_last, 0)^w_last; then the mean over channels."""
    window = numpy_window(filter_size, filter_sigma)
    values = []
    for c in range(x.shape[-1]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        product = 1.0
        for s, w in enumerate(power_factors):
            if s:
                a, b = numpy_halve(a), numpy_halve(b)
            ssim, cs = numpy_ssim_and_cs(a, b, window)
            product *= max(ssim if s == len(power_factors) - 1 else cs, 0.0) ** w
        values.append(product)
    return np.mean(values)


def noisy_pair(shape, n=3, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape))
    y = np.clip(x + rng.normal(0, noise, x.shape), 0, 1)
    return x.astype("float32"), y.astype("float32")


# ------------------------------------------------------------------ log-cosh
def test_log_cosh_matches_numpy_in_float64():
    rng = np.random.default_rng(0)
    x, x_hat = rng.random((4, 3, 5)), rng.random((4, 3, 5))
    for a in (0.5, 10.0, 37.0):
        want = (np.log(np.cosh(a * (x_hat - x))) / a).sum((1, 2))
        np.testing.assert_allclose(log_cosh_loss(x, x_hat, a).numpy(), want, rtol=1e-12)
        got32 = log_cosh_loss(x.astype("float32"), x_hat.astype("float32"), a)
        assert got32.dtype == tf.float32
        np.testing.assert_allclose(got32.numpy(), want, rtol=1e-5)
    # event_ndims: sum over the last axis only
    np.testing.assert_allclose(log_cosh_loss(x, x_hat, 10.0, event_ndims=1).numpy(),
                               (np.log(np.cosh(10 * (x_hat - x))) / 10).sum(-1), rtol=1e-12)


def test_log_cosh_large_arguments_do_not_overflow():
    # a * t up to 700: cosh is still finite in float64, so the direct formula is a reference.
    t = np.array([[-0.7, -0.3, 0.05, 0.35, 0.7]])
    want = (np.log(np.cosh(1000.0 * t)) / 1000.0).sum(1)
    np.testing.assert_allclose(log_cosh_loss(np.zeros_like(t), t, 1000.0).numpy(), want, rtol=1e-12)
    # beyond: cosh overflows (also float64), log cosh(u) = |u| - log 2 to working precision
    t = np.array([[-3.0, -1.0, 1.0, 3.0]], np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(np.cosh(1e4 * t.astype(np.float64))).all()
    got = log_cosh_loss(np.zeros_like(t), t, 1e4).numpy()
    np.testing.assert_allclose(got, (np.abs(t) - np.log(2) / 1e4).sum(1), rtol=1e-6)
    huge = log_cosh_loss(np.zeros((1, 2), np.float32), np.array([[1e30, -1e30]], np.float32), 1.0)
    np.testing.assert_allclose(huge.numpy(), [2e30], rtol=1e-6)


def test_log_cosh_small_a_is_half_a_times_squared_error_and_gradient_is_tanh():
    rng = np.random.default_rng(1)
    x, x_hat = rng.random((3, 6)), rng.random((3, 6))
    a = 1e-4
    np.testing.assert_allclose(log_cosh_loss(x, x_hat, a).numpy(), a / 2 * ((x_hat - x) ** 2).sum(1), rtol=1e-6)
    # d/dx_hat (1/a) log cosh(a (x_hat - x)) = tanh(a (x_hat - x)), also at t = 0
    x_hat = tf.constant(np.concatenate([x_hat, x[:, :1]], 1))
    x = np.concatenate([x, x[:, :1]], 1)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        loss = tf.reduce_sum(log_cosh_loss(x, x_hat, 10.0))
    np.testing.assert_allclose(tape.gradient(loss, x_hat).numpy(), np.tanh(10.0 * (x_hat.numpy() - x)),
                               rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ SSIM / MS-SSIM
@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 2)])
def test_single_scale_ssim_matches_numpy_and_tf_image(shape):
    x, y = noisy_pair(shape)
    want = np.array([np.mean([numpy_ssim_and_cs(a[..., c].astype(np.float64), b[..., c].astype(np.float64),
                                                numpy_window(7, 1.0))[0] for c in range(shape[-1])])
                     for a, b in zip(x, y)])
    assert (want > 0.2).all() and (want < 0.95).all()
    ours = ms_ssim(x, y, power_factors=(1.0,), filter_size=7, filter_sigma=1.0).numpy()
    np.testing.assert_allclose(ours, want, rtol=2e-5)
    np.testing.assert_allclose(tf.image.ssim(x, y, 1.0, filter_size=7, filter_sigma=1.0).numpy(), want, rtol=2e-5)
    np.testing.assert_allclose(tf.image.ssim_multiscale(x, y, 1.0, power_factors=(1.0,), filter_size=7,
                                                        filter_sigma=1.0).numpy(), want, rtol=2e-5)


@pytest.mark.parametrize("shape, power_factors, filter_size", [
    ((28, 28, 1), None, 7),                           # the default: 3 scales, 28 -> 14 -> 7
    ((64, 64, 2), (0.1, 0.3, 0.4, 0.2), 7),          # 4 scales: 64 -> 32 -> 16 -> 8
    ((27, 33, 1), (0.2, 0.3, 0.5), 5),                # odd sides are padded before halving
])
def test_ms_ssim_is_the_product_of_independent_per_scale_terms(shape, power_factors, filter_size):
    x, y = noisy_pair(shape, seed=2)
    kwargs = {"filter_size": filter_size, "filter_sigma": 1.0}
    if power_factors is None:
        power_factors = DEFAULT_POWER_FACTORS
        got = ms_ssim(x, y).numpy()                   # the defaults
    else:
        got = ms_ssim(x, y, power_factors=power_factors, **kwargs).numpy()
    want = np.array([numpy_ms_ssim(a, b, power_factors, filter_size, 1.0) for a, b in zip(x, y)])
    np.testing.assert_allclose(got, want, rtol=2e-5)
    reference = tf.image.ssim_multiscale(x, y, 1.0, power_factors=power_factors, **kwargs).numpy()
    np.testing.assert_allclose(got, reference, rtol=2e-5)
    np.testing.assert_allclose(ms_ssim_loss(x, y, power_factors=power_factors, **kwargs).numpy(), 1 - want,
                               rtol=1e-4)


def test_identical_images_give_zero_loss_and_anticorrelated_ones_a_finite_gradient():
    x, y = noisy_pair((28, 28, 1), seed=3)
    np.testing.assert_allclose(ms_ssim_loss(x, x).numpy(), 0.0, atol=1e-6)
    assert (ms_ssim_loss(x, y).numpy() > 0.05).all()
    # 1 - x: negative contrast-structure terms, clipped at 0 -> MS-SSIM 0, loss 1, as numpy
    inverted = tf.constant(1.0 - x)
    with tf.GradientTape() as tape:
        tape.watch(inverted)
        loss = ms_ssim_loss(x, inverted)
    np.testing.assert_allclose(loss.numpy(), [1 - numpy_ms_ssim(a, 1 - a, DEFAULT_POWER_FACTORS, 7, 1.0) for a in x])
    np.testing.assert_allclose(loss.numpy(), 1.0)
    assert np.isfinite(tape.gradient(loss, inverted).numpy()).all()


def test_images_too_small_or_not_images_are_refused_with_what_fits():
    with pytest.raises(ConfigError, match=r"16x16 images are too small for 3 scales with filter_size 7: "
                                          r"scale 2 is 4x4.*at most 2 scale"):
        MSSIMVAE(data_shape=IMAGE, latent_dim=2)
    with pytest.raises(ConfigError, match="at most 2 scale"):          # the tf.image defaults at 28x28
        MSSIMVAE(data_shape=(28, 28, 1), power_factors=[0.0448, 0.2856, 0.3001, 0.2363, 0.1333], filter_size=11)
    with pytest.raises(ConfigError, match="height, width, channels"):
        MSSIMVAE(data_shape=(784,), latent_dim=2)
    with pytest.raises(ConfigError, match="filter_size of at most 6"):
        ms_ssim(np.zeros((1, 6, 8, 1)), np.zeros((1, 6, 8, 1)), power_factors=(1.0,), filter_size=7)
    MSSIMVAE(data_shape=(64, 64, 3), latent_dim=2, power_factors=[0.25] * 4)   # 64 -> 8 fits a 7x7 window


# ------------------------------------------------------------------ the models
def numpy_kl(q):
    mu, sigma = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    return 0.5 * (mu ** 2 + sigma ** 2 - 1 - 2 * np.log(sigma)).sum(-1)


def numpy_recon(name, x, x_hat):
    if name == "logcosh_vae":
        return (np.log(np.cosh(10.0 * (x_hat - x))) / 10.0).reshape(len(x), -1).sum(1)
    return 1 - tf.image.ssim_multiscale(x, x_hat, 1.0, power_factors=SMALL_MSSIM["power_factors"],
                                        filter_size=5, filter_sigma=1.0).numpy()


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("beta, recon_weight", [(1.0, None), (2.5, 3.0)])
def test_loss_is_weighted_reconstruction_plus_beta_kl_of_the_same_draw(name, beta, recon_weight):
    vae = VAE(**vae_config(name), seed=3)
    for v in vae.trainable_variables:       # away from the initialisation
        v.assign(v + np.random.default_rng(2).normal(0, 0.4, v.shape).astype("float32"))
    x = data(name, 6, seed=1)
    model = variant_helpers.twin(CLASSES[name], vae, TINY[name], beta=beta, recon_weight=recon_weight)
    loss, terms = model.objective_and_terms(x, seed=[4, 5])

    # The same z from the VAE twin's public API, and everything else recomputed independently.
    q = vae.encode(x)
    z, _ = q.experimental_sample_and_log_prob(1, seed=tf.constant([4, 5], tf.int32))
    x_hat = vae.decode(z).mean()[0].numpy()
    recon, kl = numpy_recon(name, x, x_hat), numpy_kl(q)
    weight = recon_weight if recon_weight is not None else (256.0 if name == "mssim_vae" else 1.0)
    assert recon.min() > 1e-2 and kl.min() > 1e-2
    np.testing.assert_allclose(terms["recon_loss"].numpy(), recon, rtol=2e-5)
    np.testing.assert_allclose(loss.numpy(), np.mean(weight * recon + beta * kl), rtol=2e-5)
    # the reported terms are the likelihood head's ELBO for that draw
    want = vae.elbo_terms(x, 1, seed=[4, 5])
    for key in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(terms[key].numpy(), want[key].numpy(), rtol=1e-6)
    # the warm-up weight multiplies the KL only
    model.kl_weight.assign(0.25)
    np.testing.assert_allclose(model.objective(x, seed=[4, 5]).numpy(), np.mean(weight * recon + 0.25 * beta * kl),
                               rtol=2e-5)


def test_logcosh_with_recon_weight_a_is_the_negative_elbo_of_a_hyperbolic_secant_likelihood():
    a, name = 4.0, "logcosh_vae"
    t = np.linspace(-60 / a, 60 / a, 200_001)
    density = a / np.pi / np.cosh(a * t)
    np.testing.assert_allclose(np.sum(density) * (t[1] - t[0]), 1.0, rtol=1e-6)    # a proper density
    vae = VAE(**vae_config(name), seed=1)
    x = data(name, 5, seed=6)
    model = variant_helpers.twin(LogCoshVAE, vae, TINY[name], a=a, recon_weight=a, beta=1.0)
    q = vae.encode(x)
    z, _ = q.experimental_sample_and_log_prob(1, seed=tf.constant([8, 9], tf.int32))
    x_hat = vae.decode(z).mean()[0].numpy().astype(np.float64)
    log_sech_likelihood = (np.log(a / np.pi) - np.log(np.cosh(a * (x - x_hat)))).sum(1)
    negative_elbo = np.mean(-log_sech_likelihood + numpy_kl(q))
    np.testing.assert_allclose(model.objective(x, seed=[8, 9]).numpy(), negative_elbo - 16 * np.log(np.pi / a),
                               rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_fit_decreases_the_loss(name):
    keras.utils.set_random_seed(0)
    model = CLASSES[name](**TINY[name])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(data(name, 64, seed=2), batch_size=16, epochs=6, verbose=0, shuffle=False).history
    assert all(np.isfinite(history[key]).all() for key in ("loss", "elbo", "recon_loss"))
    assert history["loss"][-1] < 0.9 * history["loss"][0], history["loss"]
    assert history["recon_loss"][-1] < history["recon_loss"][0]


def test_mixed_precision_keeps_losses_float32():
    model = LogCoshVAE(**TINY["logcosh_vae"], precision="mixed_bfloat16")
    loss, terms = model.objective_and_terms(data("logcosh_vae", 4), seed=[1, 2])
    assert loss.dtype == tf.float32 and all(t.dtype == tf.float32 for t in terms.values())
    assert np.isfinite(loss.numpy())


@pytest.mark.parametrize("name, extra", [("logcosh_vae", {"a": 3.0, "beta": 0.5, "recon_weight": 2.0}),
                                         ("mssim_vae", {"beta": 4.0, "filter_sigma": 0.8})])
def test_config_round_trip_and_validation(name, extra):
    model = CLASSES[name](**{**TINY[name], **extra}, seed=2)
    config = model.get_config()
    assert all(config[k] == v for k, v in extra.items())
    rebuilt = tfvae.get_model_class(name).from_config(config)
    assert type(rebuilt) is CLASSES[name] and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    x = data(name, 5)
    np.testing.assert_array_equal(rebuilt.objective(x, seed=[1, 1]), model.objective(x, seed=[1, 1]))
    bad = [{"beta": -1.0}, {"recon_weight": 0.0}, {"recon_weight": "heavy"}]
    bad += [{"a": 0.0}] if name == "logcosh_vae" else [{"power_factors": []}, {"power_factors": [0.5, -0.5]},
                                                       {"filter_size": 0}, {"filter_sigma": -1.0}]
    for values in bad:
        with pytest.raises(ConfigError):
            CLASSES[name](**{**TINY[name], **values})
