"""Training callbacks."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae.models import VAE
from tfvae.training import KLWarmup


@pytest.mark.parametrize("steps_per_execution, expected", [(1, [3 / 8, 7 / 8, 1.0]), (2, [2 / 8, 6 / 8, 1.0])])
def test_kl_warmup_ramps_the_weight_linearly_over_its_epochs(steps_per_execution, expected):
    # 4 steps an epoch, warm-up over 2 epochs: before step s the weight is min(1, s / 8). One
    # step per call: the last steps of epochs 1, 2, 3 (s = 3, 7, 11) train with 3/8, 7/8 and 1.
    # Two steps per call: the last calls begin at s = 2, 6, 10.
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer="adam", steps_per_execution=steps_per_execution)
    x = (np.random.default_rng(0).random((16, 4, 4, 1)) > 0.5).astype("float32")
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=3, verbose=0, shuffle=False,
                        callbacks=[KLWarmup(2)])
    np.testing.assert_allclose(history.history["kl_weight"], expected)
    with pytest.raises(ValueError, match="positive number of epochs"):
        KLWarmup(0)


def test_checkpoints_keep_the_last_finite_weights_when_training_diverges(tmp_path):
    import keras

    from tfvae.training import Checkpoints

    class BlowUpAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(1e12)

    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    x = (np.random.default_rng(0).random((64, 4, 4, 1)) > 0.5).astype("float32")
    last, best = str(tmp_path / "last.weights.h5"), str(tmp_path / "best.weights.h5")
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=3, verbose=0, shuffle=False,
                        callbacks=[keras.callbacks.TerminateOnNaN(), Checkpoints(last, best),
                                   BlowUpAfterFirstEpoch()])
    assert np.isfinite(history.history["loss"][0]) and not np.isfinite(history.history["loss"][-1])
    for path in (last, best):
        restored = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
        restored.load_weights(path)
        assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_checkpoints_between_writes_keep_the_weights_in_memory_and_write_them_at_the_end(tmp_path):
    """With a write interval longer than the run: the first epoch is written at once, later
    epochs wait, and the end writes the last epoch's weights and the best epoch's (here the
    third of four), each equal to the weights the model had at that epoch's end."""
    import keras

    from tfvae.training import Checkpoints

    def tiny():
        return VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})

    def stored(path):
        model = tiny()
        model.load_weights(path)
        return model.get_weights()

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b))

    class Score(keras.callbacks.Callback):       # before Checkpoints: the monitored value, best at epoch 3
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = [3.0, 2.0, 1.0, 5.0][epoch]

    seen = []

    class Watch(keras.callbacks.Callback):       # after Checkpoints: the weights, and the file on disk
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model.get_weights(), stored(last)))

    model = tiny()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = (np.random.default_rng(0).random((64, 4, 4, 1)) > 0.5).astype("float32")
    last, best = str(tmp_path / "last.weights.h5"), str(tmp_path / "best.weights.h5")
    model.fit(tf.data.Dataset.from_tensor_slices(x).batch(8), epochs=4, verbose=0, shuffle=False,
              callbacks=[Score(), Checkpoints(last, best, monitor="score", every_seconds=1e9), Watch()])
    assert all(same(on_disk, seen[0][0]) for _, on_disk in seen)      # epoch 1's file until the end
    assert not same(seen[0][0], seen[3][0])
    assert same(stored(last), seen[3][0]) and same(stored(best), seen[2][0])
    assert same(model.get_weights(), seen[3][0])                       # the model is left as it was


def test_the_kl_warmup_epochs_are_not_compared_with_the_later_ones(tmp_path):
    """Under a KL warm-up the validation loss rises with the KL's weight, whatever the model
    learns: Checkpoints lets the latest warm-up epoch stand in as the best until a later one
    exists, then compares only the later ones; early stopping counts none of the warm-up."""
    import keras

    from tfvae.training import Checkpoints

    class Score(keras.callbacks.Callback):       # lowest in the warm-up (epochs 1-3), then 4 < 5
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = [1.0, 2.0, 3.0, 2.5, 2.8][epoch]

    best_epochs = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best_epochs.append(checkpoints.best_epoch)

    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = (np.random.default_rng(0).random((16, 4, 4, 1)) > 0.5).astype("float32")
    checkpoints = Checkpoints(str(tmp_path / "last.weights.h5"), str(tmp_path / "best.weights.h5"),
                              monitor="score", start_from_epoch=3)
    model.fit(x, epochs=5, batch_size=8, verbose=0, callbacks=[Score(), checkpoints, Watch()])
    assert best_epochs == [1, 2, 3, 4, 4]

    # Through a run: min_delta 1e9 lets no epoch improve on the first one compared, so patience 1
    # stops one epoch after it: after epoch 5 (of 6) when the 3 warm-up epochs do not count,
    # after epoch 2 had they counted.
    preset = tmp_path / "warm.yaml"
    preset.write_text(
        "model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [8]}}\n"
        "data: {name: shapes}\n"
        "training: {epochs: 6, steps_per_epoch: 2, batch_size: 16, kl_warmup_epochs: 3, image_every: 0,\n"
        "           early_stopping_patience: 1, early_stopping_min_delta: 1.0e+9, jit_compile: false}\n")
    out = tfvae.train(str(preset), out=str(tmp_path / "run"), evaluate_after=False, verbose=0)
    with open(os.path.join(out, "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["epochs"] == 5 and metadata["best_epoch"] in (4, 5)


def test_burda_schedule_matches_its_stages_enumerated_epoch_by_epoch():
    """Stage i lasts 3^i epochs at base * 10^(-i/7): list every epoch of the 3,280 and compare."""
    import keras

    from tfvae.training.callbacks import burda_learning_rate, learning_rate_schedule
    expected = [1e-3 * 10 ** (-i / 7) for i in range(8) for _ in range(3 ** i)]
    assert len(expected) == 3280
    np.testing.assert_allclose([burda_learning_rate(e, 1e-3) for e in range(3280)], expected, rtol=1e-12)
    assert burda_learning_rate(5000, 1e-3) == pytest.approx(1e-4)       # the last rate is kept
    # Applied by Keras: the rate of each epoch as the optimizer saw it.
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(float(model.optimizer.learning_rate.numpy())))
    x = (np.random.default_rng(0).random((8, 4, 4, 1)) > 0.5).astype("float32")
    model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=5, verbose=0,
              callbacks=[learning_rate_schedule("burda", 1e-3), record])
    np.testing.assert_allclose(seen, expected[:5], rtol=1e-6)
    assert learning_rate_schedule("constant", 1e-3) is None
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        learning_rate_schedule("cosine", 1e-3)


def test_a_run_validates_on_its_validation_split_and_evaluates_on_its_eval_split(tmp_path, shared_data,
                                                                                  isolated_cache):
    """Three runs from one seed on the same training data: validating on the evaluation split
    by default or by name gives the same numbers; naming another split changes the validation
    loss only, and the final evaluation stays on the evaluation split."""
    import csv

    from tfvae.training import train

    def run(name, validation_split, data_dir=shared_data):
        preset = tmp_path / f"{name}.yaml"
        preset.write_text(
            "model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [8]}}\n"
            "data: {name: binarized_mnist, train_split: 'train[:200]', eval_split: 'test[:100]'"
            + (f", validation_split: '{validation_split}'" if validation_split else "") + "}\n"
            "training: {epochs: 2, batch_size: 50, jit_compile: false, image_every: 0, validation_batch_size: 100}\n"
            "evaluation: {k: 2, examples: 100}\n")
        out = train(str(preset), out=str(tmp_path / name), data_dir=data_dir, verbose=0)
        with open(tmp_path / name / "history.csv") as f:
            rows = list(csv.DictReader(f))
        with open(tmp_path / name / "evaluation.json") as f:
            return rows, json.load(f), out

    default, default_evaluation, _ = run("default", None)
    named, _, _ = run("named", "test[:100]")
    # A relative data directory is recorded as an absolute one, for --resume from anywhere.
    other, other_evaluation, out = run("other", "valid[:100]", os.path.relpath(shared_data))
    with open(os.path.join(out, "train_args.json")) as f:
        assert json.load(f)["data_dir"] == os.path.abspath(shared_data)
    # ... where the commands on the run find the data without --data-dir (no download: the
    # cache is empty and the network unreachable).
    from tfvae.runs import evaluate_run
    assert evaluate_run(out, k=2, examples=20, disentanglement=False, verbose=False)["examples"] == 20
    assert len(default) == len(other) == 2
    for a, b, c in zip(default, named, other):
        assert a == b
        assert a["loss"] == c["loss"] and a["val_loss"] != c["val_loss"]
    # The same weights evaluated on the same split, whatever the validation split.
    assert other_evaluation["log_px"] == default_evaluation["log_px"] and other_evaluation["examples"] == 100
    assert tfvae.load_preset(out).data.validation_split == "valid[:100]"


def _train_and_read(tmp_path, column: str, preset_text: str):
    """Trains the preset YAML `preset_text` (no evaluation) and returns its metadata.json and
    the history.csv column `column`, one value per epoch."""
    import csv

    from tfvae.training import train

    preset = tmp_path / "preset.yaml"
    preset.write_text(preset_text)
    out = train(str(preset), out=str(tmp_path / "run"), evaluate_after=False, verbose=0)
    with open(os.path.join(out, "metadata.json")) as f:
        metadata = json.load(f)
    with open(os.path.join(out, "history.csv")) as f:
        return metadata, [float(row[column]) for row in csv.DictReader(f)]


def test_early_stopping_counts_only_improvements_beyond_min_delta(tmp_path):
    """With a min_delta no epoch can beat, the run stops `patience` epochs after the first
    (the converge protocol's rule: 0.1 nats in 50 epochs); best.weights.h5 still holds the
    epoch of the lowest validation loss."""
    metadata, val_loss = _train_and_read(
        tmp_path, "val_loss",
        "model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [8]}}\n"
        "data: {name: shapes}\n"
        "training: {epochs: 8, batch_size: 50, steps_per_epoch: 2, jit_compile: false, image_every: 0,\n"
        "           early_stopping_patience: 2, early_stopping_min_delta: 1.0e+9}\n")
    assert metadata["epochs"] == len(val_loss) == 3
    assert metadata["best_epoch"] == 1 + int(np.argmin(val_loss))


def test_checkpoints_in_max_mode_keep_the_highest_monitor(tmp_path):
    """mode "max" keeps the epoch of the highest score, where "min" keeps the lowest."""
    import keras

    from tfvae.training import Checkpoints

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_elbo"] = [-3.0, -1.0, -2.0][epoch]

    x = (np.random.default_rng(0).random((16, 4, 4, 1)) > 0.5).astype("float32")
    for mode, expected in (("max", 2), ("min", 1)):
        model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        checkpoints = Checkpoints(str(tmp_path / f"{mode}.last.weights.h5"), str(tmp_path / f"{mode}.weights.h5"),
                                  monitor="val_elbo", mode=mode)
        model.fit(x, epochs=3, batch_size=8, verbose=0, callbacks=[Score(), checkpoints])
        assert checkpoints.best_epoch == expected
    with pytest.raises(ValueError, match="mode must be"):
        Checkpoints("a.weights.h5", "b.weights.h5", mode="lowest")


def test_a_run_monitoring_the_validation_elbo_stops_and_keeps_the_best_by_it(tmp_path):
    """monitor: val_elbo (higher is better) picks the best epoch and drives early stopping:
    the run's best epoch and its length equal the rule replayed on its own history."""
    metadata, val_elbo = _train_and_read(
        tmp_path, "val_elbo",
        "model: {class: vqvae, data_shape: [28, 28, 1], num_latents: 2, embedding_dim: 2, codebook_size: 8,\n"
        "        encoder: {type: mlp, hidden: [8]}}\n"
        "data: {name: shapes}\n"
        "training: {epochs: 10, batch_size: 50, steps_per_epoch: 2, jit_compile: false, image_every: 0,\n"
        "           monitor: val_elbo, early_stopping_patience: 2, early_stopping_min_delta: 0.5}\n")
    best, wait, stop = -np.inf, 0, 10
    for epoch, value in enumerate(val_elbo, start=1):
        if value > best + 0.5:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= 2:
                stop = epoch
                break
    assert metadata["epochs"] == len(val_elbo) == stop
    assert metadata["best_epoch"] == 1 + int(np.argmax(val_elbo))


def test_learning_curves_show_each_metric_and_its_validation_twin(tmp_path):
    """The series plotted are history.csv's columns, epoch by epoch (empty cells left out);
    kl_weight and the model's other terms stay off the KL panel; each panel's y-range leaves
    out the first epochs' values, which dwarf the rest."""
    import csv
    import io

    from tfvae.training.callbacks import read_history
    from tfvae.training.curves import learning_curve_series, plot_learning_curves, value_range

    epochs = 20
    elbo = -100.0 + 10.0 * np.log1p(np.arange(epochs))
    elbo[0] = -5000.0                                           # the first epoch's outlier
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["epoch", "elbo", "kl", "kl_weight", "kl_z1", "loss", "mi", "val_elbo", "val_kl_z1"])
    for e in range(epochs):
        writer.writerow([e, elbo[e], 20.0 + e, min(1.0, e / 5), 15.0 + e, -elbo[e], 3.0, elbo[e] - 2,
                         "" if e % 2 else 14.0 + e])
    path = tmp_path / "history.csv"
    path.write_text(text.getvalue())
    rows = read_history(str(path))

    series = learning_curve_series(rows)
    assert {panel: sorted(shown) for panel, shown in series.items()} == {
        "loss": ["loss"], "elbo": ["elbo", "val_elbo"], "kl": ["kl", "kl_z1", "val_kl_z1"]}
    x, y = series["elbo"]["elbo"]
    np.testing.assert_array_equal(x, np.arange(1, epochs + 1))
    np.testing.assert_allclose(y, elbo)
    x, y = series["kl"]["val_kl_z1"]
    np.testing.assert_array_equal(x, np.arange(1, epochs + 1, 2))
    np.testing.assert_allclose(y, 14.0 + np.arange(0, epochs, 2))
    low, high = value_range(series["elbo"], skip=2)
    assert elbo[2:].max() < high < 0 and -103.0 < low < elbo[2:].min() - 2     # val_elbo reaches elbo - 2

    out = tmp_path / "curves.png"
    assert plot_learning_curves(rows, str(out), best_epoch=7).keys() == series.keys()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
