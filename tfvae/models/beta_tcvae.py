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
the batch). Every pair weighs 1/(N M), so the estimate of a density is low by a factor
between 1/M (where z_i is likely only under its own x_i, as a joint over many latents is) and
1/N (where the batch stands for the whole data set, as a single latent's marginal does): with
L latents the TC can then read about L log N - log M too high and the dimension-wise KL
L log N too low (536 and 541 nats at N = 50,000, M = 100, L = 50). With `estimator: mss`,
minibatch stratified sampling (appendix C.2) weighs the own pair 1/N, its weight in q(z), and
the M - 1 others (N - 1)/(N (M - 1)) each:

    log q(z_i)   ~= logsumexp_j [log q(z_i | x_j) + log w_ij],   w_ii = 1/N,
                    w_ij = (N - 1)/(N (M - 1)) for j != i

and likewise per dimension; its estimate of q(z_i) is unbiased. Per example i the three
terms are then

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
per-dimension densities q(z_l | x_j), so the posterior must be a diagonal Gaussian.

The model `beta_tcvae` is the VAE with the objective part `beta_tcvae`
(`tfvae.parts.disentangling`, where the estimator is).
"""
from __future__ import annotations

from typing import Literal

from tfvae.config import NonNegativeFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.disentangling import minibatch_stratified_sampling, minibatch_weighted_sampling
from tfvae.registry import register


@register("beta_tcvae")
class BetaTCVAE(BaseVAE):
    """beta-TCVAE: the ELBO's KL split into index-code mutual information, total correlation
    and dimension-wise KL, weighted alpha, beta, gamma; log q(z) and log prod_l q(z_l) by
    minibatch-weighted or stratified sampling over the batch (see the module docstring).

    Args:
      alpha: weight of the index-code mutual information.
      beta: weight of the total correlation (Chen et al. vary it; 6 is a typical value).
      gamma: weight of the dimension-wise KL.
      dataset_size: N, the number of training examples, in the estimator's weights.
        50000 is binarized MNIST's training split.
      estimator: "mws" (minibatch-weighted sampling) or "mss" (minibatch stratified
        sampling) for log q(z) and log prod_l q(z_l).
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, alpha: NonNegativeFloat = 1.0, beta: NonNegativeFloat = 6.0, gamma: NonNegativeFloat = 1.0,
                 dataset_size: PositiveInt = 50_000, estimator: Literal["mws", "mss"] = "mws", **base):
        args = validate(BetaTCVAE, dict(alpha=alpha, beta=beta, gamma=gamma, dataset_size=dataset_size,
                                        estimator=estimator), "model 'beta_tcvae'", fill_defaults=False)
        self.alpha, self.beta, self.gamma = args["alpha"], args["beta"], args["gamma"]
        self.dataset_size, self.estimator = args["dataset_size"], args["estimator"]
        super().__init__(**with_fixed_parts("beta_tcvae", base, objective={
            "type": "beta_tcvae", "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
            "dataset_size": self.dataset_size, "estimator": self.estimator}))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "dataset_size": self.dataset_size, "estimator": self.estimator}

    def kl_decomposition(self, q, z, log_qz):
        """Per-example (mi, tc, dimwise_kl), each [B] (`BetaTCObjective.kl_decomposition`)."""
        return self.objective_part.kl_decomposition(self, q, z, log_qz)


__all__ = ["BetaTCVAE", "minibatch_stratified_sampling", "minibatch_weighted_sampling"]
