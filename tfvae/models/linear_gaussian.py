"""The linear-Gaussian VAE: the zoo's teaching model, where everything is closed form.

    p(z) = N(0, I_L),   p(x|z) = N(W z + b, Psi),   Psi = diag(sigma^2)

With Psi = s^2 I this is probabilistic PCA (Tipping & Bishop 1999); with a learned
per-dimension sigma it is factor analysis. The marginal and the posterior are Gaussian:

    p(x)   = N(x; b, W W^T + Psi)
    p(z|x) = N(z; P^-1 W^T Psi^-1 (x - b), P^-1),   P = I + W^T Psi^-1 W

The encoder is linear too, q(z|x) = N(A x + c, diag(softplus(A' x + c'))), so it can
represent the exact posterior whenever P is diagonal. Tests check every estimator of the
package (importance sampling, ELBO, posterior optimisation) against these formulas.
"""
from __future__ import annotations

from typing import Literal

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import PositiveFloat, PositiveInt
from tfvae.distributions import raw_scale
from tfvae.inputs import check_batch
from tfvae.models.base import BaseVAE
from tfvae.registry import register

tfd = tfp.distributions

LINEAR = {"type": "mlp", "hidden": []}


@register("linear_gaussian")
class LinearGaussian(BaseVAE):
    """Linear-Gaussian latent variable model with a linear amortized encoder.

    Args:
      data_dim: D, the size of x (data shape (D,)).
      latent_dim: L.
      noise_scale: sigma as a fixed number (PPCA) or "learned" (one sigma per dimension).
      kl, seed, name: as `BaseVAE`.
    """

    def __init__(self, data_dim: PositiveInt = 2, latent_dim: PositiveInt = 1,
                 noise_scale: PositiveFloat | Literal["learned"] = "learned",
                 kl: Literal["analytic", "monte_carlo"] = "analytic", seed: int = 0,
                 precision: Literal["float32", "mixed_bfloat16"] = "float32", name: str | None = None):
        super().__init__(data_shape=(data_dim,), latent_dim=latent_dim, encoder=LINEAR, decoder=LINEAR,
                         likelihood={"type": "gaussian", "scale": noise_scale}, kl=kl, seed=seed,
                         precision=precision, name=name)
        self.noise_scale = noise_scale

    def get_config(self):
        return {"data_dim": self.data_shape[0], "latent_dim": self.latent_dim, "noise_scale": self.noise_scale,
                "kl": self.kl_mode, "seed": self.seed, "name": self.name}

    # The decoder is one Dense layer: x_mean = z K + b, so W = K^T.
    def loading(self):
        """(W [D, L], b [D], sigma [D]) of the generative model."""
        out = self.decoder_net.out
        loc_params = tf.zeros([1, self.data_shape[0], 1])
        sigma = self.likelihood.distribution(loc_params).distribution.scale[0]
        return tf.transpose(out.kernel), out.bias, sigma

    def set_generative(self, W, b, sigma=None):
        """Sets W, b (and sigma when it is learned) of p(x|z); for tests and teaching."""
        self.decoder_net.out.kernel.assign(tf.transpose(tf.convert_to_tensor(W, tf.float32)))
        self.decoder_net.out.bias.assign(tf.convert_to_tensor(b, tf.float32))
        if sigma is not None:
            if self.noise_scale != "learned":
                raise ValueError("sigma is fixed in this model (noise_scale is a number)")
            self.likelihood.raw_scale.assign(raw_scale(sigma))

    def exact_marginal(self) -> tfd.Distribution:
        """p(x) = N(b, W W^T + Psi)."""
        W, b, sigma = self.loading()
        covariance = tf.matmul(W, W, transpose_b=True) + tf.linalg.diag(sigma**2)
        return tfd.MultivariateNormalTriL(loc=b, scale_tril=tf.linalg.cholesky(covariance))

    def exact_log_likelihood(self, x):
        """log p(x) per example, shape [B], in closed form."""
        x = check_batch(x, self.data_shape, "x")
        return self.exact_marginal().log_prob(x)

    def exact_posterior(self, x) -> tfd.Distribution:
        """p(z|x) = N(P^-1 W^T Psi^-1 (x - b), P^-1), batch shape [B]."""
        x = check_batch(x, self.data_shape, "x")
        W, b, sigma = self.loading()
        w_scaled = W / sigma[:, None] ** 2                                   # Psi^-1 W
        precision = tf.eye(self.latent_dim) + tf.matmul(W, w_scaled, transpose_a=True)
        covariance = tf.linalg.inv(precision)
        mean = tf.matmul(x - b, tf.matmul(w_scaled, covariance))             # rows: P^-1 W^T Psi^-1 (x-b)
        return tfd.MultivariateNormalTriL(loc=mean, scale_tril=tf.linalg.cholesky(covariance))
