"""Training callbacks."""
import numpy as np
import pytest
import tensorflow as tf

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
