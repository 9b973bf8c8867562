"""The semi-amortized VAE against what it must reduce to (the VAE at K = 0), what the
refinement must do (raise the ELBO of a fixed model) and what its gradients must be (central
finite differences of the K-step objective; the partial gradient of the ELBO at a fixed
lambda_K), plus the contract: fit, log p(x), config round trip (export: tests/test_contract.py)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import tfvae.models.sa_vae  # noqa: F401  (registers "sa_vae")
from tfvae.config import ConfigError
from tfvae.inference import importance_sampling
from tfvae.models import VAE
from tfvae.parts.refine import refine_posterior
from tfvae.models.sa_vae import SAVAE

fold_in = tf.random.experimental.stateless_fold_in
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(data_shape=(6, 6, 1), latent_dim=3, encoder={"type": "mlp", "hidden": [16]})


def binary_batch(n=16, seed=0):
    return (np.random.default_rng(seed).random((n, 6, 6, 1)) > 0.5).astype("float32")


def perturb(model, seed, scale=0.3):
    """Moves every weight by N(0, scale^2): a model far from its initialisation, whose
    encoder is a poor posterior (the refinement has work to do)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def variable_index(model, variable):
    return next(i for i, v in enumerate(model.trainable_variables) if v is variable)


# ----------------------------------------------------------------- K = 0 is the VAE
@pytest.mark.parametrize("generative_gradient", ["total", "partial"])
def test_zero_refinement_steps_is_exactly_the_vae(generative_gradient):
    x = binary_batch()
    vae = VAE(seed=4, **TINY)
    perturb(vae, 0)
    sa = SAVAE(refine_steps=0, generative_gradient=generative_gradient, seed=4, **TINY)
    sa.set_weights(vae.get_weights())
    # Same seed stream, one draw each: the same z, the same loss, the same gradients.
    for _ in range(2):
        with tf.GradientTape() as tape:
            vae_loss, vae_terms = vae.objective_and_terms(x, training=True)
        vae_grads = tape.gradient(vae_loss, vae.trainable_variables)
        sa_result, sa_grads = sa.gradients(x, training=True)
        sa_loss, sa_terms = sa_result.value, sa_result.terms
        assert float(sa_loss) == float(vae_loss)
        for name in ("elbo", "log_px_z", "kl"):
            np.testing.assert_array_equal(sa_terms[name], vae_terms[name])
        np.testing.assert_array_equal(sa_terms["refined_elbo"], vae_terms["elbo"])
        for a, b in zip(sa_grads, vae_grads):
            np.testing.assert_array_equal(a, b)
    # And through Keras fit: identical weights after a few optimizer steps.
    data = tf.data.Dataset.from_tensor_slices(binary_batch(48, seed=1)).batch(16)
    for model in (vae, sa):
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(data, epochs=2, verbose=0)
    for a, b in zip(sa.get_weights(), vae.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The check has teeth: one refinement step changes the loss.
    one = SAVAE(refine_steps=1, refine_learning_rate=0.5, seed=4, **TINY)
    one.set_weights(vae.get_weights())
    zero = SAVAE(refine_steps=0, seed=4, **TINY)
    zero.set_weights(vae.get_weights())
    assert abs(float(one.objective(x)) - float(zero.objective(x))) > 0.1


# ----------------------------------------------------------------- the refinement
def test_refinement_raises_the_elbo_of_a_fixed_model():
    keras.utils.set_random_seed(1)
    model = SAVAE(refine_steps=10, refine_learning_rate=0.2, **TINY)
    perturb(model, 1, scale=0.5)
    x = binary_batch(32, seed=2)
    refined = model.refine(x, seed=5)
    assert refined.elbos.shape == (11, 32) and refined.params.shape == (32, 6)
    # Common random numbers: the same 4000 standard-normal draws for both posteriors, so
    # the difference has little Monte Carlo error (its spread is printed on failure).
    encoder = model.elbo_terms(x, 4000, seed=9, posterior=model.encode(x))["elbo"].numpy()
    after = model.elbo_terms(x, 4000, seed=9, posterior=refined.distribution)["elbo"].numpy()
    gain = after - encoder
    assert gain.mean() > 5.0 and gain.min() > 0.0, gain
    # The single-draw estimates along the way rise too (noisy, so on average over the batch).
    per_step = refined.elbos.numpy().mean(axis=1)
    assert per_step[-1] > per_step[0] + 5.0
    # K = 0 returns the encoder's parameters.
    np.testing.assert_array_equal(model.refine(x, steps=0, seed=5).params, model.posterior_params(x))



def test_evaluate_samples_from_the_refined_posterior():
    """evaluate's proposal for an SA-VAE is its refined q: the same numbers as importance
    sampling from model.refine's q with evaluate's seeds, and the refined ELBO, well above
    the encoder's. A model without a refinement of its own refuses proposal="refined"."""
    from tfvae.inference.evaluate import evaluate
    keras.utils.set_random_seed(1)
    model = SAVAE(refine_steps=10, refine_learning_rate=0.2, **TINY)
    perturb(model, 1, scale=0.5)
    x = binary_batch(32, seed=2)
    refined = evaluate(model, x, k=200, batch_size=32, verbose=False)
    encoder = evaluate(model, x, k=200, batch_size=32, verbose=False, proposal="encoder")
    assert (refined["proposal"], encoder["proposal"]) == ("refined", "encoder")
    q = model.posterior_family.distribution(model.refine(x, seed=[1, 0]).params)
    direct = importance_sampling(model, x, 200, seed=[0, 0], proposal=q)
    assert refined["log_px"] == pytest.approx(float(np.mean(direct["log_px"])), abs=1e-3)
    assert refined["elbo"] == pytest.approx(float(np.mean(direct["elbo"])), abs=1e-3)
    plain = importance_sampling(model, x, 200, seed=[0, 0])
    assert encoder["log_px"] == pytest.approx(float(np.mean(plain["log_px"])), abs=1e-4)
    assert refined["elbo"] > encoder["elbo"] + 5.0
    vae = VAE(**TINY)
    with pytest.raises(ValueError, match="no refinement of its posterior"):
        evaluate(vae, x, k=2, verbose=False, proposal="refined")


# ----------------------------------------------------------------- gradients
def manual_loss(model, x, seed, differentiable=True):
    """The K-step objective rebuilt from its parts: lambda_0 = enc(x), K steps of
    refine_posterior drawn from fold_in(seed, 1), minus the one-draw ELBO at lambda_K drawn
    from fold_in(seed, 2). differentiable=False stops the steps' gradients (first order)."""
    params = model.posterior_params(x)
    refined = refine_posterior(model, x, steps=model.refine_steps, learning_rate=model.refine_learning_rate,
                               max_grad_norm=model.max_grad_norm, seed=fold_in(seed, 1),
                               differentiable=differentiable, params=params)
    final = model.elbo_terms(x, 1, seed=fold_in(seed, 2), posterior=model.posterior_family.distribution(refined.params))
    return -tf.reduce_mean(final["log_px_z"] - final["kl"]), refined.params


def central_difference(f, variable, direction, eps=2e-3):
    original = variable.numpy()
    variable.assign(original + eps * direction)
    plus = float(f())
    variable.assign(original - eps * direction)
    minus = float(f())
    variable.assign(original)
    return (plus - minus) / (2 * eps)


@pytest.fixture(scope="module")
def fixed():
    """A perturbed model with K = 3 (clipping active), a batch and a seed. The initial
    weights are seeded: the finite differences need a smooth neighbourhood, and a seeded
    model does not land an example's gradient norm exactly at the clipping threshold
    (where the clipped step has a kink)."""
    keras.utils.set_random_seed(0)
    model = SAVAE(refine_steps=3, refine_learning_rate=0.2, max_grad_norm=5.0, **TINY)
    perturb(model, 1)
    return model, binary_batch(), tf.constant([3, 4])


def test_the_loss_is_the_elbo_after_k_steps(fixed):
    model, x, seed = fixed
    loss, terms = model.objective_and_terms(x, seed=seed)
    want, _ = manual_loss(model, x, seed)
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    np.testing.assert_allclose(-terms["refined_elbo"].numpy().mean(), float(loss), rtol=1e-6)
    # The reported elbo/log_px_z/kl are the encoder's ordinary ELBO terms (the VAE's draw).
    plain = model.elbo_terms(x, 1, seed=seed)
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(terms[name], plain[name], rtol=1e-6)


# Tolerance of a float32 central difference with eps = 2e-3 on a loss of ~30 nats: rounding
# gives ~30 * 6e-8 / 4e-3 ~ 5e-4 absolute, truncation O(eps^2) ~ 1e-5 relative; measured
# agreement is ~1e-3 relative. The first-order gradient misses by far more than that.
def assert_matches(analytic, numeric):
    assert abs(analytic - numeric) <= 0.01 * abs(numeric) + 2e-3, (analytic, numeric)


def test_the_encoder_gradient_goes_through_the_refinement(fixed):
    model, x, seed = fixed
    kernel = model.encoder_net.out.kernel
    direction = tf.random.stateless_normal(kernel.shape, [7, 0])
    _, gradients = model.gradients(x, seed=seed, training=False)
    analytic = float(tf.reduce_sum(gradients[variable_index(model, kernel)] * direction))
    numeric = central_difference(lambda: model.objective_and_terms(x, seed=seed)[0], kernel, direction)
    assert_matches(analytic, numeric)
    # Without backpropagation through the steps (the direct path lambda_0 -> lambda_K only)
    # the encoder's gradient is far off: the check above depends on the refinement path.
    with tf.GradientTape() as tape:
        first_order, _ = manual_loss(model, x, seed, differentiable=False)
    shallow = float(tf.reduce_sum(tape.gradient(first_order, kernel) * direction))
    assert abs(shallow - numeric) > 10 * (0.01 * abs(numeric) + 2e-3), (shallow, numeric)


def test_generative_gradients_total_and_partial(fixed):
    model, x, seed = fixed
    kernel = model.decoder_net.trainable_variables[0]
    direction = tf.random.stateless_normal(kernel.shape, [8, 0])
    index = variable_index(model, kernel)
    # "total": the derivative of the K-step objective, lambda_K moving with theta.
    _, gradients = model.gradients(x, seed=seed, training=False)
    total = float(tf.reduce_sum(gradients[index] * direction))
    assert_matches(total, central_difference(lambda: model.objective_and_terms(x, seed=seed)[0], kernel, direction))

    # "partial": the derivative of the ELBO at lambda_K held fixed (a numpy constant here).
    partial_model = SAVAE.from_config({**model.get_config(), "generative_gradient": "partial"})
    partial_model.set_weights(model.get_weights())
    result, partial_gradients = partial_model.gradients(x, seed=seed, training=False)
    loss, partial_terms = result.value, result.terms
    assert "generative_loss" not in partial_terms and result.generative is not None
    _, refined = manual_loss(model, x, seed)
    fixed_q = model.posterior_family.distribution(tf.constant(refined.numpy()))

    def at_fixed_lambda():
        final = partial_model.elbo_terms(x, 1, seed=fold_in(seed, 2), posterior=fixed_q)
        return -tf.reduce_mean(final["log_px_z"] - final["kl"])

    assert float(at_fixed_lambda()) == pytest.approx(float(loss), rel=1e-6)
    partial = float(tf.reduce_sum(partial_gradients[variable_index(partial_model, partial_model.decoder_net.
                                                                   trainable_variables[0])] * direction))
    assert_matches(partial, central_difference(at_fixed_lambda, partial_model.decoder_net.trainable_variables[0],
                                               direction))
    assert abs(partial - total) > 0.05 * abs(total)         # the two modes really differ
    # The encoder's gradient is the same in both modes.
    encoder = variable_index(model, model.encoder_net.out.kernel)
    np.testing.assert_allclose(partial_gradients[encoder], gradients[encoder], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- the contract
def test_fit_log_likelihood_and_config():
    keras.utils.set_random_seed(0)
    x = binary_batch(64, seed=3)
    model = SAVAE(refine_steps=2, refine_learning_rate=0.3, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=3, verbose=0).history
    assert set(history) == {"loss", "elbo", "log_px_z", "kl", "refined_elbo"}
    assert all(np.isfinite(v).all() for v in history.values())
    np.testing.assert_allclose(history["loss"], -np.array(history["refined_elbo"]), rtol=1e-5)
    assert history["loss"][-1] < history["loss"][0]

    # log p(x) by importance sampling with the encoder's proposal: above the ELBO, and
    # consistent between two independent sample sets on average (a briefly trained encoder is
    # a heavy-tailed proposal for some examples, so not example by example).
    estimate = importance_sampling(model, x[:8], 20000, seed=1)
    again = tfvae.log_likelihood(model, x[:8], 20000, seed=2).numpy()
    assert np.all(estimate["log_px"].numpy() > estimate["elbo"].numpy())
    assert abs(again.mean() - estimate["log_px"].numpy().mean()) < 0.1

    # get_config -> from_config rebuilds the same model.
    config = model.get_config()
    assert (config["refine_steps"], config["refine_learning_rate"], config["max_grad_norm"]) == (2, 0.3, 5.0)
    clone = tfvae.get_model_class("sa_vae").from_config(config)
    clone.set_weights(model.get_weights())
    assert float(clone.objective(x, seed=[1, 2])) == float(model.objective_and_terms(x, seed=[1, 2])[0])


def test_conditional_refinement_trains():
    model = SAVAE(refine_steps=2, refine_learning_rate=0.3, condition_dim=2, **TINY)
    x, c = binary_batch(32, seed=4), np.eye(2, dtype="float32")[np.arange(32) % 2]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, c)).batch(16), epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    with pytest.raises(ValueError, match="conditional"):
        model.objective(x)


@pytest.mark.parametrize("kwargs, message", [
    ({"refine_steps": -1}, "'refine_steps' must be an integer \\(>= 0\\)"),
    ({"refine_steps": 1.5}, "'refine_steps' must be an integer"),
    ({"refine_learning_rate": 0}, "'refine_learning_rate' must be a number \\(> 0\\)"),
    ({"max_grad_norm": -1.0}, "'max_grad_norm' must be"),
    ({"refine_samples": 0}, "'refine_samples' must be"),
    ({"generative_gradient": "both"}, "'generative_gradient' must be one of 'total', 'partial'"),
    ({"refine_stpes": 3}, "refine_stpes"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises((ConfigError, TypeError), match=message):
        SAVAE(**kwargs, **TINY)


def test_preset_loads_and_builds():
    preset = tfvae.load_preset(os.path.join(ROOT, "zoo_configs", "sa_vae_bmnist.yaml"))
    model = tfvae.get_model_class(preset.model["class"]).from_config(
        {k: v for k, v in preset.model.items() if k != "class"})
    assert isinstance(model, SAVAE)
    assert (model.refine_steps, model.refine_learning_rate, model.max_grad_norm) == (5, 0.01, 5.0)
    t = preset.training
    assert (t.epochs, t.batch_size, t.learning_rate) == (10, 100, 1e-3)
    assert preset.paper.test_nll is None and "Kim" in preset.paper.source
    paper = preset.with_protocol("paper").training
    assert (paper.epochs, paper.batch_size, paper.kl_warmup_epochs) == (100, 50, 10)
