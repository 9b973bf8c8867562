"""Training callbacks."""
import numpy as np
import pytest
import tensorflow as tf

from tfvae.models import VAE
from tfvae.training import KLWarmup


def test_kl_warmup_ramps_the_weight_linearly_over_its_epochs():
    # 4 steps an epoch, warm-up over 2 epochs: before step s the weight is min(1, s / 8), so the
    # last steps of epochs 1, 2, 3 (s = 3, 7, 11) train with 3/8, 7/8 and 1.
    model = VAE(data_shape=(4, 4, 1), latent_dim=2, encoder={"type": "mlp", "hidden": [8]})
    model.compile(optimizer="adam")
    x = (np.random.default_rng(0).random((16, 4, 4, 1)) > 0.5).astype("float32")
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=3, verbose=0, shuffle=False,
                        callbacks=[KLWarmup(2)])
    np.testing.assert_allclose(history.history["kl_weight"], [3 / 8, 7 / 8, 1.0])
    with pytest.raises(ValueError, match="positive number of epochs"):
        KLWarmup(0)
