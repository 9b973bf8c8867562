"""JointVAE (tfvae.models.joint_vae): each part alone reduces to its single-latent variant (the
VAE, gumbel_vae), the capacity penalties against numpy closed forms, the capacity schedule
against its formula, training, config round trip and export."""
import contextlib
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
import variant_helpers
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.models.gumbel_vae import GumbelVAE
from tfvae.models.joint_vae import JointVAE
from tfvae.parts.categorical import ConcatenatedLatents, OneHotProduct, RelaxedOneHotProduct, capacity_schedule

SHAPE = (16,)
NET = {"type": "mlp", "hidden": [8]}
TINY = dict(data_shape=SHAPE, continuous_dim=2, categories=[3, 4], encoder=NET)
binary_data = functools.partial(variant_helpers.binary_data, shape=SHAPE)
X = binary_data(10, seed=1)


perturbed = variant_helpers.perturb     # weights away from the initialisation


def numpy_gaussian_kl(loc, raw_scale):
    """KL(N(loc, s^2) || N(0, 1)) summed over dimensions, s = softplus(raw) + 1e-4, float64."""
    loc, raw_scale = np.asarray(loc, np.float64), np.asarray(raw_scale, np.float64)
    s = np.log1p(np.exp(raw_scale)) + 1e-4
    return (0.5 * (s ** 2 + loc ** 2 - 1) - np.log(s)).sum(-1)


def numpy_categorical_kl(logits, categories):
    logits, total, start = np.asarray(logits, np.float64), 0.0, 0
    for k in categories:
        l = logits[..., start:start + k]
        pi = np.exp(l - l.max(-1, keepdims=True))
        pi /= pi.sum(-1, keepdims=True)
        total, start = total + (pi * np.log(pi * k)).sum(-1), start + k
    return total


def test_continuous_part_alone_is_the_vae():
    vae = perturbed(VAE(data_shape=SHAPE, latent_dim=3, encoder=NET, seed=3))
    joint = JointVAE(data_shape=SHAPE, continuous_dim=3, categories=[], encoder=NET, gamma_c=1.0, capacity_c=0.0,
                     seed=3)
    for net in ("encoder_net", "decoder_net"):      # the joint model also has a temperature weight
        getattr(joint, net).set_weights(getattr(vae, net).get_weights())
    terms = vae.elbo_terms(X, 1, seed=[4, 5])
    loss, got = joint.objective_and_terms(X, seed=[4, 5])
    np.testing.assert_allclose(loss, -np.mean(terms["log_px_z"].numpy() - terms["kl"].numpy()), rtol=1e-5)
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(got[name], terms[name], rtol=1e-6)
    np.testing.assert_array_equal(got["kl_discrete"], 0.0)
    # the training step: the same loss and gradients, each model on its own seed stream
    grads = []
    for model in (vae, joint):
        with tf.GradientTape() as tape:
            loss = model.objective(X, training=True)
        grads.append([g.numpy() for g in tape.gradient(loss, model.encoder_net.trainable_variables)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_discrete_part_alone_is_gumbel_vae():
    gumbel = perturbed(GumbelVAE(data_shape=SHAPE, num_latents=2, categories=3, encoder=NET, tau0=0.9, tau_min=0.4,
                                 anneal_rate=1e-3, seed=4))
    gumbel.temperature.assign(0.7)
    joint = variant_helpers.twin(JointVAE, gumbel, dict(data_shape=SHAPE, continuous_dim=0, categories=[3, 3],
                                                        encoder=NET, tau0=0.9, tau_min=0.4, anneal_rate=1e-3),
                                 gamma_d=1.0, capacity_d=0.0)
    assert joint.current_temperature().numpy() == np.float32(0.7)
    for model in (gumbel, joint):
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    want_loss, want = gumbel.objective_and_terms(X)          # each on its own seed stream: the same draws
    loss, got = joint.objective_and_terms(X)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    for name in ("elbo", "log_px_z", "kl"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    np.testing.assert_allclose(got["kl_discrete"], want["kl"], rtol=1e-6)
    for a, b in zip(joint.log_weights(X, 4, seed=[1, 2]).values(), gumbel.log_weights(X, 4, seed=[1, 2]).values()):
        if isinstance(a, tf.Tensor):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    # a training step runs both at the scheduled temperature of step 0
    joint.train_step(tf.constant(X))
    gumbel.train_step(tf.constant(X))
    np.testing.assert_allclose(joint.temperature.numpy(), 0.9)
    for a, b in zip(joint.trainable_variables, gumbel.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_loss_is_reconstruction_plus_capacity_penalties():
    model = perturbed(JointVAE(**TINY, gamma_c=3.0, gamma_d=7.0, capacity_c=0.5, capacity_d=50.0))
    params = model.posterior_params(X).numpy()
    kl_c = numpy_gaussian_kl(params[:, :2], params[:, 2:4])
    kl_d = numpy_categorical_kl(params[:, 4:], (3, 4))
    loss, terms = model.objective_and_terms(X, seed=[2, 3])
    np.testing.assert_allclose(terms["kl_continuous"], kl_c, rtol=1e-5)
    np.testing.assert_allclose(terms["kl_discrete"], kl_d, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], terms["log_px_z"].numpy() - kl_c - kl_d, rtol=1e-5, atol=1e-5)
    # No optimizer: the final capacities; C_d = 50 is capped at log 3 + log 4.
    c_d = np.log(3) + np.log(4)
    want = -terms["log_px_z"].numpy().mean() + 3.0 * abs(kl_c.mean() - 0.5) + 7.0 * abs(kl_d.mean() - c_d)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(model.elbo_terms(X, seed=[2, 3])["kl"], kl_c + kl_d, rtol=1e-5)


def test_capacity_schedule_follows_the_formula():
    steps = np.array([0, 3, 10, 25, 1000])
    np.testing.assert_allclose(capacity_schedule(steps, 5.0, 25), 5.0 * np.minimum(1, steps / 25), rtol=1e-6)
    model = JointVAE(**TINY, capacity_c=4.0, capacity_d=4.0, capacity_steps=20)
    np.testing.assert_allclose(model.objective_part.current_capacities(model), [4.0, np.log(12)], rtol=1e-6)   # outside fit: final
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    np.testing.assert_allclose(model.objective_part.current_capacities(model), [0.0, 0.0])
    model.optimizer.iterations.assign(7)
    np.testing.assert_allclose(model.objective_part.current_capacities(model), [4.0 * 7 / 20, 4.0 * 7 / 20], rtol=1e-6)
    model.optimizer.iterations.assign(15)                   # C_d: 3 nats > log 3 + log 4, capped
    np.testing.assert_allclose(model.objective_part.current_capacities(model), [3.0, np.log(12)], rtol=1e-6)


@pytest.mark.parametrize("relaxed", [False, True])
def test_concatenated_latents_sum_the_parts(relaxed):
    model = perturbed(JointVAE(**TINY))
    with model.relaxed_latents() if relaxed else contextlib.nullcontext():
        q, prior = model.encode(X), model.prior()
    assert isinstance(q, ConcatenatedLatents) and q.batch_shape == (10,) and q.event_shape == (9,)
    gaussian, categorical = q.parts
    assert isinstance(categorical, RelaxedOneHotProduct if relaxed else OneHotProduct)
    z, log_q = q.experimental_sample_and_log_prob(3, seed=[5, 6])
    np.testing.assert_allclose(log_q, gaussian.log_prob(z[..., :2]) + categorical.log_prob(z[..., 2:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.log_prob(z), log_q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z[..., 2:5].numpy().sum(-1), 1.0, rtol=1e-5)
    want_prior = -0.5 * (z[..., :2].numpy() ** 2).sum(-1) - np.log(2 * np.pi) - np.log(12)   # N(0, I) x uniforms
    if not relaxed:
        np.testing.assert_allclose(prior.log_prob(z), want_prior, rtol=1e-5)
    assert np.all(np.isfinite(prior.log_prob(z)))
    # the two parts draw with independent seeds: not the draws of either part alone
    assert not np.allclose(z[..., :2], gaussian.sample(3, seed=[5, 6]))


def test_fit_decreases_the_loss():
    keras.utils.set_random_seed(0)
    model = JointVAE(**TINY, gamma_c=2.0, gamma_d=2.0, capacity_c=1.0, capacity_d=2.0, capacity_steps=40)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = variant_helpers.structured_data(64, SHAPE, seed=2)
    history = model.fit(data, batch_size=16, epochs=6, verbose=0, shuffle=False).history
    for name in ("loss", "elbo", "kl_continuous", "kl_discrete"):
        assert np.all(np.isfinite(history[name])), name
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    np.testing.assert_allclose(model.objective_part.current_capacities(model), [24 / 40, 2 * 24 / 40], rtol=1e-6)     # after 24 steps


def test_config_round_trip_and_validation():
    model = JointVAE(**TINY, gamma_c=2.0, capacity_d=1.5, capacity_steps=7, tau0=1.0, tau_min=0.5, anneal_rate=1e-3)
    config = model.get_config()
    assert (config["continuous_dim"], config["categories"], config["latent_dim"]) == (2, [3, 4], 9)
    assert (config["gamma_c"], config["capacity_d"], config["capacity_steps"], config["tau_min"]) == (2.0, 1.5, 7, 0.5)
    rebuilt = tfvae.get_model_class("joint_vae").from_config(config)
    assert isinstance(rebuilt, JointVAE) and rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.objective_and_terms(X, seed=[1, 1])[0],
                                  model.objective_and_terms(X, seed=[1, 1])[0])
    for bad in ({"continuous_dim": 0, "categories": []}, {"categories": [1, 3]}, {"latent_dim": 4},
                {"gamma_d": -1.0}, {"capacity_steps": 0}, {"tau_min": 2.0}):
        with pytest.raises(ConfigError):
            JointVAE(**{**TINY, **bad})


def test_export_matches_the_python_model(tmp_path):
    model = perturbed(JointVAE(**TINY), seed=3)
    loaded = variant_helpers.export_and_check(model, tmp_path / "export", X, k=20)
    # exact posterior means: the Gaussian means, then the class probabilities
    params = model.posterior_params(X).numpy()
    probs = [np.exp(l) / np.exp(l).sum(-1, keepdims=True) for l in (params[:, 4:7], params[:, 7:])]
    np.testing.assert_allclose(loaded.encode(X)["mean"].numpy(), np.concatenate([params[:, :2], *probs], -1),
                               rtol=1e-5, atol=1e-6)
