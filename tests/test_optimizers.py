"""FusedAdam against Keras' Adam: the same trajectory, with and without XLA and through fit."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae.models import VAE
from tfvae.optimizers import FusedAdam
from tfvae.presets import TrainingSection, make_optimizer


def _trajectory(optimizer, jit_compile=False, steps=30):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in [(5, 3), (3,), ()]]
    gradients = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
                 for _ in range(steps)]
    apply = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=jit_compile)
    out = []
    for g in gradients:
        apply(g)
        out.append([v.numpy().copy() for v in variables])
    return out


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("options", [{}, {"clipnorm": 0.5}, {"epsilon": 1e-4, "beta_1": 0.5},
                                     {"weight_decay": 0.1}])
def test_fused_adam_follows_keras_adam_step_by_step(options, jit_compile):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=5, decay_rate=0.5)
    expected = _trajectory(keras.optimizers.Adam(schedule, **options))
    got = _trajectory(FusedAdam(schedule, **options), jit_compile)
    for step, (a, b) in enumerate(zip(expected, got)):
        for va, vb in zip(a, b):
            np.testing.assert_allclose(vb, va, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")
    assert not np.allclose(expected[0][0], expected[-1][0])   # the variables did move


def test_amsgrad_falls_back_to_keras_update():
    expected = _trajectory(keras.optimizers.Adam(0.05, amsgrad=True))
    got = _trajectory(FusedAdam(0.05, amsgrad=True))
    np.testing.assert_allclose(got[-1][0], expected[-1][0], rtol=1e-6)


def test_fit_with_fused_adam_matches_keras_adam_and_keeps_the_same_slots():
    x = (np.random.default_rng(1).random((64, 4, 4, 1)) > 0.5).astype("float32")
    def build():
        return VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=3)

    start = build().get_weights()
    weights = []
    for optimizer in (keras.optimizers.Adam(1e-2), FusedAdam(1e-2)):
        model = build()
        model.set_weights(start)
        model.compile(optimizer=optimizer)
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=3, verbose=0)
        weights.append((model.get_weights(), [v.numpy() for v in model.optimizer.variables]))
    (w_keras, slots_keras), (w_fused, slots_fused) = weights
    for a, b in zip(w_keras, w_fused):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert len(slots_keras) == len(slots_fused)
    for a, b in zip(slots_keras, slots_fused):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_presets_train_adam_with_the_fused_kernel():
    optimizer = make_optimizer(TrainingSection(optimizer="adam", learning_rate=2e-3, adam_epsilon=1e-4))
    assert isinstance(optimizer, FusedAdam)
    assert optimizer.epsilon == 1e-4
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, FusedAdam) and restored.epsilon == 1e-4


def test_fused_adam_sums_duplicate_rows_of_a_gather_gradient_before_squaring_them():
    # Rows 1 and 1 and 2 of a codebook: the gradient is an IndexedSlices with a duplicate
    # index. Adam on its dense sum is the reference (Keras' sparse path squares each slice).
    rng = np.random.default_rng(0)
    start, weights = rng.normal(size=(4, 2)).astype("float32"), rng.normal(size=(3, 2)).astype("float32")

    def trajectory(optimizer, densify):
        table = keras.Variable(start)
        out = []
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, [1, 1, 2]) * weights)
            gradient = tape.gradient(loss, table)
            assert isinstance(gradient, tf.IndexedSlices)
            optimizer.apply([tf.convert_to_tensor(gradient) if densify else gradient], [table])
            out.append(table.numpy().copy())
        return out

    expected = trajectory(keras.optimizers.Adam(0.1), densify=True)
    np.testing.assert_allclose(trajectory(FusedAdam(0.1), densify=False), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(trajectory(keras.optimizers.Adam(0.1), densify=False), expected)   # Keras' own path
