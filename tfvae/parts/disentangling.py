"""Objectives that shape the aggregate posterior for disentanglement.

- `beta_tcvae` (Chen et al. 2018): the ELBO's KL split into index-code mutual information,
  total correlation and dimension-wise KL, weighted alpha, beta, gamma; log q(z) and
  log prod_l q(z_l) by minibatch-weighted or minibatch-stratified sampling over the batch
  (`tfvae.models.beta_tcvae` has the math). Both need the per-dimension densities
  q(z_l|x_j): a diagonal Gaussian posterior.
- `dip` (Kumar et al. 2018): the negative ELBO plus a penalty driving the batch covariance of
  the encoder means (DIP-VAE-I) or of q(z) (DIP-VAE-II) towards I (`tfvae.models.dip_vae`).
"""
from __future__ import annotations

import math
from typing import Literal

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import NonNegativeFloat, PositiveInt
from tfvae.distributions import moments
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss

tfd = tfp.distributions

DECOMPOSITION = ("mi", "tc", "dimwise_kl")


def pairwise_log_densities(z, loc, scale):
    """log q(z_il | x_j) for every pair (i, j) of a batch: [M (i), M (j), L], for z, loc and
    scale [M, L] (q(z|x_j) = N(loc_j, diag(scale_j^2)))."""
    z, loc, scale = (tf.convert_to_tensor(t, tf.float32) for t in (z, loc, scale))
    return tfd.Normal(loc=loc[tf.newaxis], scale=scale[tf.newaxis]).log_prob(z[:, tf.newaxis])


def weighted_aggregate(log_q_pairs, log_weights):
    """(log q(z_i), log prod_l q(z_il)), each [M], as weighted sums over the batch:

        q(z_i) ~= sum_j w_ij q(z_i | x_j),   q(z_il) ~= sum_j w_ij q(z_il | x_j)

    log_q_pairs [M, M, L] (`pairwise_log_densities`), log_weights [M, M] (or a scalar)."""
    log_weights = tf.convert_to_tensor(log_weights, tf.float32)
    log_qz = tf.reduce_logsumexp(tf.reduce_sum(log_q_pairs, axis=-1) + log_weights, axis=1)
    if log_weights.shape.rank:
        log_weights = log_weights[..., tf.newaxis]
    log_prod_qzl = tf.reduce_sum(tf.reduce_logsumexp(log_q_pairs + log_weights, axis=1), axis=-1)
    return log_qz, log_prod_qzl


def minibatch_weighted_sampling(z, loc, scale, dataset_size):
    """MWS estimates of log q(z_i) and log prod_l q(z_il), each [M], for z [M, L] with
    z_i drawn from q(z|x_i) = N(loc_i, diag(scale_i^2)), loc and scale [M, L]:

        log q(z_i)          = logsumexp_j sum_l log N(z_il; loc_jl, scale_jl) - log(N M)
        log prod_l q(z_il)  = sum_l [logsumexp_j log N(z_il; loc_jl, scale_jl) - log(N M)]

    N = dataset_size, M the batch size (the leading dimension of z): every pair weighs
    w_ij = 1/(N M), so each estimate is low by a factor between 1/M and 1/N
    (`tfvae.models.beta_tcvae` says what that does to the TC)."""
    log_q_pairs = pairwise_log_densities(z, loc, scale)
    batch = tf.cast(tf.shape(log_q_pairs)[0], tf.float32)
    return weighted_aggregate(log_q_pairs, -(tf.math.log(batch) + math.log(float(dataset_size))))


def minibatch_stratified_sampling(z, loc, scale, dataset_size):
    """MSS estimates of log q(z_i) and log prod_l q(z_il), each [M] (arguments as
    `minibatch_weighted_sampling`): z_i's own example keeps its exact weight in
    q(z) = (1/N) sum_n q(z|x_n), and the batch's M - 1 others stand for the other N - 1:

        q(z_i)  ~= (1/N) q(z_i | x_i) + (N - 1)/(N (M - 1)) sum_{j != i} q(z_i | x_j)

    and the same weights for every marginal q(z_il). When the others are drawn uniformly
    from the rest of the data set, each estimate is unbiased (its log is biased low, by
    Jensen's inequality, only), and with M = N it is exact. Chen et al. (2018, appendix
    C.2) give one of the others a different weight; the expectation is the same. With M = 1
    only the own term is left."""
    log_q_pairs = pairwise_log_densities(z, loc, scale)
    n = float(dataset_size)
    batch = tf.shape(log_q_pairs)[0]
    others = tf.maximum(tf.cast(batch, tf.float32) - 1.0, 1.0)
    log_weights = tf.where(tf.eye(batch, dtype=tf.bool), -math.log(n),
                           math.log((n - 1.0) / n) - tf.math.log(others))
    return weighted_aggregate(log_q_pairs, log_weights)


AGGREGATE_ESTIMATORS = {"mws": minibatch_weighted_sampling, "mss": minibatch_stratified_sampling}


@register_part("objective", "beta_tcvae")
class BetaTCObjective(Objective):
    """loss = -mean_B [log p(x|z) - w (alpha MI + beta TC + gamma dimwise_KL)], from one z ~ q
    per example, w the KL warm-up weight. Terms: the ELBO terms of that draw and `mi`, `tc`,
    `dimwise_kl` per example (logged by `fit`).

    Args:
      alpha: weight of the index-code mutual information.
      beta: weight of the total correlation (Chen et al. vary it; 6 is a typical value).
      gamma: weight of the dimension-wise KL.
      dataset_size: N, the number of training examples, in the estimator's weights.
      estimator: how log q(z) and log prod_l q(z_l) are estimated from the batch: "mws"
        (`minibatch_weighted_sampling`, Chen et al.'s default) or "mss"
        (`minibatch_stratified_sampling`, unbiased in q(z); far closer with many latents).
    """

    extra_metrics = DECOMPOSITION
    posteriors = ("diagonal",)
    posteriors_reason = "minibatch-weighted and stratified sampling need the per-dimension densities q(z_l|x) of a diagonal Gaussian"

    def __init__(self, alpha: NonNegativeFloat = 1.0, beta: NonNegativeFloat = 6.0, gamma: NonNegativeFloat = 1.0,
                 dataset_size: PositiveInt = 50_000, estimator: Literal["mws", "mss"] = "mws"):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.dataset_size = alpha, beta, gamma, dataset_size
        self.estimator = estimator

    def get_config(self):
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "dataset_size": self.dataset_size,
                "estimator": self.estimator}

    def kl_decomposition(self, model, q, z, log_qz):
        """Per-example (mi, tc, dimwise_kl), each [B], for one draw z [B, L] from the diagonal
        Gaussian q (batch shape [B]) with log q(z|x) [B]."""
        estimate = AGGREGATE_ESTIMATORS[self.estimator]
        log_q_agg, log_prod_q = estimate(z, q.mean(), q.stddev(), self.dataset_size)
        log_pz = model.prior().log_prob(z)
        return {"mi": log_qz - log_q_agg, "tc": log_q_agg - log_prod_q, "dimwise_kl": log_prod_q - log_pz}

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        q, z, log_qz, log_px_z = model._sample_posterior(x, 1, condition, seed, None, training)
        terms = model.bound_terms(tf.reduce_mean(log_px_z, axis=0), q, z, log_qz)
        parts = self.kl_decomposition(model, q, z[0], log_qz[0])
        penalty = self.alpha * parts["mi"] + self.beta * parts["tc"] + self.gamma * parts["dimwise_kl"]
        weight = tf.cast(model.kl_weight, tf.float32)
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"] - weight * penalty), {**terms, **parts})


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


@register_part("objective", "dip")
class DIPObjective(Objective):
    """loss = -mean_B [E_q log p(x|z) - w KL] + lambda_od sum_{i != j} Cov_ij^2 + lambda_d
    sum_i (Cov_ii - 1)^2, Cov the batch covariance of the encoder means ("i") or of q(z) ("ii");
    w (the KL warm-up weight) multiplies the KL only.

    Args:
      dip_type: "i" or "ii".
      lambda_od: weight of the squared off-diagonal entries of Cov.
      lambda_d: weight of the squared deviations of its diagonal from 1.
    """

    def __init__(self, dip_type: Literal["i", "ii"] = "ii", lambda_od: NonNegativeFloat = 10.0,
                 lambda_d: NonNegativeFloat = 10.0):
        super().__init__()
        self.dip_type, self.lambda_od, self.lambda_d = dip_type, lambda_od, lambda_d

    def get_config(self):
        return {"dip_type": self.dip_type, "lambda_od": self.lambda_od, "lambda_d": self.lambda_d}

    def penalty(self, q):
        """The DIP penalty (a scalar) of the posteriors q(z|x) of a batch."""
        mu, sigma = moments(q)
        return dip_penalty(mu, sigma, self.dip_type, self.lambda_od, self.lambda_d)

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        q = model.encode(x, condition, training=training)
        terms = model.elbo_terms(x, 1, condition, seed=seed, posterior=q, training=training)
        weight = tf.cast(model.kl_weight, tf.float32)
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"]) + self.penalty(q), terms)


__all__ = ["BetaTCObjective", "DECOMPOSITION", "DIPObjective", "batch_covariance", "dip_covariance", "dip_penalty",
           "minibatch_weighted_sampling"]
