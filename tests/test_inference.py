"""Importance-sampled log p(x) and `evaluate`, against the linear-Gaussian closed form."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae.models import VAE, LinearGaussian


@pytest.fixture(scope="module")
def trained_linear():
    """A linear-Gaussian VAE fitted to data from a known model: its encoder is a good but
    not exact proposal (diagonal q, full-covariance posterior)."""
    rng = np.random.default_rng(0)
    truth = LinearGaussian(data_dim=5, latent_dim=2)
    truth.set_generative(rng.normal(size=(5, 2)), rng.normal(size=5), [0.3, 0.5, 0.4, 0.6, 0.5])
    x = truth.exact_marginal().sample(3000, seed=[0, 1]).numpy()
    keras.utils.set_random_seed(0)
    model = LinearGaussian(data_dim=5, latent_dim=2)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    model.fit(tf.data.Dataset.from_tensor_slices(x).batch(100), epochs=15, verbose=0, shuffle=False)
    return model, x[:50]


def test_importance_sampling_converges_to_the_exact_log_likelihood(trained_linear):
    model, x = trained_linear
    exact = model.exact_log_likelihood(x).numpy()
    k = 5000
    out = tfvae.importance_sampling(model, x, k=k, seed=1)
    # Delta-method standard error of log mean(w): std(w) / (sqrt(k) mean(w)), from fresh weights.
    log_w = model.log_weights(x, k, seed=2)["log_w"].numpy()
    w = np.exp(log_w - log_w.max(0))
    se = w.std(0) / (np.sqrt(k) * w.mean(0))
    assert np.all(np.abs(out["log_px"].numpy() - exact) < 5 * se + 1e-3)
    assert np.abs(out["log_px"].numpy() - exact).mean() < 0.01
    # The ELBO of the encoder is below log p(x); the IWAE bound closes most of that gap.
    gap_elbo = exact - out["elbo"].numpy()
    gap_iwae = exact - out["log_px"].numpy()
    assert gap_elbo.mean() > 0 and np.all(gap_elbo > -0.02)   # per example, up to Monte Carlo noise
    assert gap_iwae.mean() < 0.1 * gap_elbo.mean()


def test_the_iwae_bound_grows_with_k(trained_linear):
    # Each bound averaged over 50 examples and 10 seeds: the encoder is a good proposal here,
    # so E[L_10] - E[L_1] is small, and one seed's Monte Carlo error could hide it.
    model, x = trained_linear
    means = [np.mean([tfvae.log_likelihood(model, x, k=k, seed=s).numpy().mean() for s in range(10)])
             for k in (1, 10, 1000)]
    assert means[0] < means[1] < means[2] <= model.exact_log_likelihood(x).numpy().mean() + 0.01


def test_chunked_accumulation_is_exact_with_the_true_posterior(trained_linear):
    # With the exact posterior as proposal every weight equals p(x): any k and any chunking
    # (including a last, shorter chunk) must return log p(x) to float precision.
    model, x = trained_linear
    exact = model.exact_log_likelihood(x).numpy()
    posterior = model.exact_posterior(x)
    mc_model = LinearGaussian(data_dim=5, latent_dim=2, kl="monte_carlo")
    mc_model.set_weights(model.get_weights())
    for k, per_chunk in [(1, 1000), (7, 150), (100, 50 * 33)]:   # chunks of 7; 3,3,1; 33,33,33,1
        out = tfvae.importance_sampling(mc_model, x, k=k, proposal=posterior, samples_per_chunk=per_chunk)
        np.testing.assert_allclose(out["log_px"].numpy(), exact, atol=2e-3)
        np.testing.assert_allclose(out["elbo"].numpy(), exact, atol=2e-3)


def test_evaluate_reports_means_standard_errors_and_writes_json(tmp_path):
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    x = (np.random.default_rng(0).random((30, 4, 4, 1)) > 0.5).astype("float32")
    path = tmp_path / "eval.json"
    report = tfvae.evaluate(model, x, k=50, batch_size=8, verbose=False, out_path=str(path),
                            return_per_example=True)
    per = report.pop("per_example")
    assert report == pytest.approx(json.loads(path.read_text()))
    assert report["examples"] == 30 and per["log_px"].shape == (30,)
    assert report["log_px"] == pytest.approx(per["log_px"].mean())
    assert report["log_px_se"] == pytest.approx(per["log_px"].std(ddof=1) / np.sqrt(30))
    assert report["elbo"] == pytest.approx(report["log_px_z"] - report["kl"], rel=1e-5)
    assert report["bits_per_dim"] == pytest.approx(-report["log_px"] / (16 * np.log(2)))
    # The same data as a tf.data pipeline, batched the same way, gives the same numbers.
    again = tfvae.evaluate(model, tf.data.Dataset.from_tensor_slices(x).batch(8), k=50, verbose=False)
    assert again["log_px"] == pytest.approx(report["log_px"], rel=1e-6)


def test_evaluate_with_per_example_optimized_proposals(trained_linear):
    """proposal="optimized": each batch's diagonal q* from optimize_posterior (seeds [1, b]),
    then k draws from it (seeds [0, b]), the same numbers as those two calls by hand; its
    ELBO beats the encoder's, and log p(x) stays within Monte Carlo error of the exact value."""
    from tfvae.inference import optimize_posterior

    model, x = trained_linear
    x = x[:20]
    report = tfvae.evaluate(model, x, k=500, batch_size=10, verbose=False, proposal="optimized",
                            return_per_example=True)
    assert report["proposal"] == "optimized"
    by_hand = []
    for b in range(2):
        fit = optimize_posterior(model, x[10 * b:10 * (b + 1)], "diag", seed=[1, b])
        by_hand.append(tfvae.importance_sampling(model, x[10 * b:10 * (b + 1)], 500, seed=[0, b],
                                                 proposal=fit.distribution)["log_px"].numpy())
    np.testing.assert_allclose(report["per_example"]["log_px"], np.concatenate(by_hand), rtol=1e-5, atol=1e-4)
    encoder = tfvae.evaluate(model, x, k=500, batch_size=10, verbose=False)
    assert encoder["proposal"] == "encoder" and report["elbo"] > encoder["elbo"]
    exact = model.exact_log_likelihood(x).numpy()
    assert np.all(report["per_example"]["log_px"] < exact + 0.05)
    assert abs(report["log_px"] - exact.mean()) < 0.05
    with pytest.raises(ValueError, match="proposal must be one of"):
        tfvae.evaluate(model, x, k=2, verbose=False, proposal="exact")


def test_the_progress_bar_ends_on_the_reported_log_px(capsys):
    """The bar shows the mean over the examples seen so far, so its last figure is the report's
    (Keras' own averaging of per-batch means showed another number)."""
    import re
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    x = (np.random.default_rng(1).random((30, 4, 4, 1)) > 0.5).astype("float32")
    report = tfvae.evaluate(model, x, k=20, batch_size=7, verbose=True)     # a last batch of 2
    shown = re.findall(r"log_px: (-?[0-9.]+)", capsys.readouterr().out)
    assert len(shown) >= 2 and float(shown[-1]) == pytest.approx(report["log_px"], abs=1e-4)


def test_evaluate_rejects_empty_data_and_bad_k():
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    with pytest.raises(ValueError, match="at least one example"):
        tfvae.evaluate(model, np.zeros((0, 4, 4, 1), "float32"), verbose=False)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        tfvae.evaluate(model, np.zeros((2, 4, 4, 1), "float32"), k=0, verbose=False)
