"""The IAF variant: its flow against autodiff Jacobians and a numpy re-implementation of the
steps, its reductions (identity flow = the encoder's Gaussian, no steps = the VAE), the
single-pass log q of the importance estimator, fit and evaluate (export: tests/test_contract.py)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError
from tfvae.distributions import DiagonalNormal, moments
from tfvae.inference import importance_sampling
from tfvae.models import VAE
from tfvae.models.iaf import IAF, MADE, made_masks   # registers "iaf" (tfvae.models does not import it yet)
from tfvae.registry import get_model_class

tfd, tfb = tfp.distributions, tfp.bijectors
SHAPE = (6, 6, 1)
TOL = dict(rtol=1e-5, atol=1e-4)


def tiny_iaf(**kwargs):
    config = dict(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [16]}, flow_steps=2,
                  made_hidden=[8, 8], made_activation="tanh", context_dim=4)
    config.update(kwargs)
    keras.utils.set_random_seed(0)          # the same initial weights in every run
    return IAF(**config)


def perturb(variables, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def binary_batch(n=5, seed=0):
    return (np.random.default_rng(seed).random((n, *SHAPE)) > 0.5).astype("float32")


def output_layer_weights(model):
    """The last kernel and bias of every MADE: the layers that start at zero."""
    return [w for made in model.made_steps for w in made.output_layer_weights()]


def _logpdf_normal(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


# ------------------------------------------------------------------ numpy reference
def numpy_made(made, z, context):
    """The MADE's forward pass in float64 numpy from its weights: [..., L, 2]."""
    h = z
    n = len(made.kernels)
    for i, (kernel, bias, mask) in enumerate(zip(made.kernels, made.biases, made.masks)):
        h = h @ (kernel.numpy().astype(np.float64) * mask.numpy()) + bias.numpy()
        if i == 0:
            h = h + context @ made.context_kernel.numpy().astype(np.float64)
        if i == n - 1:
            h = h + context @ made.output_context_kernel.numpy().astype(np.float64)
        if i < n - 1:
            h = np.tanh(h)
    return h.reshape(*h.shape[:-1], made.event_size, 2)


def numpy_flow(model, z0, context):
    """(z_T, sum_t log|det dz_t/dz_{t-1}|) by the paper's update, written out in numpy; the
    order is reversed between steps and restored at the end."""
    z, log_det = z0.astype(np.float64), 0.0
    for t, made in enumerate(model.made_steps):
        if t:
            z = z[..., ::-1]
        out = numpy_made(made, z, context)
        m, s = out[..., 0], out[..., 1]
        if model.update == "gated":
            sigma = 1 / (1 + np.exp(-(s + model.gate_bias)))
            z = sigma * z + (1 - sigma) * m
            log_det = log_det + np.log(sigma).sum(-1)
        else:
            log_scale = 5 * np.tanh(s / 5)
            z = np.exp(log_scale) * z + m
            log_det = log_det + log_scale.sum(-1)
    if len(model.made_steps) % 2 == 0:
        z = z[..., ::-1]
    return z, log_det


# ------------------------------------------------------------------ the MADE
def test_made_outputs_depend_on_earlier_inputs_only():
    keras.utils.set_random_seed(0)
    made = MADE(event_size=5, hidden=[12, 12], activation="tanh", context_size=3)
    made.build()
    perturb(made.trainable_variables, 0, scale=1.0)       # the output layer starts at zero
    z = tf.constant(np.random.default_rng(1).normal(size=(4, 5)), tf.float32)
    context = tf.constant(np.random.default_rng(2).normal(size=(4, 3)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, context])
        out = made(z, context)
        params = [out[..., 0], out[..., 1]]
    assert out.shape == (4, 5, 2)
    for p in params:
        jacobian = np.abs(tape.batch_jacobian(p, z).numpy()).max(0)               # [out i, in j]
        assert np.all(jacobian[np.triu_indices(5)] == 0)                          # j >= i: none
        assert np.all(jacobian[np.tril_indices(5, -1)] > 1e-6)                    # j < i: all
        assert np.all(np.abs(tape.batch_jacobian(p, context).numpy()).max((0, 2)) > 1e-6)
    # One latent dimension: the output sees the context only.
    assert made_masks(1, (4,), 2)[-1].sum() == 8 and made_masks(1, (4,), 2)[0].sum() == 0


@pytest.mark.parametrize("samples, batch", [(1, 1), (3, 2)])
def test_made_gradients_through_k_draws_equal_those_of_each_draw_alone(samples, batch):
    """z [k, B, L] against a context [B, H], compiled with static shapes, ELU hidden units:
    the gradients equal the sum over the k draws of each draw's [B, L] gradients. At k = B = 1
    the plain broadcast sum once failed in oneDNN's rewrite of the ELU gradient (`_lift`)."""
    keras.utils.set_random_seed(0)
    made = MADE(event_size=3, hidden=[8], activation="elu", context_size=2)
    made.build()
    perturb(made.trainable_variables, 0, scale=1.0)
    z = tf.constant(np.random.default_rng(1).normal(size=(samples, batch, 3)), tf.float32)
    context = tf.constant(np.random.default_rng(2).normal(size=(batch, 2)), tf.float32)

    @tf.function
    def gradients(z, context):
        with tf.GradientTape() as tape:
            tape.watch([z, context])
            loss = tf.reduce_sum(tf.square(made(z, context)))
        return tape.gradient(loss, [z, context, *made.trainable_variables])

    together = gradients(z, context)
    alone = [gradients(z[i], context) for i in range(samples)]
    np.testing.assert_allclose(together[0].numpy(), np.stack([a[0].numpy() for a in alone]), rtol=1e-5, atol=1e-6)
    for j in range(1, len(together)):
        np.testing.assert_allclose(together[j].numpy(), sum(a[j].numpy() for a in alone), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the flow
@pytest.mark.parametrize("update", ["gated", "affine"])
def test_flow_log_det_matches_the_autodiff_jacobian(update):
    model = tiny_iaf(update=update)
    perturb(model.trainable_variables, 3, scale=0.5)
    x = binary_batch(4)
    q = model.encode(x)
    z0 = tf.constant(np.random.default_rng(4).normal(size=(4, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = q.bijector.forward(z0)
    jacobian = tape.batch_jacobian(z, z0).numpy().astype(np.float64)      # [B, L, L]
    sign, log_abs_det = np.linalg.slogdet(jacobian)
    assert np.all(sign > 0)                          # triangular steps with a > 0; the two reversals cancel
    # Two steps with a reversal in between: the Jacobian is full, not triangular.
    assert np.abs(np.triu(jacobian, 1)).max() > 1e-3 and np.abs(np.tril(jacobian, -1)).max() > 1e-3
    assert np.abs(log_abs_det).max() > 0.1
    np.testing.assert_allclose(q.bijector.forward_log_det_jacobian(z0, event_ndims=1).numpy(), log_abs_det,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("update", ["gated", "affine"])
def test_log_q_is_the_change_of_variables_formula(update):
    """z and log q of a draw (one forward pass) against numpy from the same base draw z_0:
    log q(z) = log N(z_0; mu, sigma^2) - sum_t log|det J_t|; and log q of a z that q did not
    draw (the flow's sequential inverse) against the same numbers."""
    model = tiny_iaf(update=update)
    perturb(model.trainable_variables, 5, scale=0.5)
    x = binary_batch(5)
    q = model.encode(x)
    mu, sigma, context = (t.numpy().astype(np.float64) for t in model.posterior_family.split(model.posterior_params(x)))
    z0 = q.distribution.sample(7, seed=[8, 9]).numpy().astype(np.float64)        # the base draw
    z_numpy, log_det = numpy_flow(model, z0, context)
    log_q_numpy = _logpdf_normal(z0, mu, sigma) - log_det
    assert np.abs(log_det).max() > 0.1

    drawn, log_q = q.experimental_sample_and_log_prob(7, seed=[8, 9])
    np.testing.assert_allclose(drawn.numpy(), z_numpy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_q.numpy(), log_q_numpy, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(drawn.numpy(), q.sample(7, seed=[8, 9]).numpy())
    fresh = tf.constant(drawn.numpy())          # a new tensor: no bijector cache, the sequential inverse
    np.testing.assert_allclose(q.bijector.inverse(fresh).numpy(), z0, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(q.log_prob(fresh).numpy(), log_q_numpy, rtol=1e-4, atol=1e-3)


def test_identity_flow_gives_the_encoders_gaussian():
    """Output layers at zero (as built): the affine flow is the identity, so q is exactly
    N(mu, sigma^2); the gated flow scales by c = sigmoid(gate_bias) per step, so q is
    N(c^T mu, (c^T sigma)^2) (the reversal does not change a constant scaling)."""
    x = binary_batch(6)
    z = tf.constant(np.random.default_rng(7).normal(size=(9, 6, 3)), tf.float32)
    for update, bias in (("affine", 2.0), ("gated", 1.5)):
        model = tiny_iaf(update=update, gate_bias=bias)
        hidden = [v for v in model.trainable_variables if not any(v is w for w in output_layer_weights(model))]
        perturb(hidden, 8, scale=0.5)                       # everything but the zero output layers
        assert all(np.all(w.numpy() == 0) for w in output_layer_weights(model))
        q = model.encode(x)
        mu, sigma, _ = model.posterior_family.split(model.posterior_params(x))
        c = 1.0 if update == "affine" else (1 / (1 + math.exp(-bias))) ** 2
        gaussian = DiagonalNormal(c * mu, c * sigma)      # the encoder's family, with its sampler
        if update == "affine":
            np.testing.assert_array_equal(q.log_prob(z).numpy(), gaussian.log_prob(z).numpy())
            np.testing.assert_array_equal(q.sample(4, seed=[1, 1]).numpy(), gaussian.sample(4, seed=[1, 1]).numpy())
        else:
            np.testing.assert_allclose(q.log_prob(z).numpy(), gaussian.log_prob(z).numpy(), rtol=1e-5, atol=1e-5)
        # The Monte Carlo KL equals the closed form of that Gaussian (the mean of the same draws).
        draws, log_q = q.experimental_sample_and_log_prob(20000, seed=[2, 3])
        terms = model.elbo_terms(x, k=20000, seed=[2, 3])
        np.testing.assert_allclose(terms["kl"].numpy(), tf.reduce_mean(log_q - model.prior().log_prob(draws), 0),
                                   rtol=1e-5, atol=1e-5)
        closed = tfd.kl_divergence(gaussian, model.prior()).numpy()
        se = np.std((log_q - model.prior().log_prob(draws)).numpy(), 0) / math.sqrt(20000)
        assert np.all(np.abs(terms["kl"].numpy() - closed) < 5 * se + 1e-4)


def test_without_steps_it_is_the_vae():
    vae = VAE(data_shape=SHAPE, latent_dim=3, encoder={"type": "mlp", "hidden": [16]})
    perturb(vae.trainable_variables, 9)
    iaf = tiny_iaf(flow_steps=0, context_dim=0)
    iaf.set_weights(vae.get_weights())
    x = binary_batch(5)
    for key in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(iaf.elbo_terms(x, k=3, seed=4)[key], vae.elbo_terms(x, k=3, seed=4)[key], **TOL)
    np.testing.assert_allclose(importance_sampling(iaf, x, 50, seed=2, compiled=False)["log_px"],
                               importance_sampling(vae, x, 50, seed=2, compiled=False)["log_px"], **TOL)


# ------------------------------------------------------------------ estimators
def test_kl_is_monte_carlo_and_log_weights_are_consistent():
    model = tiny_iaf()
    perturb(model.trainable_variables, 10, scale=0.5)
    x = binary_batch(5)
    q = model.encode(x)
    assert model.analytic_kl(q) is None
    z = q.sample(64, seed=[3, 4])
    log_q = q.log_prob(tf.constant(z.numpy()))              # a fresh tensor: the sequential inverse
    log_p = _logpdf_normal(z.numpy().astype(np.float64), 0.0, 1.0)
    terms = model.elbo_terms(x, k=64, seed=[3, 4])
    np.testing.assert_allclose(terms["kl"], (log_q.numpy() - log_p).mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(terms["elbo"], terms["log_px_z"] - terms["kl"], rtol=1e-6)
    w = model.log_weights(x, 64, seed=[3, 4])
    np.testing.assert_allclose(w["log_qz"], log_q, rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(w["log_px_z"], model.decode(z).log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(w["log_w"], w["log_px_z"] + w["log_pz"] - w["log_qz"], rtol=1e-6)


def refuse_the_sequential_inverse(monkeypatch):
    """Makes the flow's sequential inverse (MAF._forward: L MADE passes per step) raise."""
    def refuse(*args, **kwargs):
        raise AssertionError("the sequential inverse of the flow ran")

    monkeypatch.setattr(tfb.MaskedAutoregressiveFlow, "_forward", refuse)


def test_log_q_of_the_draws_never_runs_the_sequential_inverse(monkeypatch):
    """log q of the draws comes from the forward pass: each step's MADE runs once per draw
    (the memo shares it between the value and the log-det) and the inverse never runs.
    (The fit test below runs training and the compiled estimator under the same guard.)"""
    model = tiny_iaf()
    perturb(model.trainable_variables, 11)
    x = binary_batch(5)
    calls = []
    original_call = MADE.call
    monkeypatch.setattr(MADE, "call", lambda self, z, context=None: calls.append(1) or original_call(self, z, context))
    refuse_the_sequential_inverse(monkeypatch)
    model.log_weights(x, 4, seed=1)
    assert len(calls) == model.flow_steps
    model.elbo_terms(x, k=2, seed=1)
    assert len(calls) == 2 * model.flow_steps
    assert np.all(np.isfinite(importance_sampling(model, x, 30, seed=1, compiled=False)["log_px"].numpy()))
    with pytest.raises(AssertionError, match="sequential inverse"):      # the guard itself works
        model.encode(x).log_prob(tf.zeros([5, 3]))


def test_moments_are_estimated_from_draws():
    """A flow has no closed-form mean: `moments` (used by reconstruct and the export's encode
    endpoint) gives the mean and standard deviation of 256 draws with the fixed seed (0, 0)."""
    model = tiny_iaf()
    perturb(model.trainable_variables, 12, scale=0.5)
    q = model.encode(binary_batch(4))
    with pytest.raises(NotImplementedError):
        q.mean()
    mean, stddev = moments(q)
    draws = q.sample(256, seed=[0, 0]).numpy().astype(np.float64)
    np.testing.assert_allclose(mean, draws.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stddev, draws.std(0), rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(model.reconstruct(binary_batch(4)), model.decode(mean).mean(), rtol=1e-6)
    # Within 5 standard errors of a 256-draw mean (float64 sums: float32 ones drift by ~1e-3 here).
    many = q.sample(20000, seed=[5, 6]).numpy().astype(np.float64)
    assert np.all(np.abs(mean.numpy() - many.mean(0)) < 5 * many.std(0) / math.sqrt(256))


# ------------------------------------------------------------------ config
def test_conditional_iaf_matches_the_generic_log_weights():
    """With a condition c, q(z|x, c) changes with c, and the single-pass log weights equal
    the generic ones (q.sample, then q.log_prob, the prior and the decoder) on the same draws."""
    model = tiny_iaf(condition_dim=2)
    perturb(model.trainable_variables, 14)
    x = binary_batch(4)
    c0, c1 = np.tile([[1.0, 0.0]], (4, 1)).astype("float32"), np.tile([[0.0, 1.0]], (4, 1)).astype("float32")
    ours = model.log_weights(x, 6, condition=c0, seed=2)
    q = model.encode(x, c0)
    z = q.sample(6, seed=tf.constant([2, 0]))
    generic = {"log_qz": q.log_prob(z), "log_px_z": model.decode(z, c0).log_prob(x)}
    generic["log_w"] = generic["log_px_z"] + model.prior().log_prob(z) - generic["log_qz"]
    for key in ("log_w", "log_qz", "log_px_z"):
        np.testing.assert_allclose(ours[key], generic[key], rtol=1e-5, atol=1e-4)
    assert np.abs(model.log_weights(x, 6, condition=c1, seed=2)["log_w"] - ours["log_w"]).max() > 1e-2


def test_config_round_trip_and_weights_file(tmp_path):
    model = tiny_iaf(update="affine", gate_bias=1.0, made_activation="elu")
    perturb(model.trainable_variables, 13)
    assert get_model_class("iaf") is IAF
    config = model.get_config()
    assert {k: config[k] for k in ("flow_steps", "made_hidden", "context_dim", "update", "gate_bias")} == \
        dict(flow_steps=2, made_hidden=[8, 8], context_dim=4, update="affine", gate_bias=1.0)
    rebuilt = IAF.from_config(config)
    assert rebuilt.get_config() == config
    model.save_weights(tmp_path / "m.weights.h5")
    rebuilt.load_weights(tmp_path / "m.weights.h5")
    x = binary_batch(3)
    np.testing.assert_array_equal(rebuilt.log_weights(x, 4, seed=1)["log_w"], model.log_weights(x, 4, seed=1)["log_w"])


@pytest.mark.parametrize("kwargs, message", [
    ({"flow_steps": -1}, "flow_steps"), ({"made_hidden": [8, 0]}, "made_hidden"), ({"context_dim": 1.5}, "context_dim"),
    ({"update": "sigmoid"}, "update"), ({"gate_bias": "big"}, "gate_bias"), ({"gate_bias": math.inf}, "gate_bias"),
    ({"made_activation": "nope"}, "activation"), ({"made_hidden": "320"}, "made_hidden"),
    ({"made_hidden": []}, "at least one hidden layer"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_iaf(**kwargs)
    assert issubclass(ConfigError, ValueError)


# ------------------------------------------------------------------ fit, evaluate
def test_fit_and_evaluate_never_run_the_sequential_inverse(monkeypatch):
    refuse_the_sequential_inverse(monkeypatch)
    keras.utils.set_random_seed(0)
    model = tiny_iaf(seed=3)
    data = binary_batch(64, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [w.numpy().copy() for w in output_layer_weights(model)]
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=3, verbose=0)
    for key in ("loss", "elbo", "log_px_z", "kl"):
        assert np.all(np.isfinite(history.history[key])), key
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["elbo"][-1] == pytest.approx(history.history["log_px_z"][-1] - history.history["kl"][-1],
                                                        abs=1e-3)
    assert all(np.abs(w.numpy() - b).max() > 1e-4 for w, b in zip(output_layer_weights(model), before))

    x = data[:6]
    estimate = importance_sampling(model, x, 200, seed=[7, 0])
    elbo = model.elbo_terms(x, k=500, seed=4)["elbo"].numpy()
    assert np.all(np.isfinite(estimate["log_px"].numpy()))
    assert estimate["log_px"].numpy().mean() > elbo.mean()          # L_200 above the ELBO
    np.testing.assert_allclose(estimate["elbo"], estimate["log_px_z"] - estimate["kl"], rtol=1e-5)
    np.testing.assert_allclose(estimate["elbo"], elbo, atol=0.5)       # other draws of the same bound
