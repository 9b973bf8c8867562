"""Hyperspherical VAE (S-VAE): z on the unit sphere S^{d-1} in R^d, d = latent_dim.

Davidson, Falorsi, De Cao, Kipf & Tomczak 2018 ("Hyperspherical Variational Auto-Encoders")
with a von Mises-Fisher posterior; De Cao & Aziz 2020 ("The Power Spherical distribution")
with a Power Spherical one. The prior is uniform on the sphere:

    p(z)   = 1 / A_d,   A_d = |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2)
    q(z|x) = vMF(z; mu, kappa)  ∝ exp(kappa mu.z)             family "von_mises_fisher"
           = PS(z; mu, kappa)   ∝ (1 + mu.z)^kappa            family "power_spherical"

with mu = u(x) / |u(x)| and kappa = softplus(r(x)) + 1, where (u, r), d + 1 numbers, is
the encoder's output. kappa >= 1 keeps q away from the uniform distribution (kappa = 0),
where a posterior carries no information about x. The ELBO is the VAE's,

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || U(S^{d-1})),   KL = -H(q) + log A_d,

with TFP's closed-form KL for both families (registered against `tfd.SphericalUniform`):

    PS:  H = log C(kappa) - kappa (log 2 + psi(a) - psi(a + b)),
         C = 2^{a+b} pi^b Gamma(a) / Gamma(a + b),  a = (d-1)/2 + kappa,  b = (d-1)/2
    vMF: H = -kappa I_{d/2}(kappa) / I_{d/2-1}(kappa) + log[(2 pi)^{d/2} I_{d/2-1}(kappa) / kappa^{d/2-1}]

Sampling and gradients (TFP 0.25, checked in tests/test_svae.py):
  * power_spherical (default): z = H(mu) [t, sqrt(1 - t^2) v] with v uniform on S^{d-2},
    (t + 1)/2 ~ Beta(a, b) drawn as G_a / (G_a + G_b), G_c ~ Gamma(c), and H(mu) the
    Householder reflection taking e_1 to mu. Fully reparameterised for every d >= 2 (the
    gamma draws have implicit reparameterisation gradients), no rejection loop.
    `sample_power_spherical` draws the gammas with `tf.random.stateless_gamma` rather than
    through TFP's Beta sampler: TFP picks its gamma sampler at run time, and a reloaded
    SavedModel drew differently from Python for the same seed, which broke the export's
    elbo = model.elbo_terms(x, seed=[seed, 0]) contract. The price: XLA has no kernel for
    stateless_gamma, so this family does not train with jit_compile=True (the model sets
    `supports_jit = False`, so Keras' default jit_compile="auto" stays off XLA on GPUs).
  * von_mises_fisher: for d = 3, t comes from the inverse CDF and the gradient is exact.
    For d != 3, t comes from Wood's (1994) rejection sampler, which TFP runs for any d
    (its docstring's "d <= 5" is not enforced; density, KL and samples agree with
    quadrature up to d = 50 at least). TFP marks it NOT_REPARAMETERIZED, yet gradients
    still flow through the accepted proposal: the gradient with respect to mu is exact,
    the one with respect to kappa lacks the correction term of Davidson et al.'s
    estimator and is biased (about 20% too small at d = 4, kappa = 2; 5% at d = 10,
    kappa = 20). Its Beta draws come from TFP's run-time-selected gamma sampler, so the
    draws for a seed can differ between Python and an exported model. The model warns when
    built that way; use power_spherical for d != 3.

Importance sampling (log p(x), the `log_likelihood` export endpoint) uses q as the proposal.
The PS density vanishes at -mu, so the weights w = p(x|z) p(z) / q(z|x) are unbounded near
-mu: P(w > W) falls like W^{-1 - (d-1)/(2 kappa)}, an infinite variance whenever
2 kappa >= d - 1. The estimates stay consistent, and for a trained model the region near -mu
carries a negligible p(x|z), but log p(x) estimates scatter more than with the vMF, whose
density there is exp(-2 kappa) times its peak (on a tiny trained model, the spread over seeds
at k = 1000 was 2-4 times the vMF's). `importance_sampling(..., proposal=...)` takes any
other proposal, e.g. a mixture of q with the uniform prior.

Neither TFP class has stddev(): the classes returned by `encode` add the exact diagonal of
their closed-form covariance, so `tfvae.distributions.moments` (used by the `encode`
export endpoint) is exact. `reconstruct` decodes the mean direction mu, a point of the
sphere, not the Euclidean mean E_q[z] (|E_q[z]| < 1 lies off the decoder's support).
"""
from __future__ import annotations

import math
import warnings
from typing import Annotated, Literal

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import Check, validate
from tfvae.models.base import BaseVAE
from tfvae.registry import register

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


class SphericalPosterior:
    """Maps the encoder's raw output [..., d + 1] to q(z|x) on S^{d-1}: the first d numbers
    give the mean direction mu = u / |u|, the last the concentration kappa (`concentration`).
    Subclasses name the distribution class."""

    distribution_class: type = PowerSpherical

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return latent_dim + 1

    @classmethod
    def distribution(cls, params) -> tfd.Distribution:
        """q with batch shape params.shape[:-1] and event shape [d]."""
        params = tf.cast(params, tf.float32)
        direction = tf.math.l2_normalize(params[..., :-1], axis=-1)
        return cls.distribution_class(mean_direction=direction, concentration=concentration(params[..., -1]))


class PowerSphericalPosterior(SphericalPosterior):
    """q(z|x) = PowerSpherical(mu(x), kappa(x)); fully reparameterised for every d."""

    distribution_class = PowerSpherical


class VonMisesFisherPosterior(SphericalPosterior):
    """q(z|x) = vMF(mu(x), kappa(x)); exact gradients for d = 3 only (see the module docstring)."""

    distribution_class = VonMisesFisher


FAMILIES = {"power_spherical": PowerSphericalPosterior, "von_mises_fisher": VonMisesFisherPosterior}


def log_sphere_area(dimension: int) -> float:
    """log |S^{d-1}| = log 2 + (d/2) log pi - lgamma(d/2), for the sphere in R^d."""
    return math.log(2.0) + 0.5 * dimension * math.log(math.pi) - math.lgamma(0.5 * dimension)


def spherical_uniform(dimension: int) -> tfd.Distribution:
    """U(S^{d-1}): event shape [d], log_prob(z) = -log |S^{d-1}| for every unit z."""
    return tfd.SphericalUniform(dimension=dimension, dtype=tf.float32)


@register("svae")
class SVAE(BaseVAE):
    """Hyperspherical VAE: q(z|x) on the unit sphere S^{d-1}, uniform prior, ELBO objective.

        loss = -E_q[log p(x|z)] + kl_weight * KL(q(z|x) || U(S^{d-1}))

    Args:
      family: "power_spherical" (default; reparameterised for every d) or
        "von_mises_fisher" (exact gradients for latent_dim = 3 only; warns otherwise).
      latent_dim: d >= 2, the dimension of the space the sphere lives in (z has d
        coordinates and d - 1 degrees of freedom). Hyperspherical latents suit small d;
        the default is 10.
      Other args as `BaseVAE`. The encoder outputs d + 1 numbers per example.
    """

    euclidean_latent = False

    def __init__(self, family: Literal["power_spherical", "von_mises_fisher"] = "power_spherical",
                 latent_dim: SphereDim = 10, **base):
        args = validate(SVAE, dict(family=family, latent_dim=latent_dim), "model 'svae'", fill_defaults=False)
        self.family = args["family"]
        # Read by encoder_output_units() during BaseVAE.__init__.
        self.posterior_family = FAMILIES[self.family]
        if self.family == "von_mises_fisher" and args["latent_dim"] != 3:
            warnings.warn(
                f"model 'svae': von_mises_fisher with latent_dim={args['latent_dim']} samples by rejection "
                f"(Wood 1994); its gradient with respect to the concentration omits the rejection correction "
                f"term and is biased (exact only for latent_dim=3). family='power_spherical' is exact for "
                f"every latent_dim.", UserWarning, stacklevel=2)
        super().__init__(latent_dim=latent_dim, **base)
        # XLA has no kernel for the stateless gamma draws of `sample_power_spherical`.
        self.supports_jit = self.family != "power_spherical"

    def get_config(self):
        return {**super().get_config(), "family": self.family}

    def prior(self) -> tfd.Distribution:
        """p(z) = U(S^{d-1}), event shape [latent_dim]."""
        return spherical_uniform(self.latent_dim)

    def reconstruct(self, x, condition=None, training=False):
        """Mean of p(x | z = mu(x)), [B, *data_shape]: the decoder at q's mean direction (its
        mode, on the sphere), not at the Euclidean mean E_q[z], which lies inside the ball."""
        q = self.encode(x, condition, training=training)
        return self.decode(q.mean_direction, condition, training=training).mean()


__all__ = ["FAMILIES", "MIN_CONCENTRATION", "PowerSpherical", "PowerSphericalPosterior", "SVAE",
           "SphericalPosterior", "VonMisesFisher", "VonMisesFisherPosterior", "concentration",
           "log_sphere_area", "sample_power_spherical", "spherical_uniform"]
