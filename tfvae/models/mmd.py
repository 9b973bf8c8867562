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
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import tensorflow as tf

from tfvae.config import ConfigError, NonNegativeFloat, PositiveFloat, validate
from tfvae.models.base import BaseVAE, TrainingLoss
from tfvae.registry import register

KERNELS = ("rbf", "imq")


def _squared_distances(x, y):
    """||x_i - y_j||^2, [n, m], for x [n, d] and y [m, d] (by differences: exact and >= 0)."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    return tf.reduce_sum(tf.square(x[:, None, :] - y[None, :, :]), axis=-1)


def _bandwidth(x, scale):
    """C = 2 * d * scale^2, with d the last dimension of x."""
    d = tf.cast(tf.shape(x)[-1], tf.float32)
    return 2.0 * d * tf.square(tf.cast(scale, tf.float32))


def rbf_kernel(x, y, scale=1.0):
    """exp(-||x_i - y_j||^2 / C), C = 2 * d * scale^2: the [n, m] kernel matrix of x [n, d], y [m, d]."""
    return tf.exp(-_squared_distances(x, y) / _bandwidth(x, scale))


def imq_kernel(x, y, scale=1.0):
    """C / (C + ||x_i - y_j||^2), C = 2 * d * scale^2: the [n, m] kernel matrix of x [n, d], y [m, d]."""
    c = _bandwidth(x, scale)
    return c / (c + _squared_distances(x, y))


def _kernel_function(kernel) -> Callable:
    if callable(kernel):
        return kernel
    if kernel == "rbf":
        return rbf_kernel
    if kernel == "imq":
        return imq_kernel
    raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))} or a callable, got {kernel!r}")


def _sum_off_diagonal(k):
    return tf.reduce_sum(k) - tf.reduce_sum(tf.linalg.diag_part(k))


def mmd2(x, y, kernel="imq", scale=1.0):
    """The unbiased estimate MMD^2_u (a float32 scalar) between samples x [n, d] and y [n, d]:

        1 / (n (n - 1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)]

    kernel: "rbf", "imq", or a callable (x, y, scale) -> [n, m] kernel matrix. Both samples
    must have the same number n >= 2 of rows (checked where the shapes are known at trace time). It can be slightly negative (it is unbiased,
    not clipped); it is exactly 0 when y is x.
    """
    k = _kernel_function(kernel)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    if x.shape.rank != 2 or y.shape.rank != 2:
        raise ValueError(f"mmd2 takes samples of shape [n, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] is not None and y.shape[0] is not None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"mmd2 needs samples of the same size, got {x.shape[0]} and {y.shape[0]}")
        if x.shape[0] < 2:
            raise ValueError(f"mmd2 needs at least 2 examples per sample, got {x.shape[0]}")
    # Sizes unknown until the graph runs are not asserted there: an Assert op would copy to
    # the host every training step (the model draws as many prior samples as posterior ones).
    n = tf.cast(tf.shape(x)[0], tf.float32)
    within = _sum_off_diagonal(k(x, x, scale)) + _sum_off_diagonal(k(y, y, scale))
    # sum_{i != j} k(x_i, y_j) + k(x_j, y_i) = 2 sum_{i != j} k(x_i, y_j)
    return (within - 2.0 * _sum_off_diagonal(k(x, y, scale))) / (n * (n - 1.0))


class _MMDModel(BaseVAE):
    """Shared machinery: the ELBO terms and the MMD between the batch's z ~ q and prior draws."""

    def _init_mmd(self, kernel, scale):
        self.kernel, self.scale = kernel, scale

    def mmd_and_terms(self, x, condition=None, training=False, seed=None):
        """(MMD^2_u between z_b ~ q(z|x_b) and B draws of p(z), per-example ELBO terms).

        One seed drives both: the posterior draw uses it as `elbo_terms` would (so the terms
        equal `elbo_terms(x, 1, seed=seed)`), the prior draws use it folded in with 1."""
        seed = self._seed(seed)
        q, z, log_qz, log_px_z = self._sample_posterior(x, 1, condition, seed, None, training)
        log_px_z = tf.reduce_mean(log_px_z, axis=0)
        kl = self.kl_term(q, z, log_qz)
        terms = {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl}
        z_q = z[0]
        z_p = self.prior().sample(tf.shape(z_q)[0], seed=tf.random.experimental.stateless_fold_in(seed, 1))
        return mmd2(z_q, z_p, self.kernel, self.scale), terms


@register("info_vae")
class InfoVAE(_MMDModel):
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
      Other args as `BaseVAE`.

    Defaults alpha = 0, lambda_ = 1000 (KL weight 1, MMD weight 999): the full ELBO plus a
    heavily weighted MMD, the MMD setting Zhao et al. report on MNIST. alpha = 0, lambda_ = 1
    is the VAE (the MMD weight is 0); alpha = 1 drops the KL (recon + lambda * MMD).
    """

    def __init__(self, alpha: float = 0.0, lambda_: float = 1000.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0, **base):
        args = validate(InfoVAE, dict(alpha=alpha, lambda_=lambda_, kernel=kernel, scale=scale),
                        "model 'info_vae'", fill_defaults=False)
        if args["alpha"] > 1:
            raise ConfigError(f"model 'info_vae': alpha must be <= 1 (the KL weight is 1 - alpha), got {args['alpha']}")
        if args["alpha"] + args["lambda_"] - 1 < 0:
            raise ConfigError(f"model 'info_vae': alpha + lambda_ - 1 (the MMD weight) must be >= 0, "
                             f"got alpha={args['alpha']}, lambda_={args['lambda_']}")
        super().__init__(**base)
        self.alpha, self.lambda_ = args["alpha"], args["lambda_"]
        self._init_mmd(args["kernel"], args["scale"])

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "lambda_": self.lambda_, "kernel": self.kernel,
                "scale": self.scale}

    @property
    def mmd_weight(self) -> float:
        return self.alpha + self.lambda_ - 1.0

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The InfoVAE loss, with the ELBO terms of one z ~ q per example."""
        mmd, terms = self.mmd_and_terms(x, condition, training, seed)
        weight = tf.cast(self.kl_weight, tf.float32) * (1.0 - self.alpha)
        loss = -tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"])
        return TrainingLoss(loss + self.mmd_weight * mmd, terms)


@register("wae_mmd")
class WAEMMD(_MMDModel):
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
      Other args as `BaseVAE`.

    Default lambda_ = 10 with the IMQ kernel, as in Tolstikhin et al.'s MNIST experiments (there
    with a squared-error cost, so the balance with a Bernoulli NLL in nats differs).
    """

    def __init__(self, lambda_: NonNegativeFloat = 10.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0, **base):
        args = validate(WAEMMD, dict(lambda_=lambda_, kernel=kernel, scale=scale),
                        "model 'wae_mmd'", fill_defaults=False)
        super().__init__(**base)
        self.lambda_ = args["lambda_"]
        self._init_mmd(args["kernel"], args["scale"])

    def get_config(self):
        return {**super().get_config(), "lambda_": self.lambda_, "kernel": self.kernel, "scale": self.scale}

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The WAE-MMD loss, with the ELBO terms of one z ~ q per example as metrics."""
        mmd, terms = self.mmd_and_terms(x, condition, training, seed)
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"]) + self.lambda_ * mmd, terms)


__all__ = ["InfoVAE", "KERNELS", "WAEMMD", "imq_kernel", "mmd2", "rbf_kernel"]
