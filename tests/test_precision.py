"""precision="mixed_bfloat16": bfloat16 network bodies, float32 distributions and bounds."""
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae.models import VAE

SPEC = dict(data_shape=(784,), latent_dim=8, encoder={"type": "mlp", "hidden": [64], "activation": "relu"})


def x_batch(n=16, seed=0):
    return (np.random.default_rng(seed).random((n, 784)) > 0.5).astype("float32")


def pair():
    """A float32 model and a mixed_bfloat16 one with the same weights."""
    full = VAE(**SPEC)
    mixed = VAE(**SPEC, precision="mixed_bfloat16")
    mixed.set_weights(full.get_weights())
    return full, mixed


def test_bodies_compute_in_bfloat16_and_keep_float32_weights():
    _, mixed = pair()
    layers = [layer for net in (mixed.encoder_net, mixed.decoder_net) for layer in net._flatten_layers()]
    assert layers and all(layer.compute_dtype == "bfloat16" for layer in layers)
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert mixed.encoder_net(tf.constant(x_batch())).dtype == tf.bfloat16


def test_every_density_and_bound_is_float32_and_close_to_the_float32_model():
    full, mixed = pair()
    x = x_batch()
    a, b = full.elbo_terms(x, k=4, seed=3), mixed.elbo_terms(x, k=4, seed=3)
    for key in ("log_px_z", "kl", "elbo"):
        assert b[key].dtype == tf.float32
    # bfloat16 keeps 8 significant bits: logits off by ~2^-9 relative. Over 784 pixels the
    # log-likelihood (~ -540 nats at these weights) moves by well under 1%, not by nothing.
    difference = np.abs(a["elbo"].numpy() - b["elbo"].numpy())
    assert difference.max() < 0.01 * np.abs(a["elbo"].numpy()).min()
    assert difference.max() > 0
    log_w = mixed.log_weights(x, 5, seed=1)
    assert all(log_w[key].dtype == tf.float32 for key in ("log_w", "log_px_z", "log_pz", "log_qz"))
    assert tfvae.log_likelihood(mixed, x, k=50).dtype == tf.float32


def test_mixed_precision_trains_and_round_trips_its_config():
    model = VAE(**SPEC, precision="mixed_bfloat16")
    model.compile(optimizer="adam")
    history = model.fit(x_batch(64), batch_size=16, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    clone = VAE.from_config(model.get_config())
    assert clone.precision == "mixed_bfloat16" and clone.decoder_net.compute_dtype == "bfloat16"


def test_mixed_precision_exports_with_float32_outputs(tmp_path):
    _, mixed = pair()
    x = x_batch(4)
    loaded = tf.saved_model.load(tfvae.export(mixed, str(tmp_path / "export"), k=20, verbose=False))
    out = loaded.signatures["elbo"](x=tf.constant(x))
    assert all(v.dtype == tf.float32 for v in out.values())
    np.testing.assert_allclose(out["elbo"].numpy(), mixed.elbo_terms(x, seed=[0, 0])["elbo"].numpy(), rtol=1e-5)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        VAE(**SPEC, precision="float16")
