"""Posterior families q(z|x), chosen in config as `posterior:`.

The encoder outputs `num_params(latent_dim)` unconstrained numbers per example; the family's
`distribution(params)` maps them to q(z|x) with batch shape [B] and event shape [latent_dim]
(semi-amortized inference refines those parameters by gradient steps).

- `diagonal`: N(mu, diag(sigma^2)), sigma = softplus(raw) + 1e-4: 2L parameters;
- `full`: N(mu, L L^T) with L lower triangular, its diagonal softplus(raw) + 1e-4:
  L + L(L+1)/2 parameters.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.distributions import DiagonalNormal, moments, positive_scale
from tfvae.parts.base import Part, register_part

tfd = tfp.distributions
tfb = tfp.bijectors


class Posterior(Part):
    """q(z|x) from the encoder's raw output. `latent_space` must match the prior's.
    `density_anywhere`: log q(z|x) at a z the family did not draw costs one evaluation (a
    closed form); a flow's needs its inverse, and a prior built from the posterior (the
    VampPrior) needs exactly that. `objectives`: the objectives it trains under, when it has
    parameters only they train (the VQ codebook), and `objectives_reason`, why."""

    latent_space = "euclidean"
    density_anywhere = True
    supports_jit = True       # False: its sampling has no XLA kernel (the model trains without XLA)
    objectives: tuple[str, ...] = ()   # the only objectives it trains under (empty: any), and why
    objectives_reason = ""

    def num_params(self, latent_dim: int) -> int:
        raise NotImplementedError

    def distribution(self, params) -> tfd.Distribution:
        raise NotImplementedError

    def analytic_kl(self, q, prior):
        """KL(q || prior) per example in closed form: TFP's for the pair, None when TFP has none
        (the model then takes the Monte Carlo KL). A family whose closed form is not TFP's
        (the categoricals' discrete KL while relaxed) overrides it."""
        try:
            return tfd.kl_divergence(q, prior)
        except NotImplementedError:
            return None

    def decode_point(self, q):
        """The z a reconstruction decodes for q(z|x): its mean (estimated from fixed draws
        when it has no closed form, `moments`)."""
        return moments(q)[0]


@register_part("posterior", "diagonal")
class DiagonalPosterior(Posterior):
    """q(z|x) = N(mu(x), diag(sigma(x)^2)), reparameterised through `tfvae.seeds`' draws."""

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def distribution(self, params) -> tfd.Distribution:
        loc, raw = tf.split(tf.cast(params, tf.float32), 2, axis=-1)
        return DiagonalNormal(loc=loc, scale_diag=positive_scale(raw))


@register_part("posterior", "full")
class FullCovariancePosterior(Posterior):
    """q(z|x) = N(mu(x), L(x) L(x)^T): correlated latents, L lower triangular from the
    encoder's L(L+1)/2 raw numbers (`tfb.FillScaleTriL`: its diagonal softplus(raw) + 1e-4)."""

    def num_params(self, latent_dim: int) -> int:
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def distribution(self, params) -> tfd.Distribution:
        params = tf.cast(params, tf.float32)
        latent_dim = self.model.latent_dim
        loc, raw = params[..., :latent_dim], params[..., latent_dim:]
        scale_tril = tfb.FillScaleTriL(diag_bijector=tfb.Chain([tfb.Shift(1e-4), tfb.Softplus()]))(raw)
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)


__all__ = ["DiagonalPosterior", "FullCovariancePosterior", "Posterior"]
