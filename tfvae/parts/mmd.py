"""Objectives with a maximum mean discrepancy between the aggregate posterior and the prior:
InfoVAE's `info_vae` (Zhao et al. 2017) and WAE-MMD's `wae` (Tolstikhin et al. 2018), with the
kernels and the unbiased MMD^2 estimator they share (`tfvae.models.mmd` has the math).

Both draw z_b ~ q(z|x_b) (one reparameterised draw per example, the one the reconstruction
term uses) and B draws z~_b ~ p(z) from the step's seed folded with 1, and take `mmd2`
between them over the batch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import tensorflow as tf

from tfvae.config import ConfigError, NonNegativeFloat, PositiveFloat
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss

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


def mmd_and_terms(model, x, condition, training, seed, kernel, scale):
    """(MMD^2_u between z_b ~ q(z|x_b) and B draws of p(z), per-example ELBO terms). One seed
    drives both: the posterior draw uses it as `elbo_terms` would (so the terms equal
    `elbo_terms(x, 1, seed=seed)`), the prior draws use it folded in with 1."""
    seed = model._seed(seed)
    q, z, log_qz, log_px_z = model._sample_posterior(x, 1, condition, seed, None, training)
    terms = model.bound_terms(tf.reduce_mean(log_px_z, axis=0), q, z, log_qz)
    z_q = z[0]
    z_p = model.prior().sample(tf.shape(z_q)[0], seed=tf.random.experimental.stateless_fold_in(seed, 1))
    return mmd2(z_q, z_p, kernel, scale), terms


@register_part("objective", "info_vae")
class InfoVAEObjective(Objective):
    """loss = -E_q[log p(x|z)] + (1 - alpha) w KL + (alpha + lambda_ - 1) MMD^2(q(z), p(z)), w the
    KL warm-up weight (the KL only).

    Args:
      alpha: sets the KL weight 1 - alpha (<= 1).
      lambda_: with alpha, the MMD weight alpha + lambda_ - 1 (>= 0).
      kernel: "imq" or "rbf"; scale: the prior scale in the kernels' bandwidth.
    """

    def __init__(self, alpha: float = 0.0, lambda_: float = 1000.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0):
        super().__init__()
        if alpha > 1:
            raise ConfigError(f"objective 'info_vae': alpha must be <= 1 (the KL weight is 1 - alpha), got {alpha}")
        if alpha + lambda_ - 1 < 0:
            raise ConfigError(f"objective 'info_vae': alpha + lambda_ - 1 (the MMD weight) must be >= 0, "
                              f"got alpha={alpha}, lambda_={lambda_}")
        self.alpha, self.lambda_, self.kernel, self.scale = alpha, lambda_, kernel, scale

    def get_config(self):
        return {"alpha": self.alpha, "lambda_": self.lambda_, "kernel": self.kernel, "scale": self.scale}

    @property
    def mmd_weight(self) -> float:
        return self.alpha + self.lambda_ - 1.0

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        mmd, terms = mmd_and_terms(model, x, condition, training, seed, self.kernel, self.scale)
        weight = tf.cast(model.kl_weight, tf.float32) * (1.0 - self.alpha)
        loss = -tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"])
        return TrainingLoss(loss + self.mmd_weight * mmd, terms)


@register_part("objective", "wae")
class WAEObjective(Objective):
    """loss = -E_q[log p(x|z)] + lambda_ MMD^2(q(z), p(z)), no KL (the ELBO terms are still
    reported).

    Args:
      lambda_: weight of MMD^2.
      kernel: "imq" (the paper's choice) or "rbf"; scale: the prior scale in the bandwidth.
    """

    def __init__(self, lambda_: NonNegativeFloat = 10.0, kernel: Literal["rbf", "imq"] = "imq",
                 scale: PositiveFloat = 1.0):
        super().__init__()
        self.lambda_, self.kernel, self.scale = lambda_, kernel, scale

    def get_config(self):
        return {"lambda_": self.lambda_, "kernel": self.kernel, "scale": self.scale}

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        mmd, terms = mmd_and_terms(model, x, condition, training, seed, self.kernel, self.scale)
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"]) + self.lambda_ * mmd, terms)


__all__ = ["InfoVAEObjective", "KERNELS", "WAEObjective", "imq_kernel", "mmd2", "mmd_and_terms", "rbf_kernel"]
