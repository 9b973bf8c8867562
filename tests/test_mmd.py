"""InfoVAE and WAE-MMD (tfvae.models.mmd): the kernels and MMD^2 estimator against a numpy
double loop, the losses against the VAE's terms plus a numpy MMD, training, config round
trip (export: tests/test_contract.py)."""
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
from tfvae.models.mmd import WAEMMD, InfoVAE, imq_kernel, mmd2, rbf_kernel

SHAPE = (16,)
TINY = dict(data_shape=SHAPE, latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
binary_data = functools.partial(variant_helpers.binary_data, shape=SHAPE)
twin = functools.partial(variant_helpers.twin, config=TINY)


X = binary_data(10, seed=1)


def perturb(model, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v + rng.normal(0, scale, v.shape).astype("float32"))


def numpy_kernel(a, b, kernel, scale):
    c = 2 * len(a) * scale ** 2
    d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
    return math.exp(-d2 / c) if kernel == "rbf" else c / (c + d2)


def numpy_mmd2(x, y, kernel, scale):
    """Gretton et al. (2012) Lemma 6, a double loop over pairs i != j in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += (numpy_kernel(x[i], x[j], kernel, scale) + numpy_kernel(y[i], y[j], kernel, scale)
                          - numpy_kernel(x[i], y[j], kernel, scale) - numpy_kernel(x[j], y[i], kernel, scale))
    return total / (n * (n - 1))


# ------------------------------------------------------------------ kernels and MMD^2
@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_mmd2_matches_a_numpy_double_loop(kernel, scale):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 3)).astype("float32")
    y = (rng.normal(size=(9, 3)) * 1.5 + 0.5).astype("float32")
    np.testing.assert_allclose(mmd2(x, y, kernel, scale).numpy(), numpy_mmd2(x, y, kernel, scale),
                               rtol=1e-5, atol=1e-7)
    matrix = (rbf_kernel if kernel == "rbf" else imq_kernel)(x, y, scale).numpy()
    np.testing.assert_allclose(matrix[2, 5], numpy_kernel(x[2], y[5], kernel, scale), rtol=1e-6)
    assert matrix.shape == (9, 9)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd2_of_a_sample_with_itself_is_exactly_zero(kernel):
    # The cross term runs over the same pairs i != j as the within-sample terms.
    x = np.random.default_rng(1).normal(size=(20, 4)).astype("float32")
    assert mmd2(x, x, kernel).numpy() == 0.0


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd2_separates_different_gaussians(kernel):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 200, 3)).astype("float32")
    shifted = (rng.normal(size=(200, 3)) * 1.5 + 1.0).astype("float32")
    same, different = mmd2(a, b, kernel).numpy(), mmd2(a, shifted, kernel).numpy()
    assert different > 10 * abs(same) and different > 0.05, (same, different)


def test_mmd2_refuses_unequal_or_tiny_samples():
    with pytest.raises(ValueError, match="same size"):
        mmd2(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="kernel"):
        mmd2(np.zeros((3, 2)), np.zeros((3, 2)), kernel="poly")


# ------------------------------------------------------------------ the losses
def posterior_and_prior_draws(model, x, seed):
    """The z ~ q (one per example) and the prior draws a step with this seed uses: the
    posterior draw as `elbo_terms` makes it, the prior's from the seed folded in with 1."""
    seed = tf.constant(seed, tf.int32)
    z, _ = model.encode(x).experimental_sample_and_log_prob(1, seed=seed)
    z_p = model.prior().sample(len(x), seed=tf.random.experimental.stateless_fold_in(seed, 1))
    return z[0].numpy(), z_p.numpy()


def test_info_vae_loss_against_the_vae_terms_and_numpy_mmd():
    vae = VAE(**TINY, seed=3)
    perturb(vae, 2)
    terms = vae.elbo_terms(X, 1, seed=[4, 5])
    log_px_z, kl = terms["log_px_z"].numpy(), terms["kl"].numpy()

    # alpha = 0, lambda = 1: KL weight 1, MMD weight 0: the VAE's negative ELBO, same terms.
    plain = twin(InfoVAE, vae, alpha=0.0, lambda_=1.0)
    loss, got = plain.objective_and_terms(X, seed=[4, 5])
    np.testing.assert_allclose(loss.numpy(), -np.mean(log_px_z - kl), rtol=1e-6)
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_array_equal(got[name], terms[name])

    for alpha, lam, kernel in ((0.0, 50.0, "imq"), (0.5, 20.0, "rbf"), (1.0, 30.0, "imq")):
        model = twin(InfoVAE, vae, alpha=alpha, lambda_=lam, kernel=kernel, scale=0.8)
        mmd = numpy_mmd2(*posterior_and_prior_draws(model, X, [4, 5]), kernel, 0.8)
        assert abs(mmd) > 1e-4
        expected = -np.mean(log_px_z) + (1 - alpha) * np.mean(kl) + (alpha + lam - 1) * mmd
        np.testing.assert_allclose(model.objective_and_terms(X, seed=[4, 5])[0].numpy(), expected, rtol=1e-5)


def test_wae_mmd_loss_against_the_reconstruction_term_and_numpy_mmd():
    vae = VAE(**TINY, seed=3)
    perturb(vae, 2)
    terms = vae.elbo_terms(X, 1, seed=[6, 7])
    reconstruction = -np.mean(terms["log_px_z"].numpy())

    plain = twin(WAEMMD, vae, lambda_=0.0)
    loss, got = plain.objective_and_terms(X, seed=[6, 7])
    np.testing.assert_allclose(loss.numpy(), reconstruction, rtol=1e-6)
    for name in ("elbo", "log_px_z", "kl"):              # still reports the ELBO terms
        np.testing.assert_array_equal(got[name], terms[name])

    for kernel in ("imq", "rbf"):
        model = twin(WAEMMD, vae, lambda_=25.0, kernel=kernel)
        mmd = numpy_mmd2(*posterior_and_prior_draws(model, X, [6, 7]), kernel, 1.0)
        np.testing.assert_allclose(model.objective_and_terms(X, seed=[6, 7])[0].numpy(),
                                   reconstruction + 25.0 * mmd, rtol=1e-5)


@pytest.mark.parametrize("cls, weight_zero", [(InfoVAE, dict(alpha=0.0, lambda_=1.0)), (WAEMMD, dict(lambda_=0.0))])
def test_zero_mmd_weight_gives_the_same_gradients_as_the_terms(cls, weight_zero):
    # Through the model's own seed stream: the loss and gradients of the reduced objective.
    vae = VAE(**TINY, seed=5)
    model = twin(cls, vae, **weight_zero)
    steps = []
    for m, with_kl in ((vae, cls is InfoVAE), (model, None)):
        with tf.GradientTape() as tape:
            if with_kl is None:
                loss = m.objective(X, training=True)
            else:
                t = m.elbo_terms(X, 1, training=True)
                loss = -tf.reduce_mean(t["log_px_z"] - (t["kl"] if with_kl else 0.0))
        steps.append((loss.numpy(), [g.numpy() for g in tape.gradient(loss, m.trainable_variables)]))
    (loss_a, grads_a), (loss_b, grads_b) = steps
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls, kwargs", [(InfoVAE, dict(lambda_=10.0, kernel="imq")),
                                         (WAEMMD, dict(lambda_=10.0, kernel="rbf"))])
def test_fit_decreases_the_loss(cls, kwargs):
    keras.utils.set_random_seed(0)
    model = cls(**TINY, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(binary_data(64, seed=2), batch_size=16, epochs=6, verbose=0, shuffle=False).history
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(history["log_px_z"]))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name, kwargs, own", [
    ("info_vae", dict(alpha=0.25, lambda_=7.0, kernel="rbf", scale=0.5), ("alpha", "lambda_", "kernel", "scale")),
    ("wae_mmd", dict(lambda_=3.0, kernel="rbf", scale=2.0), ("lambda_", "kernel", "scale")),
])
def test_config_round_trip(name, kwargs, own):
    cls = tfvae.get_model_class(name)
    model = cls(**TINY, seed=2, **kwargs)
    config = model.get_config()
    assert {key: config[key] for key in own} == kwargs
    rebuilt = cls.from_config(config)
    assert type(rebuilt) is cls and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.objective_and_terms(X, seed=[1, 1])[0],
                                  model.objective_and_terms(X, seed=[1, 1])[0])


@pytest.mark.parametrize("cls, bad", [
    (InfoVAE, {"alpha": 1.5}), (InfoVAE, {"alpha": 0.0, "lambda_": 0.5}), (InfoVAE, {"kernel": "poly"}),
    (WAEMMD, {"lambda_": -1.0}), (WAEMMD, {"scale": 0.0}),
])
def test_bad_arguments_are_rejected(cls, bad):
    with pytest.raises(ConfigError):
        cls(**TINY, **bad)
