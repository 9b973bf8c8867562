"""MMD-regularised autoencoders: InfoVAE / MMD-VAE (Zhao et al. 2017, "InfoVAE: Information
Maximizing Variational Autoencoders") and WAE-MMD (Tolstikhin et al. 2018, "Wasserstein
Auto-Encoders"), with the kernels and the MMD estimator they share.

Both penalise the maximum mean discrepancy between the aggregate posterior q(z) and the prior
p(z), estimated from the batch: z_b ~ q(z|x_b) (the same reparameterised draw the
reconstruction term uses, one per example) against B draws z~_b ~ p(z) made from a
stateless seed folded from the step's seed.

Kernels on latent vectors of dimension d, with C = 2 * d * scale^2 (Tolstikhin et al.'s choice
for a N(0, scale^2 I) prior; scale = 1 for N(0, I)):

    imq(x, y) = C / (C + ||x - y||^2)        (inverse multiquadratic)
    rbf(x, y) = exp(-||x - y||^2 / C)        (Gaussian; at ||x - y||^2 = C it is e^-1, imq 1/2)

MMD^2 estimator (`mmd2`): for two samples of the same size n, the unbiased U-statistic of
Gretton et al. (2012, Lemma 6) over the pairs i != j,

    MMD^2_u = 1 / (n (n - 1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)]

Its cross term skips the pairs i = j like the other two, so the estimate of a sample against
itself (y = x) is exactly 0; it is unbiased since x and y are independent. It needs n >= 2.

The models `info_vae` and `wae_mmd` are the VAE with the objective parts `info_vae` and `wae`
(`tfvae.parts.mmd`, where the kernels and the estimator are).
"""
from __future__ import annotations

from typing import Literal

from tfvae.config import NonNegativeFloat, PositiveFloat, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.mmd import KERNELS, imq_kernel, mmd2, rbf_kernel
from tfvae.registry import register


@register("info_vae")
class InfoVAE(BaseVAE):
    """InfoVAE (Zhao et al. 2017) in its MMD form (MMD-VAE): a weighted KL plus an MMD
    between the aggregate posterior and the prior.

        loss = -E_q[log p(x|z)] + (1 - alpha) * KL(q(z|x) || p(z)) + (alpha + lambda - 1) * MMD^2(q(z), p(z))

    the negative of Zhao et al.'s objective with D = MMD (their Eq. 6). E_q log p(x|z) uses one
    reparameterised z ~ q(z|x) per example and the KL is closed form, as in the VAE; MMD^2 is
    `mmd2` between those z over the batch and as many prior draws. `kl_weight` (the KL warm-up
    ramp, 1 otherwise) multiplies the KL term only.

    Args:
      alpha: in (-inf, 1]; 1 - alpha >= 0 weighs the KL.
      lambda_: the paper's lambda; alpha + lambda_ - 1 >= 0 weighs the MMD.
      kernel: "imq" or "rbf" (see the module docstring).
      scale: the prior scale in the kernels' bandwidth C = 2 * latent_dim * scale^2.
      Other args as `BaseVAE` (but `objective`).

    Defaults alpha = 0, lambda_ = 1000 (KL weight 1, MMD weight 999): the full ELBO plus a
    heavily weighted MMD, the MMD setting Zhao et al. report on MNIST. alpha = 0, lambda_ = 1
    is the VAE (the MMD weight is 0); alpha = 1 drops the KL (recon + lambda * MMD).
    """

    fixed_parts = ("objective",)

    def __init__(self, alpha: float = 0.0, lambda_: float = 1000.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0, **base):
        args = validate(InfoVAE, dict(alpha=alpha, lambda_=lambda_, kernel=kernel, scale=scale),
                        "model 'info_vae'", fill_defaults=False)
        self.alpha, self.lambda_, self.kernel, self.scale = args["alpha"], args["lambda_"], args["kernel"], args["scale"]
        super().__init__(**with_fixed_parts("info_vae", base, objective={
            "type": "info_vae", "alpha": self.alpha, "lambda_": self.lambda_, "kernel": self.kernel,
            "scale": self.scale}))

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "lambda_": self.lambda_, "kernel": self.kernel,
                "scale": self.scale}

    @property
    def mmd_weight(self) -> float:
        return self.objective_part.mmd_weight


@register("wae_mmd")
class WAEMMD(BaseVAE):
    """WAE-MMD (Tolstikhin et al. 2018): reconstruction plus an MMD between the aggregate
    posterior and the prior, no KL; the Gaussian encoder is its random encoder.

        loss = -E_q[log p(x|z)] + lambda * MMD^2(q(z), p(z))

    No KL term: the reconstruction cost is the negative log-likelihood of one reparameterised
    z ~ q(z|x) per example (the paper's c(x, G(z)) is this model's -log p(x|z)), the penalty
    `mmd2` between those z over the batch and as many prior draws. The ELBO terms (with the
    closed-form KL) are still reported as metrics; with no KL pressure the encoder's scales
    may shrink, so the KL metric can grow large while the loss does not.

    Args:
      lambda_: weight of MMD^2 (the paper's lambda); 0 leaves the reconstruction term alone.
      kernel: "imq" (the paper's choice) or "rbf" (see the module docstring).
      scale: the prior scale in the kernels' bandwidth C = 2 * latent_dim * scale^2.
      Other args as `BaseVAE` (but `objective`).

    Default lambda_ = 10 with the IMQ kernel, as in Tolstikhin et al.'s MNIST experiments (there
    with a squared-error cost, so the balance with a Bernoulli NLL in nats differs).
    """

    fixed_parts = ("objective",)

    def __init__(self, lambda_: NonNegativeFloat = 10.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0, **base):
        args = validate(WAEMMD, dict(lambda_=lambda_, kernel=kernel, scale=scale), "model 'wae_mmd'",
                        fill_defaults=False)
        self.lambda_, self.kernel, self.scale = args["lambda_"], args["kernel"], args["scale"]
        super().__init__(**with_fixed_parts("wae_mmd", base, objective={
            "type": "wae", "lambda_": self.lambda_, "kernel": self.kernel, "scale": self.scale}))

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_, "kernel": self.kernel, "scale": self.scale}


__all__ = ["InfoVAE", "KERNELS", "WAEMMD", "imq_kernel", "mmd2", "rbf_kernel"]
