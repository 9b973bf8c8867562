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

with TFP's closed-form KL for both families (registered against `tfd.SphericalUniform`; for the
vMF with d = 2 or 3, log Z and I_{d/2}/I_{d/2-1} come from elementary functions and TF's i0e/i1e
kernels, `tfvae.parts.spherical.vmf_log_normalizer_and_mean_length`, not TFP's Bessel series):

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

The model `svae` is the VAE made of the parts in `tfvae.parts.spherical`: the prior
`spherical_uniform` and the posterior `power_spherical` or `von_mises_fisher` (`family`).
Any objective whose terms do not assume a Gaussian goes with them, e.g. class `vae` with
`prior: spherical_uniform`, `posterior: power_spherical`, `objective: {type: iwae, k: 5}`.
"""
from __future__ import annotations

from typing import Literal

from tfvae.config import validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.spherical import (MIN_CONCENTRATION, PowerSpherical, PowerSphericalPosterior, SphereDim,
                                   SphericalPosterior, SphericalUniformPrior, VonMisesFisher, VonMisesFisherPosterior,
                                   concentration, log_sphere_area, sample_power_spherical, spherical_uniform)
from tfvae.registry import register

@register("svae")
class SVAE(BaseVAE):
    """Hyperspherical VAE: q(z|x) on the unit sphere S^{d-1}, uniform prior, ELBO objective.

        loss = -E_q[log p(x|z)] + kl_weight * KL(q(z|x) || U(S^{d-1}))

    Args (besides `BaseVAE`'s, but `prior` and `posterior`):
      family: the posterior, "power_spherical" (default; reparameterised for every d) or
        "von_mises_fisher" (exact gradients for latent_dim = 3 only; warns otherwise).
      latent_dim: d >= 2, the dimension of the space the sphere lives in (z has d
        coordinates and d - 1 degrees of freedom). Hyperspherical latents suit small d;
        the default is 10. The encoder outputs d + 1 numbers per example.
    """

    fixed_parts = ("prior", "posterior")

    def __init__(self, family: Literal["power_spherical", "von_mises_fisher"] = "power_spherical",
                 latent_dim: SphereDim = 10, **base):
        self.family = validate(SVAE, dict(family=family, latent_dim=latent_dim), "model 'svae'",
                               fill_defaults=False)["family"]
        super().__init__(latent_dim=latent_dim, **with_fixed_parts(
            "svae", base, prior={"type": "spherical_uniform"}, posterior={"type": self.family}))

    def get_config(self):
        return {**super().get_config(), "family": self.family}


__all__ = ["MIN_CONCENTRATION", "PowerSpherical", "PowerSphericalPosterior", "SVAE",
           "SphericalPosterior", "SphericalUniformPrior", "VonMisesFisher", "VonMisesFisherPosterior",
           "concentration", "log_sphere_area", "sample_power_spherical", "spherical_uniform"]
