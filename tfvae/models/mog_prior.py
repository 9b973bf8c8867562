"""VAE with a learned mixture-of-Gaussians prior:

    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)),   pi = softmax(logits),
    sigma_k = softplus(raw_k) + eps,

with logits [K], locs mu [K, L] and raw scales [K, L] trained with the rest of the model
by maximising the ELBO. With K = 1 it is a learned diagonal Gaussian prior N(mu, sigma^2).

Initialisation: uniform weights (logits 0), scales 1, locs drawn from N(0, 0.1^2): the prior
starts close to N(0, I) (`MixturePrior` says what a spread of 1 cost).

KL(q(z|x) || p(z)) has no closed form (Gaussian against a mixture): TFP has no KL for this
pair, so `BaseVAE.analytic_kl` returns None and the ELBO uses the Monte Carlo estimate
log q(z|x) - log p(z) at the sampled z (one sample in training). Importance sampling and the
export use `prior().log_prob`; the prior is built from the weights inside every graph.
"""
from __future__ import annotations

from tfvae.config import NonNegativeFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.registry import register


@register("mog_prior")
class MoGPriorVAE(BaseVAE):
    """VAE whose prior is a learned mixture of K diagonal Gaussians (the prior part `mixture`).

    Args:
      components: K, the number of mixture components.
      loc_init_stddev: spread of the components' initial means.
      Others as `BaseVAE` (but `prior`).
    """

    fixed_parts = ("prior",)

    def __init__(self, components: PositiveInt = 10, loc_init_stddev: NonNegativeFloat = 0.1, **base):
        own = validate(MoGPriorVAE, {"components": components, "loc_init_stddev": loc_init_stddev},
                       "model 'mog_prior'", fill_defaults=False)
        self.num_components, self.loc_init_stddev = own["components"], own["loc_init_stddev"]
        super().__init__(**with_fixed_parts("mog_prior", base, prior={"type": "mixture", **own}))

    def get_config(self):
        return {**super().get_config(), "components": self.num_components, "loc_init_stddev": self.loc_init_stddev}


__all__ = ["MoGPriorVAE"]
