"""Parts for z on the unit sphere S^{d-1} in R^d, d = latent_dim (the hyperspherical VAE).

- prior `spherical_uniform`: p(z) = 1 / |S^{d-1}|;
- posteriors `power_spherical` (De Cao & Aziz 2020) and `von_mises_fisher` (Davidson et al.
  2018): q(z|x) with mean direction mu = u(x) / |u(x)| and concentration
  kappa = softplus(r(x)) + 1 from the encoder's d + 1 numbers (u, r).

Their latent space is "sphere": they go with each other, not with the Euclidean parts.
`tfvae.models.svae` states the math (densities, KL, sampling, gradients); the model `svae` is
the VAE made of these parts.
"""
from __future__ import annotations

import math
import warnings
from typing import Annotated

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import Check, ConfigError
from tfvae.parts.base import register_part
from tfvae.parts.posteriors import Posterior
from tfvae.parts.priors import Prior

tfd = tfp.distributions

MIN_CONCENTRATION = 1.0  # kappa = softplus(raw) + MIN_CONCENTRATION

SphereDim = Annotated[int, Check(lambda v: v >= 2, ">= 2: z lies on the unit sphere S^{d-1} in R^d")]


class _ExactVariance:
    """Mixin: variance() (hence stddev()) as the diagonal of the closed-form covariance."""

    def _variance(self):
        return tf.linalg.diag_part(self.covariance())


def sample_power_spherical(mean_direction, concentration, n, seed):
    """n reparameterised draws from PowerSpherical(mu, kappa), [n, *batch, d].

    mean_direction: unit vectors [*batch, d] (d static, >= 2); concentration: [*batch] (or
    broadcastable); seed: a stateless seed (int32 [2]). With a = (d-1)/2 + kappa, b = (d-1)/2:

        t = (G_a - G_b) / (G_a + G_b),   sqrt(1 - t^2) = 2 sqrt(G_a G_b) / (G_a + G_b),
        y = [t, sqrt(1 - t^2) v],  v = w / |w|,  w ~ N(0, I_{d-1}),
        z = y - 2 (y.u) u,         u = (e_1 - mu) / |e_1 - mu|   (u = 0 when mu = e_1).
    """
    mu = tf.convert_to_tensor(mean_direction, tf.float32)
    kappa = tf.convert_to_tensor(concentration, tf.float32)
    d = mu.shape[-1]
    if d is None or d < 2:
        raise ValueError(f"the Power Spherical needs a static event size d >= 2, got mean_direction "
                         f"of shape {mu.shape}")
    batch = tf.broadcast_dynamic_shape(tf.shape(mu)[:-1], tf.shape(kappa))
    shape = tf.concat([[n], batch], axis=0)
    mu = tf.broadcast_to(mu, tf.concat([batch, [d]], axis=0))
    seed_a, seed_b, seed_v = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    half = 0.5 * (d - 1)
    g_a = tf.random.stateless_gamma(shape, seed=seed_a, alpha=half + kappa)
    g_b = tf.random.stateless_gamma(shape, seed=seed_b, alpha=tf.constant(half, tf.float32))
    total = g_a + g_b
    t = (g_a - g_b) / total
    radius = 2.0 * tf.sqrt(g_a * g_b) / total
    v = tf.math.l2_normalize(tf.random.stateless_normal(tf.concat([shape, [d - 1]], axis=0), seed=seed_v), axis=-1)
    y = tf.concat([t[..., tf.newaxis], radius[..., tf.newaxis] * v], axis=-1)
    u = tf.math.l2_normalize(tf.one_hot(0, d) - mu, axis=-1)
    return y - 2.0 * tf.reduce_sum(y * u, axis=-1, keepdims=True) * u


class PowerSpherical(_ExactVariance, tfd.PowerSpherical):
    """`tfd.PowerSpherical` (log_prob, KL, mean, covariance) with an exact `stddev()` and
    draws from `sample_power_spherical`."""

    def _sample_n(self, n, seed=None):
        seed = tf.cast(tfp.random.sanitize_seed(seed), tf.int32)
        return sample_power_spherical(self.mean_direction, self.concentration, n, seed)


class VonMisesFisher(_ExactVariance, tfd.VonMisesFisher):
    """`tfd.VonMisesFisher` with an exact `stddev()` (and KL, sampling, log_prob as TFP's)."""


def concentration(raw):
    """kappa = softplus(raw) + MIN_CONCENTRATION, elementwise."""
    return tf.nn.softplus(raw) + MIN_CONCENTRATION


def log_sphere_area(dimension: int) -> float:
    """log |S^{d-1}| = log 2 + (d/2) log pi - lgamma(d/2), for the sphere in R^d."""
    return math.log(2.0) + 0.5 * dimension * math.log(math.pi) - math.lgamma(0.5 * dimension)


def spherical_uniform(dimension: int) -> tfd.Distribution:
    """U(S^{d-1}): event shape [d], log_prob(z) = -log |S^{d-1}| for every unit z."""
    return tfd.SphericalUniform(dimension=dimension, dtype=tf.float32)


def check_sphere_dim(model, part):
    if model.latent_dim < 2:
        raise ConfigError(f"{part!r} puts z on the unit sphere S^(d-1) in R^d, d = latent_dim, which needs "
                          f"latent_dim >= 2; got {model.latent_dim}")


@register_part("prior", "spherical_uniform")
class SphericalUniformPrior(Prior):
    """p(z) = U(S^{d-1}) = 1 / |S^{d-1}|, event shape [latent_dim]."""

    latent_space = "sphere"

    def attach(self, model):
        check_sphere_dim(model, self)
        super().attach(model)

    def distribution(self) -> tfd.Distribution:
        return spherical_uniform(self.model.latent_dim)


class SphericalPosterior(Posterior):
    """q(z|x) on S^{d-1} from the encoder's raw output [..., d + 1]: the first d numbers give
    the mean direction mu = u / |u|, the last the concentration kappa (`concentration`).
    A reconstruction decodes mu, a point of the sphere (the Euclidean mean E_q[z] lies inside
    the ball, off the decoder's support)."""

    latent_space = "sphere"
    distribution_class: type = PowerSpherical

    def attach(self, model):
        check_sphere_dim(model, self)
        super().attach(model)

    def num_params(self, latent_dim: int) -> int:
        return latent_dim + 1

    def distribution(self, params) -> tfd.Distribution:
        """q with batch shape params.shape[:-1] and event shape [d]."""
        params = tf.cast(params, tf.float32)
        direction = tf.math.l2_normalize(params[..., :-1], axis=-1)
        return self.distribution_class(mean_direction=direction, concentration=concentration(params[..., -1]))

    def decode_point(self, q):
        return q.mean_direction


@register_part("posterior", "power_spherical")
class PowerSphericalPosterior(SphericalPosterior):
    """q(z|x) = PowerSpherical(mu(x), kappa(x)); reparameterised for every d. Its gamma draws
    have no XLA kernel, so a model with it trains without jit_compile."""

    distribution_class = PowerSpherical
    supports_jit = False


@register_part("posterior", "von_mises_fisher")
class VonMisesFisherPosterior(SphericalPosterior):
    """q(z|x) = vMF(mu(x), kappa(x)); exact gradients for d = 3 only (it warns otherwise;
    see `tfvae.models.svae`)."""

    distribution_class = VonMisesFisher

    def attach(self, model):
        super().attach(model)
        if model.latent_dim != 3:
            warnings.warn(
                f"posterior 'von_mises_fisher' with latent_dim={model.latent_dim} samples by rejection (Wood 1994); "
                f"its gradient with respect to the concentration omits the rejection correction term and is biased "
                f"(exact only for latent_dim=3). The posterior 'power_spherical' is exact for every latent_dim.",
                UserWarning, stacklevel=2)


__all__ = ["MIN_CONCENTRATION", "PowerSpherical", "PowerSphericalPosterior", "SphereDim", "SphericalPosterior",
           "SphericalUniformPrior", "VonMisesFisher", "VonMisesFisherPosterior", "concentration",
           "log_sphere_area", "sample_power_spherical", "spherical_uniform"]
