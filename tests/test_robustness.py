"""Never losing work: deterministic training, and a diverging run stops with a clear error while
the run directory keeps the last finite weights."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae.cli import main
from tfvae.models import VAE
from tfvae.training import Checkpoints, StopOnNonFinite, TrainingDiverged

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MODEL = {"latent_dim": 2, "encoder": {"type": "mlp", "hidden": [8]}}
TINY_TRAINING = {"epochs": 1, "steps_per_epoch": 5, "batch_size": 32, "image_every": 0}

# Op determinism is process-global and one-way (TensorFlow cannot turn it off again), and it
# makes unseeded random ops and ops without a deterministic kernel raise. So the deterministic
# runs happen in a child process: the rest of the test session runs as it would without them.
DETERMINISTIC_RUNS = """
import json, sys
from tensorflow.python.framework import config
from tfvae.training import train
out, model, training = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
before = config.is_op_determinism_enabled()
for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    train("vae_shapes", out=f"{out}/{name}", model=model, training={**training, "seed": seed, "deterministic": True},
          evaluate_after=False, verbose=0)
print(json.dumps({"before": before, "after": config.is_op_determinism_enabled()}))
"""


def _weights(run_dir):
    return tfvae.from_preset(run_dir, compile=False).get_weights()


def test_deterministic_runs_with_one_seed_give_bit_identical_weights(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", DETERMINISTIC_RUNS, str(tmp_path), json.dumps(TINY_MODEL), json.dumps(TINY_TRAINING)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    flags = json.loads(result.stdout.strip().splitlines()[-1])
    assert flags == {"before": False, "after": True}      # train switched op determinism on
    for name in "abc":
        with open(tmp_path / name / "config.yaml") as f:
            assert "deterministic: true" in f.read()
    a, b, c = (_weights(str(tmp_path / name)) for name in "abc")
    assert len(a) == len(b) == len(c) > 0
    assert all(np.array_equal(x, y) for x, y in zip(a, b))          # same seed: bit-identical
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))      # another seed: other weights
    # The run in this process never turned determinism on.
    from tensorflow.python.framework import config
    assert not config.is_op_determinism_enabled()


class _Snapshot(keras.callbacks.Callback):
    """The weights at the end of every epoch, in memory."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


class _BlowUpFromEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= 1:
            self.model.optimizer.learning_rate.assign(1e12)


def test_a_nan_in_epoch_2_stops_training_and_keeps_epoch_1_weights(tmp_path):
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer=keras.optimizers.SGD(1e-3), steps_per_execution=2)
    x = (np.random.default_rng(0).random((64, 4, 4, 1)) > 0.5).astype("float32")
    last, best = str(tmp_path / "last.weights.h5"), str(tmp_path / "best.weights.h5")
    snapshot = _Snapshot()
    with pytest.raises(TrainingDiverged, match=r"at steps? [\d-]+ of epoch 2 \(16 steps per epoch\)") as error:
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=5, verbose=0, shuffle=False,
                  callbacks=[StopOnNonFinite(last), Checkpoints(last, best), snapshot, _BlowUpFromEpoch2()])
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert "learning rate" in message and "clipnorm" in message and "gaussian scale" in message
    assert f"{last} keeps the weights" in message
    # Raised at once: no callback saw the end of epoch 2, and the model's weights are non-finite.
    assert len(snapshot.weights) == 1
    assert not all(np.isfinite(w).all() for w in model.get_weights())
    for path in (last, best):
        restored = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
        restored.load_weights(path)
        for saved, epoch_1 in zip(restored.get_weights(), snapshot.weights[0]):
            assert np.isfinite(saved).all()
            np.testing.assert_array_equal(saved, epoch_1)


def test_checkpoints_skip_non_finite_weights_even_with_a_finite_loss(tmp_path):
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer="sgd")
    model(np.zeros((1, 4, 4, 1), "float32"))
    last, best = str(tmp_path / "last.weights.h5"), str(tmp_path / "best.weights.h5")
    checkpoints = Checkpoints(last, best)
    checkpoints.set_model(model)
    checkpoints.on_epoch_end(0, {"loss": 1.0})
    assert os.path.isfile(last) and os.path.isfile(best)
    good = [w.copy() for w in model.get_weights()]
    model.trainable_weights[0].assign(np.full(model.trainable_weights[0].shape, np.inf, "float32"))
    checkpoints.on_epoch_end(1, {"loss": 0.5})      # a finite loss, but an infinite weight
    assert checkpoints.best_epoch == 1
    restored = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    restored.load_weights(last)
    for saved, want in zip(restored.get_weights(), good):
        np.testing.assert_array_equal(saved, want)


def test_cli_train_that_diverges_in_epoch_2_prints_one_line_and_keeps_a_loadable_run(
        tmp_path, capsys, monkeypatch):
    # The real KL warm-up, plus a learning rate blown up from the second epoch on: epoch 1
    # trains and is checkpointed, epoch 2 diverges.
    import tfvae.training.run as run

    class BlowingUpWarmup(run.KLWarmup):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            if epoch >= 1:
                self.model.optimizer.learning_rate.assign(1e30)   # Adam steps ~ the rate: overflow

    monkeypatch.setattr(run, "KLWarmup", BlowingUpWarmup)
    out = str(tmp_path / "run")
    code = main(["train", "--out", out, "--epochs", "3", "--steps-per-epoch", "5", "--batch-size", "32",
                 "--steps-per-execution", "1", "--kl-warmup-epochs", "1", "--set", "latent_dim=2",
                 "--set", "encoder={type: mlp, hidden: [8]}", "--no-eval"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tfvae: error: training diverged")
    assert "of epoch 2" in err[0] and "clipnorm" in err[0]
    assert os.path.join(out, "model.weights.h5") + " keeps the weights" in err[0]
    weights = _weights(out)                          # config.yaml + model.weights.h5 of epoch 1
    assert all(np.isfinite(w).all() for w in weights)
    best = tfvae.from_preset(out, weights=os.path.join(out, "best.weights.h5"), compile=False).get_weights()
    assert all(np.array_equal(w, b) for w, b in zip(weights, best))      # both from epoch 1
    with open(os.path.join(out, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 2      # the header and epoch 1 only


def test_cli_deterministic_flag_reaches_the_training_section(monkeypatch):
    import tfvae.training

    seen = {}
    monkeypatch.setattr(tfvae.training, "train", lambda *args, **kwargs: seen.update(kwargs) or "nowhere")
    assert main(["train", "--deterministic", "--seed", "3", "--no-eval"]) == 0
    assert seen["training"]["deterministic"] is True and seen["training"]["seed"] == 3
    assert main(["train", "--no-eval"]) == 0
    assert "deterministic" not in seen["training"]


# ------------------------------------------------------------------ fit checks its data
def _tiny_fitted(*refused, final):
    """Weights of a tiny VAE (fixed initial weights and seed) after `fit` refused each of
    `refused` (each must raise ValueError), then trained one epoch on `final`."""
    keras.utils.set_random_seed(0)
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    for data in refused:
        with pytest.raises(ValueError):
            model.fit(data, epochs=1, batch_size=8, verbose=0)
    model.fit(final, epochs=1, batch_size=8, verbose=0, shuffle=False)
    return model.get_weights()


def test_a_refused_fit_leaves_the_model_as_if_the_call_had_not_happened():
    x = (np.random.default_rng(0).random((32, 4, 4, 1)) > 0.5).astype("float32")
    with_nan = x.copy()
    with_nan[0, 1, 1, 0] = np.nan
    refused = [x[..., 0],                                              # (N, 4, 4) for a (4, 4, 1) model
               with_nan, x * 255,                                      # NaN; pixels in 0..255
               tf.data.Dataset.from_tensor_slices(with_nan).batch(8)]  # refused at its first batch
    expected = _tiny_fitted(final=x)
    got = _tiny_fitted(*refused, final=x)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_a_pipeline_batch_is_refused_by_a_message_that_names_the_problem_and_the_call_undone():
    x = (np.random.default_rng(1).random((16, 4, 4, 1)) > 0.5).astype("float32")
    bad = x.copy()
    bad[8:] *= 255                                                     # the second batch of 8 is in 0..255
    keras.utils.set_random_seed(0)
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    initial = model.get_weights()
    with pytest.raises(ValueError, match=r"x: a batch of the data set must be finite and lie in \[0, 1\] .* 0 255"):
        model.fit(tf.data.Dataset.from_tensor_slices(bad).batch(8), epochs=1, verbose=0)
    # The step on the first (good) batch is undone with the refusal: all or nothing.
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), initial))
    assert int(model.optimizer.iterations.numpy()) == 0
    with pytest.raises(ValueError, match="validation_data: a batch of the data set must be finite and lie in"):
        model.fit(x, epochs=1, batch_size=8, verbose=0, validation_data=tf.data.Dataset.from_tensor_slices(bad).batch(8))
    with pytest.raises(ValueError, match="x must lie in"):
        model.evaluate(bad, verbose=0)
