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


def vmf_log_normalizer_and_mean_length(d: int, kappa):
    """(log Z_d(kappa), A_d(kappa)) of vMF on S^{d-1} for d = 2 or 3 from elementary functions
    and TF's native Bessel kernels; None for any other d.

        Z_d(kappa) = (2 pi)^{d/2} I_{d/2-1}(kappa) / kappa^{d/2-1}   (density exp(kappa mu.z) / Z_d)
        A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = |E_q[z]|

    d = 2:  log Z = log 2 pi + |kappa| + log i0e(kappa),          A = i1e(kappa) / i0e(kappa);
    d = 3:  log Z = log 2 pi + kappa + log1p(-e^{-2 kappa}) - log kappa   (= log 4 pi sinh(kappa) / kappa),
            A = coth(kappa) - 1/kappa.
    For kappa -> 0 the d = 3 forms tend to log 4 pi and kappa / 3; below kappa = 1e-3 they
    use those limits' series (log 4 pi + kappa^2 / 6 and kappa / 3), exact to float32.
    TFP's general form (log_bessel_ive, bessel_iv_ratio) runs series and continued fractions
    in while loops whose gradients took ~15 s to trace into each compiled function; these
    trace in milliseconds and agree with it (tests/test_svae.py)."""
    two_pi = math.log(2.0 * math.pi)
    if d == 2:
        i0e, i1e = tf.math.special.bessel_i0e(kappa), tf.math.special.bessel_i1e(kappa)
        return two_pi + tf.abs(kappa) + tf.math.log(i0e), i1e / i0e     # |kappa|: gradient 0 at 0
    if d == 3:
        small = kappa < 1e-3
        safe = tf.where(small, tf.ones_like(kappa), kappa)
        log_z = two_pi + safe + tf.math.log1p(-tf.exp(-2.0 * safe)) - tf.math.log(safe)
        length = 1.0 / tf.math.tanh(safe) - 1.0 / safe
        return (tf.where(small, math.log(4.0 * math.pi) + kappa ** 2 / 6.0, log_z),
                tf.where(small, kappa / 3.0, length))
    return None


class VonMisesFisher(_ExactVariance, tfd.VonMisesFisher):
    """`tfd.VonMisesFisher` with an exact `stddev()`; for d = 2 and 3 its log-normalizer,
    mean, covariance and entropy (hence the KL to the uniform prior) come from
    `vmf_log_normalizer_and_mean_length`. Sampling is TFP's."""

    def _closed_forms(self, concentration=None):
        d = tf.compat.dimension_value(self.event_shape[-1])
        kappa = tf.convert_to_tensor(self.concentration if concentration is None else concentration)
        return vmf_log_normalizer_and_mean_length(d, kappa)

    def _log_normalization(self, concentration=None):
        forms = self._closed_forms(concentration)
        return super()._log_normalization(concentration) if forms is None else forms[0]

    def _mean(self):
        forms = self._closed_forms()
        return super()._mean() if forms is None else forms[1][..., tf.newaxis] * self.mean_direction

    def _covariance(self):
        """Cov[z] = (A / kappa) I + (1 - d A / kappa - A^2) mu mu^T."""
        forms = self._closed_forms()
        if forms is None:
            return super()._covariance()
        d = self.event_shape[-1]
        mu = tf.convert_to_tensor(self.mean_direction)
        kappa = tf.convert_to_tensor(self.concentration)
        positive = kappa > 0       # A / kappa -> 1 / d as kappa -> 0 (the uniform distribution)
        ratio = tf.where(positive, forms[1] / tf.where(positive, kappa, tf.ones_like(kappa)), 1.0 / d)
        ratio = ratio[..., tf.newaxis, tf.newaxis]
        outer = mu[..., :, tf.newaxis] * mu[..., tf.newaxis, :]
        return (ratio * tf.eye(d, dtype=self.dtype)
                + (1.0 - d * ratio - forms[1][..., tf.newaxis, tf.newaxis] ** 2) * outer)

    def _entropy(self):
        """H = log Z - kappa A."""
        forms = self._closed_forms()
        if forms is None:
            return super()._entropy()
        kappa = tf.convert_to_tensor(self.concentration)
        entropy = forms[0] - kappa * forms[1]
        return tf.broadcast_to(entropy, self.batch_shape_tensor())


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
           "log_sphere_area", "sample_power_spherical", "spherical_uniform",
           "vmf_log_normalizer_and_mean_length"]
