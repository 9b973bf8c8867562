"""Several steps per XLA program (`tfvae.steps`): the same updates as one step per call."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae import steps
from tfvae.models import VAE


def tiny_vae():
    return VAE(data_shape=(6, 6, 1), latent_dim=3, encoder={"type": "mlp", "hidden": [16]}, seed=1)


def fit(examples, batch, steps_per_execution, epochs, validation):
    """(history, weights, model) of a tiny VAE trained with XLA from fixed seeds on fixed data."""
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).random((examples, 6, 6, 1)) > 0.5).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(batch)
    model = tiny_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True, steps_per_execution=steps_per_execution)
    history = model.fit(data, epochs=epochs, verbose=0, shuffle=False,
                        validation_data=data if validation else None).history
    return history, [w.numpy() for w in model.weights], model


@pytest.mark.parametrize("examples, batch, per_call, epochs, validation", [
    (32, 8, 4, 2, True),     # 4 batches: one XLA program of 4 steps per epoch, and per validation
    (40, 8, 3, 1, False),    # 5 batches: a program of 3 steps, then the 2 left one by one
    (36, 8, 5, 1, False),    # 4 full batches and one of 4: shapes differ, every batch one by one
])
def test_steps_in_one_program_make_the_updates_of_one_step_per_call(examples, batch, per_call, epochs, validation):
    # Keras' own function with XLA and one step per call draws the same noise from the same
    # seed stream, so the losses and the weights must agree to float32 round-off.
    reference_history, reference_weights, _ = fit(examples, batch, 1, epochs, validation)
    history, weights, model = fit(examples, batch, per_call, epochs, validation)
    assert steps.applies(model)
    for key in reference_history:
        np.testing.assert_allclose(history[key], reference_history[key], rtol=1e-5, err_msg=key)
    for got, expected in zip(weights, reference_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if epochs > 1:    # one trace serves every call
        assert model.train_function.program.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("jit, per_call", [(False, 4), (True, 1)])
def test_keras_own_function_where_the_program_does_not_apply(jit, per_call):
    model = tiny_vae()
    model.compile(optimizer="adam", jit_compile=jit, steps_per_execution=per_call)
    assert not steps.applies(model)
    assert not hasattr(model.make_train_function(), "program")
