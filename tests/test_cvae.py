"""The conditional VAE (`vae` with condition_dim > 0; the `cvae_mnist` preset).

The main checks use a labelled toy set whose conditional law is known in closed form: class
j in {0, 1, 2} lights the rows 2j and 2j+1 of a 6x6 image with probability 0.9 and every
other pixel with probability 0.1, independently. So log p(x|y) is a sum of Bernoulli
log-probabilities, the best any model can do on average (Gibbs' inequality), and the
per-class pixel means are known. The labelled `shapes` set (no files) checks the data
pipeline's (x, one-hot) pairs with sliced splits; the shared MNIST test files, when present,
check the preset's offline recipe.
"""
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import data
from tfvae.export import export
from tfvae.inference import importance_sampling
from tfvae.models import VAE

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFVAE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CLASSES = 3
ON, OFF = 0.9, 0.1


def pixel_probabilities():
    """[3, 6, 6, 1]: the Bernoulli mean of every pixel given each class."""
    p = np.full((CLASSES, 6, 6, 1), OFF, np.float32)
    for j in range(CLASSES):
        p[j, 2 * j:2 * j + 2] = ON
    return p


def toy_set(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = (rng.random((n, 6, 6, 1)) < pixel_probabilities()[y]).astype(np.float32)
    return x, y, np.eye(CLASSES, dtype=np.float32)[y]


def exact_log_likelihood(x, y):
    """log p(x|y) of the toy law: independent Bernoulli pixels."""
    p = pixel_probabilities()[y]
    return (x * np.log(p) + (1 - x) * np.log1p(-p)).reshape(len(x), -1).sum(1)


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    x, _, c = toy_set(4000, seed=0)
    model = VAE(data_shape=(6, 6, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [32]}, condition_dim=CLASSES)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data_pairs = tf.data.Dataset.from_tensor_slices((x, c)).shuffle(4000, seed=0).batch(100)
    model.fit(data_pairs, epochs=8, verbose=0)
    return model


def test_samples_per_class_follow_the_label(trained):
    means = []
    for j in range(CLASSES):
        one_hot = np.eye(CLASSES, dtype=np.float32)[j]
        samples = trained.sample(400, seed=[1, j], condition=one_hot).numpy()       # decoder means
        assert samples.shape == (400, 6, 6, 1) and np.all((samples >= 0) & (samples <= 1))
        means.append(samples.mean(0))
        # The condition may be given per row too, with the same result.
        np.testing.assert_allclose(trained.sample(400, seed=[1, j], condition=np.tile(one_hot, (400, 1))),
                                   samples, rtol=1e-6)
    means = np.stack(means)
    # Each class's mean image is the closed-form one (rows 2j, 2j+1 at 0.9, the rest at 0.1)...
    np.testing.assert_allclose(means, pixel_probabilities(), atol=0.1)
    # ...so the per-class means differ, by about 0.8 on the rows that distinguish them.
    for i in range(CLASSES):
        for j in range(i + 1, CLASSES):
            assert np.abs(means[i] - means[j]).max() > 0.6


def test_conditional_log_likelihood_prefers_the_true_label(trained):
    x, y, c = toy_set(300, seed=1)
    log_px = tfvae.log_likelihood(trained, x, 1000, condition=c, seed=2).numpy()
    wrong = np.eye(CLASSES, dtype=np.float32)[(y + 1) % CLASSES]
    log_px_wrong = tfvae.log_likelihood(trained, x, 1000, condition=wrong, seed=2).numpy()
    exact, exact_wrong = exact_log_likelihood(x, y), exact_log_likelihood(x, (y + 1) % CLASSES)
    # Under the true law, the wrong label costs 4 * 0.8 * log(81) = 14 nats on average.
    assert (exact - exact_wrong).mean() > 10
    assert np.mean(log_px > log_px_wrong) > 0.95 and (log_px - log_px_wrong).mean() > 8
    # No model beats the true law on average (Gibbs), up to the sampling error of the
    # 300-example mean (sd ~0.2 nats); a trained one comes close to it.
    gap = exact.mean() - log_px.mean()
    assert -0.5 < gap < 1.5, gap


def test_export_and_reload_a_conditional_model(trained, tmp_path):
    x, _, c = toy_set(12, seed=3)
    path = export(trained, tmp_path / "cvae", k=500, seed=4, verbose=False)
    loaded = tf.saved_model.load(path)
    want = importance_sampling(trained, x, 500, condition=c, seed=[4, 0])["log_px"]
    np.testing.assert_allclose(loaded.log_likelihood(x, c)["log_px"], want, rtol=1e-5, atol=1e-4)
    # The condition matters in the exported graph too.
    other = np.roll(c, 1, axis=1)
    assert np.abs(loaded.log_likelihood(x, other)["log_px"].numpy() - want.numpy()).mean() > 1.0
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        loaded.log_likelihood(x)                                          # the condition is required


def test_fit_on_labelled_shapes_slices():
    """The data module's (x, one-hot) pairs of sliced splits feed a conditional model's fit."""
    keras.utils.set_random_seed(0)
    train, test = data.load("shapes", ("train[:1000]", "test[-200:]"), labels=True, batch_size=100)
    model = VAE(data_shape=(28, 28, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [32]}, condition_dim=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(train, validation_data=test, epochs=2, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and np.isfinite(history["val_loss"]).all()
    samples = model.sample(5, seed=[0, 1], condition=[0.0, 0.0, 1.0])
    assert samples.shape == (5, 28, 28, 1)
    x, y = next(iter(test))
    assert x.shape == (100, 28, 28, 1) and y.shape == (100, 3)
    with pytest.raises(ValueError, match="conditional"):
        model.fit(data.load("shapes", "train[:100]", batch_size=50), epochs=1, verbose=0)


def test_the_preset_runs_offline_on_the_shared_mnist_test_files():
    mnist = SHARED / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the labelled MNIST test files are not in {mnist} (set TFVAE_SHARED_DATA)")
    preset = tfvae.load_preset(str(ROOT / "zoo_configs" / "cvae_mnist.yaml"))
    d = preset.data
    assert (d.name, d.binarize, d.labels, d.train_split, d.validation_split, d.eval_split) == (
        "mnist", "dynamic", True, "test[:7000]", "test[7000:8000]", "test[8000:]")
    assert preset.model["condition_dim"] == 10 and preset.paper.test_nll is None
    train, valid, test = data.load(d.name, (d.train_split, d.validation_split, d.eval_split), data_dir=mnist,
                                   batch_size=100, binarize=d.binarize, labels=d.labels, train_split=d.train_split)
    assert [sum(len(x) for x, _ in split) for split in (valid, test)] == [1000, 2000]
    model = tfvae.get_model_class("vae").from_config({k: v for k, v in preset.model.items() if k != "class"})
    model.compile(optimizer=keras.optimizers.Adam(preset.training.learning_rate))
    history = model.fit(train.take(3), verbose=0).history               # a few steps: the recipe runs
    assert np.isfinite(history["loss"]).all()
    x, y = next(iter(test))
    assert x.shape == (100, 28, 28, 1) and y.shape == (100, 10)
    assert np.isfinite(tfvae.log_likelihood(model, x[:4], 50, condition=y[:4]).numpy()).all()
