"""Which parts go together: the checks a model runs on its parts when it is built.

- The prior and the posterior put z in the same space (`latent_space`: "euclidean" for
  R^latent_dim; a sphere, a simplex or a codebook for the non-Euclidean latents), or the KL
  and the importance weights between them are meaningless.
A refusal is a ConfigError that names both parts and says why.
"""
from __future__ import annotations

from tfvae.config import ConfigError


def check_parts(model):
    """Raises ConfigError when `model`'s prior, posterior and objective parts do not fit."""
    prior, posterior = model.prior_part, model.posterior_part
    if model.posterior_family is posterior and prior.latent_space != posterior.latent_space:
        raise ConfigError(f"{prior!r} puts z in a {prior.latent_space} space but {posterior!r} in a "
                          f"{posterior.latent_space} one: the prior and the posterior must agree")


__all__ = ["check_parts"]
