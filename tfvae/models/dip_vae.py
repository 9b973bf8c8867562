"""DIP-VAE (Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations").

The loss is the negative ELBO plus a penalty that pushes the covariance of the aggregate
posterior q(z) = E_p(x)[q(z|x)] towards the identity (the covariance of the N(0, I) prior):

    loss = mean_b[-E_q log p(x_b|z) + KL(q(z|x_b) || p(z))]
           + lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2

with Cov estimated on the batch of B examples, from the encoder means mu_b and standard
deviations sigma_b (each [L]):

    DIP-VAE-I:   Cov = Cov_b[mu_b]                                   (covariance of the means)
    DIP-VAE-II:  Cov = Cov_q(z) = E_b[diag(sigma_b^2)] + Cov_b[mu_b] (covariance of q(z), by the
                                                                      law of total covariance)

Cov_b[mu] = (1/B) sum_b mu_b mu_b^T - mean_b(mu) mean_b(mu)^T is the (biased, 1/B) batch
covariance: the expectations of the paper are over p(x), estimated by batch means.
`kl_weight` (the KL warm-up ramp, 1 otherwise) multiplies the KL only, not the penalty.

The model `dip_vae` is the VAE with the objective part `dip` (`tfvae.parts.disentangling`).
"""
from __future__ import annotations

from typing import Literal

from tfvae.config import NonNegativeFloat, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.disentangling import batch_covariance, dip_covariance, dip_penalty
from tfvae.registry import register


@register("dip_vae")
class DIPVAE(BaseVAE):
    """DIP-VAE: the negative ELBO plus a penalty on the batch covariance of q(z).

        loss = -E_q[log p(x|z)] + KL(q(z|x) || p(z))
               + lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2

    DIP-VAE-I: Cov = Cov_batch[mu(x)]; DIP-VAE-II: Cov = E_batch[Sigma(x)] + Cov_batch[mu(x)]
    (the covariance of the aggregate posterior q(z)); Cov_batch divides by B. The ELBO terms
    come from one reparameterised z ~ q(z|x) per example and the closed-form KL, as the VAE.

    Args:
      dip_type: "i" or "ii".
      lambda_od: weight of the squared off-diagonal entries of Cov.
      lambda_d: weight of the squared deviations of the diagonal of Cov from 1.
      Other args as `BaseVAE` (but `objective`).

    Defaults: DIP-VAE-II with lambda_od = lambda_d = 10 (Kumar et al. use lambda_d = lambda_od
    for DIP-VAE-II, and lambda_d = 10 * lambda_od for DIP-VAE-I). With lambda_od = lambda_d = 0
    the loss is the VAE's negative ELBO.
    """

    fixed_parts = ("objective",)

    def __init__(self, dip_type: Literal["i", "ii"] = "ii", lambda_od: NonNegativeFloat = 10.0,
                 lambda_d: NonNegativeFloat = 10.0, **base):
        args = validate(DIPVAE, dict(dip_type=dip_type, lambda_od=lambda_od, lambda_d=lambda_d),
                        "model 'dip_vae'", fill_defaults=False)
        self.dip_type, self.lambda_od, self.lambda_d = args["dip_type"], args["lambda_od"], args["lambda_d"]
        super().__init__(**with_fixed_parts("dip_vae", base, objective={
            "type": "dip", "dip_type": self.dip_type, "lambda_od": self.lambda_od, "lambda_d": self.lambda_d}))

    def get_config(self):
        return {**super().get_config(), "dip_type": self.dip_type, "lambda_od": self.lambda_od,
                "lambda_d": self.lambda_d}

    def penalty(self, q):
        """The DIP penalty (a scalar) of the posteriors q(z|x) of a batch (`DIPObjective.penalty`)."""
        return self.objective_part.penalty(q)


__all__ = ["DIPVAE", "batch_covariance", "dip_covariance", "dip_penalty"]
