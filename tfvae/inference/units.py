"""Active units (Burda, Grosse & Salakhutdinov 2016).

Latent unit i is active when its posterior mean moves with the data:

    A_i = Var_x( E_{q(z|x)}[z_i] ) > 0.01

An inactive unit's posterior equals the prior whatever x is: the model does not use it
(posterior collapse). The count of active units is a measure of how much of the latent
space the model uses.
"""
from __future__ import annotations

import numpy as np

from tfvae.distributions import moments
from tfvae.inference.evaluate import batches

ACTIVITY_THRESHOLD = 0.01


def active_units(model, data, threshold: float = ACTIVITY_THRESHOLD, batch_size: int = 500) -> dict:
    """{"active": count, "threshold", "latent_dim", "activity": [L] Var_x(E_q[z_i])} over
    `data` (a batched tf.data.Dataset, an array, or an (x, condition) pair). A model with
    several stochastic layers (`latent_dims`, z = [z1, z2, ...]) also gets "active_per_layer",
    the count in each layer, z1 first: a layer with none adds nothing to the model."""
    means = [moments(model.encode(x, condition))[0].numpy()
             for x, condition in batches(model, data, batch_size)]
    means = np.concatenate(means)
    if len(means) < 2:
        raise ValueError(f"active units need at least 2 examples, got {len(means)}")
    activity = means.var(axis=0, ddof=1)
    out = {"active": int((activity > threshold).sum()), "threshold": threshold,
           "latent_dim": model.latent_dim, "activity": activity.tolist()}
    layers = tuple(getattr(model, "latent_dims", ()))
    if len(layers) > 1:
        out["active_per_layer"] = [int((layer > threshold).sum())
                                   for layer in np.split(activity, np.cumsum(layers)[:-1])]
    return out
