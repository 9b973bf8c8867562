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
"""
from __future__ import annotations

from typing import Literal

import tensorflow as tf

from tfvae.config import NonNegativeFloat, validate
from tfvae.distributions import moments
from tfvae.models.base import BaseVAE, TrainingLoss
from tfvae.registry import register


def batch_covariance(mu):
    """The (1/B) covariance over the batch of mu [B, L]: [L, L]."""
    mu = tf.convert_to_tensor(mu, tf.float32)
    centred = mu - tf.reduce_mean(mu, axis=0, keepdims=True)
    return tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(mu)[0], tf.float32)


def dip_covariance(mu, sigma, dip_type: str):
    """The covariance the DIP penalty acts on, [L, L]: Cov[mu] for "i";
    E[diag(sigma^2)] + Cov[mu] for "ii" (mu, sigma: [B, L])."""
    cov = batch_covariance(mu)
    if dip_type == "i":
        return cov
    if dip_type == "ii":
        sigma = tf.convert_to_tensor(sigma, tf.float32)
        return cov + tf.linalg.diag(tf.reduce_mean(tf.square(sigma), axis=0))
    raise ValueError(f"dip_type must be 'i' or 'ii', got {dip_type!r}")


def dip_penalty(mu, sigma, dip_type: str, lambda_od: float, lambda_d: float):
    """lambda_od * sum_{i != j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2 (a scalar), with Cov
    from `dip_covariance`."""
    cov = dip_covariance(mu, sigma, dip_type)
    diagonal = tf.linalg.diag_part(cov)
    off_diagonal = tf.reduce_sum(tf.square(cov)) - tf.reduce_sum(tf.square(diagonal))
    return lambda_od * off_diagonal + lambda_d * tf.reduce_sum(tf.square(diagonal - 1.0))


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
      Other args as `BaseVAE`.

    Defaults: DIP-VAE-II with lambda_od = lambda_d = 10 (Kumar et al. use lambda_d = lambda_od
    for DIP-VAE-II, and lambda_d = 10 * lambda_od for DIP-VAE-I). With lambda_od = lambda_d = 0
    the loss is the VAE's negative ELBO.
    """

    def __init__(self, dip_type: Literal["i", "ii"] = "ii", lambda_od: NonNegativeFloat = 10.0,
                 lambda_d: NonNegativeFloat = 10.0, **base):
        args = validate(DIPVAE, dict(dip_type=dip_type, lambda_od=lambda_od, lambda_d=lambda_d),
                        "model 'dip_vae'", fill_defaults=False)
        super().__init__(**base)
        self.dip_type, self.lambda_od, self.lambda_d = args["dip_type"], args["lambda_od"], args["lambda_d"]

    def get_config(self):
        return {**super().get_config(), "dip_type": self.dip_type, "lambda_od": self.lambda_od,
                "lambda_d": self.lambda_d}

    def penalty(self, q):
        """The DIP penalty (a scalar) of the posteriors q(z|x) of a batch."""
        mu, sigma = moments(q)
        return dip_penalty(mu, sigma, self.dip_type, self.lambda_od, self.lambda_d)

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The VAE's loss plus the DIP penalty, with the ELBO terms of one z ~ q per example."""
        q = self.encode(x, condition, training=training)
        terms = self.elbo_terms(x, 1, condition, seed=seed, posterior=q, training=training)
        weight = tf.cast(self.kl_weight, tf.float32)
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"]) + self.penalty(q), terms)


__all__ = ["DIPVAE", "batch_covariance", "dip_covariance", "dip_penalty"]
