"""Per-example variational families for `optimize_posterior`.

A family maps a dict of unconstrained parameter tensors, each with a leading batch axis
[B, ...], to a distribution over z with batch shape [B] and event shape [L]: one separate
q(z|x_b) per example. Unconstrained parameters let plain gradient ascent move anywhere.

  diag  N(mu, diag(sigma^2)), sigma = softplus(raw) + eps                2L per example
  full  N(mu, S S^T), S lower triangular with a positive diagonal        L + L(L+1)/2
  flow  z = mu + S_0 h_K,  h_j = g_j(A_j h_{j-1} + c_j),  h_0 ~ N(0, I)   (K + 1)(L + L(L+1)/2) + 2KL
        g_j: sinh((arcsinh(u) + skew) * tail) elementwise (TFP's SinhArcsinh), A_j lower
        triangular: an affine-coupled normalizing flow with exact log-determinant.

Each family contains the one above it: full = diag with zero off-diagonals, flow = full
with identity layers g_j, A_j. Initialised from the encoder, every family starts exactly
at the encoder's q(z|x) (its mean and standard deviations), so an optimised q* can only
gain on the amortized q; initialised from the prior, at N(0, I).
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.distributions import SCALE_EPS, positive_scale, raw_scale

tfd, tfb = tfp.distributions, tfp.bijectors


def _fill_tril():
    return tfb.FillScaleTriL(diag_bijector=tfb.Softplus(), diag_shift=SCALE_EPS)


def _raw_tril_of_diagonal(scale):
    """Unconstrained vector [B, L(L+1)/2] of the lower-triangular matrix diag(scale)."""
    return _fill_tril().inverse(tf.linalg.diag(scale))


class DiagonalGaussianFamily:
    name = "diag"
    description = "diagonal Gaussian"

    def initial_params(self, mean, stddev) -> dict:
        return {"loc": mean, "raw_scale": raw_scale(stddev)}

    def distribution(self, params) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(loc=params["loc"], scale_diag=positive_scale(params["raw_scale"]))


class FullCovarianceGaussianFamily:
    name = "full"
    description = "full-covariance Gaussian"

    def initial_params(self, mean, stddev) -> dict:
        return {"loc": mean, "raw_tril": _raw_tril_of_diagonal(stddev)}

    def distribution(self, params) -> tfd.Distribution:
        return tfd.MultivariateNormalTriL(loc=params["loc"], scale_tril=_fill_tril()(params["raw_tril"]))


class FlowFamily:
    """Standard normal pushed through `layers` blocks (triangular affine map, then
    SinhArcsinh per dimension) and a final triangular affine map with shift mu."""

    name = "flow"

    def __init__(self, layers: int = 2):
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"a flow needs at least one layer, got layers={layers!r}")
        self.layers = layers
        self.description = f"normalizing flow ({layers} SinhArcsinh layers)"

    def initial_params(self, mean, stddev) -> dict:
        ones = tf.ones_like(mean)
        identity_tril = _raw_tril_of_diagonal(ones)
        params = {"loc": mean, "raw_tril": _raw_tril_of_diagonal(stddev)}
        for j in range(self.layers):
            params[f"shift_{j}"] = tf.zeros_like(mean)
            params[f"raw_tril_{j}"] = identity_tril
            params[f"skewness_{j}"] = tf.zeros_like(mean)
            params[f"raw_tailweight_{j}"] = raw_scale(ones)
        return params

    def distribution(self, params) -> tfd.Distribution:
        loc = params["loc"]
        fill = _fill_tril()
        steps = []                            # applied first to last
        for j in range(self.layers):
            steps += [tfb.ScaleMatvecTriL(fill(params[f"raw_tril_{j}"])), tfb.Shift(params[f"shift_{j}"]),
                      tfb.SinhArcsinh(skewness=params[f"skewness_{j}"],
                                      tailweight=positive_scale(params[f"raw_tailweight_{j}"]))]
        steps += [tfb.ScaleMatvecTriL(fill(params["raw_tril"])), tfb.Shift(loc)]
        base = tfd.MultivariateNormalDiag(loc=tf.zeros_like(loc), scale_diag=tf.ones_like(loc))
        return tfd.TransformedDistribution(base, tfb.Chain(steps[::-1]))


FAMILIES = {"diag": DiagonalGaussianFamily, "full": FullCovarianceGaussianFamily, "flow": FlowFamily}


def get_family(family):
    """A family object from a name in FAMILIES or a family object itself."""
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(f"unknown posterior family {family!r}; choose one of {sorted(FAMILIES)}")
        return FAMILIES[family]()
    if not (hasattr(family, "initial_params") and hasattr(family, "distribution")):
        raise ValueError(f"a posterior family is a name in {sorted(FAMILIES)} or an object with "
                         f"initial_params and distribution, got {family!r}")
    return family
