"""Which parts go together: the checks a model runs on its parts when it is built.

- The prior and the posterior put z in the same space (`latent_space`: "euclidean" for
  R^latent_dim; a sphere, a simplex or a codebook for the non-Euclidean latents), or the KL
  and the importance weights between them are meaningless.
- A prior built from the posterior (the VampPrior, (1/K) sum_k q(z|u_k)) evaluates q at z it
  did not draw, for every component: the posterior must have that density in closed form
  (`Posterior.density_anywhere`; an IAF's needs its flow inverted, latent_dim sequential
  network passes per component and draw).
- An objective that works with some posteriors only names them (`Objective.posteriors`) and
  why: e.g. beta-TCVAE's estimator needs a diagonal Gaussian's per-dimension densities.
- A posterior whose parameters only some objectives train names those (`Posterior.objectives`)
  and why: the VQ codebook learns through the vq objective's losses or its EMA step only.
A refusal is a ConfigError that names both parts and says why.
"""
from __future__ import annotations

from tfvae.config import ConfigError


def check_parts(prior, posterior, objective):
    """Raises ConfigError when a prior, a posterior and an objective part do not fit. The
    rules read the parts' class-level declarations only, so the parts need not be attached to
    a model (the contract harness sorts the whole grid this way without building a network)."""
    if prior.latent_space != posterior.latent_space:
        raise ConfigError(f"{prior!r} puts z in a {prior.latent_space} space but {posterior!r} in a "
                          f"{posterior.latent_space} one: the prior and the posterior must agree")
    if prior.needs_posterior_density and not posterior.density_anywhere:
        raise ConfigError(f"{prior!r} evaluates the posterior's density at every component for every z, and "
                          f"{posterior!r} has no closed form for it (its flow must be inverted, latent_dim "
                          f"sequential passes): use the posterior 'diagonal' or 'full' with this prior")
    if objective.posteriors and posterior.registered_name not in objective.posteriors:
        raise ConfigError(f"{objective!r} works with the posterior {' or '.join(map(repr, objective.posteriors))} "
                          f"only, not {posterior.registered_name!r}: {objective.posteriors_reason}")
    if posterior.objectives and objective.registered_name not in posterior.objectives:
        raise ConfigError(f"{posterior!r} trains under the objective {' or '.join(map(repr, posterior.objectives))} "
                          f"only, not {objective.registered_name!r}: {posterior.objectives_reason}")


__all__ = ["check_parts"]
