"""VAE with a learned mixture-of-Gaussians prior:

    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)),   pi = softmax(logits),
    sigma_k = softplus(raw_k) + eps,

with logits [K], locs mu [K, L] and raw scales [K, L] trained with the rest of the model
by maximising the ELBO. With K = 1 it is a learned diagonal Gaussian prior N(mu, sigma^2).

Initialisation: uniform weights (logits 0), locs drawn from N(0, 1) so the components start
spread over the region a N(0, I) prior would cover, scales 1.

KL(q(z|x) || p(z)) has no closed form (Gaussian against a mixture): TFP has no KL for this
pair, so `BaseVAE.analytic_kl` returns None and the ELBO uses the Monte Carlo estimate
log q(z|x) - log p(z) at the sampled z (one sample in training). Importance sampling and the
export use `prior().log_prob`; the prior is built from the weights inside every graph.
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import PositiveInt, validate
from tfvae.distributions import positive_scale, raw_scale
from tfvae.models.base import BaseVAE
from tfvae.registry import register

tfd = tfp.distributions


@register("mog_prior")
class MoGPriorVAE(BaseVAE):
    """VAE whose prior is a learned mixture of K diagonal Gaussians.

    Args:
      components: K, the number of mixture components.
      Others as `BaseVAE`.
    """

    def __init__(self, components: PositiveInt = 10, **base):
        self.num_components = validate(MoGPriorVAE, {"components": components}, "model 'mog_prior'",
                                       fill_defaults=False)["components"]
        super().__init__(**base)

    def build_variant(self):
        """The mixture's logits, means and raw scales."""
        shape = (self.num_components, self.latent_dim)
        self.prior_logits = self.add_weight(shape=(self.num_components,), initializer="zeros",
                                            name="prior_logits")
        self.prior_locs = self.add_weight(
            shape=shape, initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            name="prior_locs")
        self.prior_raw_scales = self.add_weight(
            shape=shape, initializer=keras.initializers.Constant(float(raw_scale(1.0))),
            name="prior_raw_scales")

    def get_config(self):
        return {**super().get_config(), "components": self.num_components}

    def prior(self) -> tfd.Distribution:
        """p(z) = sum_k softmax(logits)_k N(z; mu_k, diag(sigma_k^2)); batch shape [],
        event shape [latent_dim]."""
        components = tfd.MultivariateNormalDiag(
            loc=tf.cast(self.prior_locs, tf.float32),
            scale_diag=positive_scale(tf.cast(self.prior_raw_scales, tf.float32)))
        weights = tfd.Categorical(logits=tf.cast(self.prior_logits, tf.float32))
        return tfd.MixtureSameFamily(mixture_distribution=weights, components_distribution=components)
