"""beta-TCVAE (Chen et al. 2018, "Isolating Sources of Disentanglement in Variational
Autoencoders").

With n the index of a training example (uniform over the N examples), q(z|n) = q(z|x_n),
the aggregate posterior q(z) = (1/N) sum_n q(z|n) and its marginals q(z_l), the ELBO's
KL term, averaged over the data, splits into three parts:

    E_n KL(q(z|n) || p(z)) = E_{q(z,n)}[log q(z|n) - log q(z)]                 index-code MI
                           + E_{q(z)}[log q(z) - log prod_l q(z_l)]            total correlation
                           + E_{q(z)}[log prod_l q(z_l) - log prod_l p(z_l)]   dimension-wise KL

(p(z) = N(0, I) factorises over l). The loss weights them by alpha, beta and gamma:

    loss = -E_q[log p(x|z)] + alpha * MI + beta * TC + gamma * dimwise_KL

alpha = beta = gamma = 1 is the VAE (with a Monte Carlo KL); beta > 1 penalises the
total correlation only, which is what drives disentanglement.

log q(z) and log q(z_l) need the whole dataset; they are estimated by minibatch-weighted
sampling (MWS, Chen et al. section 3.1 / appendix C.1) on the batch x_1..x_M itself, with
one z_i ~ q(z|x_i) per example:

    log q(z_i)   ~= logsumexp_j log q(z_i | x_j)       - log(N M)
    log q(z_il)  ~= logsumexp_j log q(z_il | x_j)      - log(N M)     for each dimension l
    log prod_l q(z_il) ~= sum_l [logsumexp_j log q(z_il | x_j) - log(N M)]

(j runs over the whole batch, i included; N = `dataset_size`, M the batch size, taken from
the batch). Per example i the three terms are then

    mi_i         = log q(z_i|x_i) - log q(z_i)
    tc_i         = log q(z_i) - log prod_l q(z_il)
    dimwise_kl_i = log prod_l q(z_il) - log p(z_i)

and they sum to log q(z_i|x_i) - log p(z_i), the one-sample Monte Carlo KL, whatever the
estimates of log q(z) and log prod_l q(z_l): so with alpha = beta = gamma = 1 the loss is
minus the batch mean of the one-sample ELBO with a Monte Carlo KL, exactly. The loss is the
batch mean of the per-example values; `kl_weight` (the KL warm-up ramp, 1 otherwise)
multiplies the whole penalty alpha * MI + beta * TC + gamma * dimwise_KL.

The reported terms (`elbo`, `log_px_z`, `kl`) are the ordinary ELBO terms of the same draw
of z (KL in closed form under kl="analytic", as for the VAE), plus `mi`, `tc` and
`dimwise_kl` per example, which `fit` also reports as metrics. The estimator needs the
per-dimension densities q(z_l | x_j), so the posterior must be a diagonal Gaussian (this
variant's `posterior_family`).
"""
from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import NonNegativeFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, TrainingLoss
from tfvae.registry import register

tfd = tfp.distributions

DECOMPOSITION = ("mi", "tc", "dimwise_kl")


def minibatch_weighted_sampling(z, loc, scale, dataset_size):
    """MWS estimates of log q(z_i) and log prod_l q(z_il), each [M], for z [M, L] with
    z_i drawn from q(z|x_i) = N(loc_i, diag(scale_i^2)), loc and scale [M, L]:

        log q(z_i)          = logsumexp_j sum_l log N(z_il; loc_jl, scale_jl) - log(N M)
        log prod_l q(z_il)  = sum_l [logsumexp_j log N(z_il; loc_jl, scale_jl) - log(N M)]

    N = dataset_size, M = the batch size (the leading dimension of z)."""
    z, loc, scale = (tf.convert_to_tensor(t, tf.float32) for t in (z, loc, scale))
    # log q(z_il | x_j) for every pair (i, j): [M (i), M (j), L].
    log_q_pairs = tfd.Normal(loc=loc[tf.newaxis], scale=scale[tf.newaxis]).log_prob(z[:, tf.newaxis])
    batch = tf.cast(tf.shape(z)[0], tf.float32)
    log_nm = tf.math.log(batch) + math.log(float(dataset_size))
    log_qz = tf.reduce_logsumexp(tf.reduce_sum(log_q_pairs, axis=-1), axis=1) - log_nm
    log_prod_qzl = tf.reduce_sum(tf.reduce_logsumexp(log_q_pairs, axis=1) - log_nm, axis=-1)
    return log_qz, log_prod_qzl


@register("beta_tcvae")
class BetaTCVAE(BaseVAE):
    """beta-TCVAE: the ELBO's KL split into index-code mutual information, total correlation
    and dimension-wise KL, weighted alpha, beta, gamma; log q(z) and log prod_l q(z_l) by
    minibatch-weighted sampling over the batch (see the module docstring for the math).

    Args:
      alpha: weight of the index-code mutual information.
      beta: weight of the total correlation (Chen et al. vary it; 6 is a typical value).
      gamma: weight of the dimension-wise KL.
      dataset_size: N, the number of training examples, in the MWS normaliser log(N M).
        50000 is binarized MNIST's training split.
      Other args as `BaseVAE`.
    """

    extra_metrics = DECOMPOSITION

    def __init__(self, alpha: NonNegativeFloat = 1.0, beta: NonNegativeFloat = 6.0, gamma: NonNegativeFloat = 1.0,
                 dataset_size: PositiveInt = 50_000, **base):
        args = validate(BetaTCVAE, dict(alpha=alpha, beta=beta, gamma=gamma, dataset_size=dataset_size),
                        "model 'beta_tcvae'", fill_defaults=False)
        super().__init__(**base)
        self.alpha, self.beta, self.gamma = args["alpha"], args["beta"], args["gamma"]
        self.dataset_size = args["dataset_size"]

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "dataset_size": self.dataset_size}

    def kl_decomposition(self, q, z, log_qz):
        """Per-example (mi, tc, dimwise_kl), each [B], for one draw z [B, L] from the
        diagonal Gaussian q (batch shape [B]) with log q(z|x) [B]."""
        log_q_agg, log_prod_q = minibatch_weighted_sampling(z, q.mean(), q.stddev(), self.dataset_size)
        log_pz = self.prior().log_prob(z)
        return {"mi": log_qz - log_q_agg, "tc": log_q_agg - log_prod_q, "dimwise_kl": log_prod_q - log_pz}

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The beta-TCVAE loss from one z ~ q per example; terms: the ELBO terms of that draw
        (`log_px_z`, `kl`, `elbo`, as `elbo_terms(x, 1, seed=seed)`) and the KL parts `mi`,
        `tc`, `dimwise_kl`."""
        q, z, log_qz, log_px_z = self._sample_posterior(x, 1, condition, seed, None, training)
        kl = self.kl_term(q, z, log_qz)
        log_px_z = tf.reduce_mean(log_px_z, axis=0)
        parts = self.kl_decomposition(q, z[0], log_qz[0])
        penalty = self.alpha * parts["mi"] + self.beta * parts["tc"] + self.gamma * parts["dimwise_kl"]
        weight = tf.cast(self.kl_weight, tf.float32)
        return TrainingLoss(-tf.reduce_mean(log_px_z - weight * penalty),
                            {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl, **parts})


__all__ = ["BetaTCVAE", "minibatch_weighted_sampling"]
