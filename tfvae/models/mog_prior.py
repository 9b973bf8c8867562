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

from tfvae.config import PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.registry import register


@register("mog_prior")
class MoGPriorVAE(BaseVAE):
    """VAE whose prior is a learned mixture of K diagonal Gaussians (the prior part `mixture`).

    Args:
      components: K, the number of mixture components.
      Others as `BaseVAE` (but `prior`).
    """

    fixed_parts = ("prior",)

    def __init__(self, components: PositiveInt = 10, **base):
        self.num_components = validate(MoGPriorVAE, {"components": components}, "model 'mog_prior'",
                                       fill_defaults=False)["components"]
        super().__init__(**with_fixed_parts("mog_prior", base, prior={"type": "mixture",
                                                                       "components": self.num_components}))

    def get_config(self):
        return {**super().get_config(), "components": self.num_components}


__all__ = ["MoGPriorVAE"]
