"""Likelihood heads p(x|z), posterior families q(z|x) and priors p(z), as TFP distributions.

A likelihood head turns the decoder's raw output, shaped ``[..., *data_shape, params_per_dim]``,
into a distribution whose event shape is the data shape, so that ``log_prob(x)`` is the sum
of the per-pixel log-densities (nats per example). Parameters are cast to float32 first, so
log-probabilities stay float32 under mixed precision.

Heads are Keras layers because some own weights (a learned Gaussian scale); they are used
through `distribution(params)`, never called like ordinary layers.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import seeds
from tfvae.config import ConfigError, PositiveFloat, validate
from tfvae.registry import close_matches_message

tfd = tfp.distributions

SCALE_EPS = 1e-4  # lower bound on every learned scale: softplus(raw) + SCALE_EPS


def positive_scale(raw):
    """softplus(raw) + SCALE_EPS: a scale that is positive and bounded away from 0."""
    return tf.nn.softplus(raw) + SCALE_EPS


def raw_scale(scale):
    """The inverse of `positive_scale`: raw with positive_scale(raw) = scale (> SCALE_EPS)."""
    return tfp.math.softplus_inverse(tf.convert_to_tensor(scale, tf.float32) - SCALE_EPS)


class Likelihood(keras.layers.Layer):
    """Base of the likelihood heads.

    Attributes:
      params_per_dim: how many decoder outputs each data dimension takes.
      support: "unit_interval" (data must lie in [0, 1]) or "real".
    """

    params_per_dim = 1
    support = "real"

    def __init__(self, data_shape, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = tuple(data_shape)

    def build(self, input_shape=None):
        self.built = True

    def distribution(self, params) -> tfd.Distribution:
        raise NotImplementedError

    def _independent(self, base):
        return tfd.Independent(base, reinterpreted_batch_ndims=len(self.data_shape))


def _broadcast_reduction_axes(a, b):
    """The axes over which the gradients of a and b, broadcast against each other, sum back
    to their own shapes: Python lists when both static shapes are known, else
    BroadcastGradientArgs of the run-time shapes. Static axes matter under XLA: in a
    second-order gradient (the SA-VAE's step differentiates this kernel's gradient) run-time
    axes must be compile-time constants, and tf2xla then bakes the values they are traced
    from, the model's variables included, into the program and recompiles it at every step."""
    if not (a.shape.is_fully_defined() and b.shape.is_fully_defined()):
        return tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(a), s1=tf.shape(b))
    shape_a, shape_b = a.shape.as_list(), b.shape.as_list()
    rank = max(len(shape_a), len(shape_b))
    shape_a, shape_b = [1] * (rank - len(shape_a)) + shape_a, [1] * (rank - len(shape_b)) + shape_b
    broadcast = [max(m, n) for m, n in zip(shape_a, shape_b)]
    return ([i for i in range(rank) if shape_a[i] == 1 and broadcast[i] != 1],
            [i for i in range(rank) if shape_b[i] == 1 and broadcast[i] != 1])


@tf.function(jit_compile=True, autograph=False)
def _bernoulli_log_prob_sum(logits, x, event_ndims):
    """sum over the last `event_ndims` axes of x * l - softplus(l), as one XLA kernel;
    logits and x broadcast against each other.

    softplus(l) = max(l, 0) + log(1 + exp(-|l|)). log(1 + t) rather than log1p(t), t in (0, 1],
    is a third faster in XLA's CPU code; rounding 1 + t costs at most 2^-24 nats per pixel,
    below the float32 round-off of the sum itself. The gradient is given in closed form,
    d/dl = x - sigmoid(l) and d/dx = l (summed over broadcast axes): differentiating the
    max and |.| above would give x instead of x - 1/2 at l = 0 exactly.
    """
    axes = list(range(-event_ndims, 0))

    @tf.custom_gradient
    def log_prob_sum(logits, x):
        log_bernoulli = x * logits - tf.nn.relu(logits) - tf.math.log(1.0 + tf.exp(-tf.abs(logits)))

        def gradient(upstream):
            upstream = tf.reshape(upstream, tf.concat([tf.shape(upstream), tf.ones([event_ndims], tf.int32)], 0))
            logits_axes, x_axes = _broadcast_reduction_axes(logits, x)
            d_logits = tf.reduce_sum(upstream * (x - tf.sigmoid(logits)), logits_axes)
            d_x = tf.reduce_sum(upstream * logits, x_axes)
            return tf.reshape(d_logits, tf.shape(logits)), tf.reshape(d_x, tf.shape(x))

        return tf.reduce_sum(log_bernoulli, axes), gradient

    return log_prob_sum(logits, x)


class IndependentBernoulli(tfd.Independent):
    """prod_d Bernoulli(x_d; sigmoid(logit_d)) over the event dimensions, with

        log p(x) = sum_d x_d * logit_d - softplus(logit_d)

    (the negative binary cross-entropy with logits). For finite logits this equals TFP's
    Independent(Bernoulli).log_prob to float32 round-off, since softplus(-l) = softplus(l) - l;
    an infinite logit gives NaN here where TFP gives 0 or -inf.

    The sum is one XLA-compiled kernel that reads the logits once, where TFP's form makes about
    eight elementwise passes (two softplus) and a separate reduction. With k importance
    samples this dominates everything but the decoder's matmuls: for an MLP VAE on 784 pixels
    at k=5000 on a 2-core CPU, `tfvae bench --only iwae-eval` measured `tfvae.log_likelihood` at
    ~20 examples/s with TFP's form, 23-24 with a one-softplus TensorFlow form and 27-29 with
    this kernel. x broadcasts against the logits inside the kernel (e.g. [B, D] against
    [k, B, D]) without being copied k times.
    """

    def _log_prob(self, x):
        logits = tf.convert_to_tensor(self.distribution.logits_parameter())
        return _bernoulli_log_prob_sum(logits, tf.cast(x, logits.dtype), len(self.event_shape))


class BernoulliLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logit_d)); accepts x in [0, 1] (soft targets)."""

    support = "unit_interval"

    def distribution(self, params):
        logits = tf.cast(params[..., 0], tf.float32)
        return IndependentBernoulli(tfd.Bernoulli(logits=logits, dtype=tf.float32),
                                    reinterpreted_batch_ndims=len(self.data_shape))


class GaussianLikelihood(Likelihood):
    """p(x|z) = prod_d N(x_d; mu_d, sigma_d^2).

    scale: a number (fixed sigma), "learned" (one trainable sigma per data dimension,
    independent of z) or "predicted" (the decoder outputs sigma_d(z) as well).
    """

    def __init__(self, data_shape, scale="learned", **kwargs):
        super().__init__(data_shape, **kwargs)
        self.scale = scale
        self.params_per_dim = 2 if scale == "predicted" else 1

    def build(self, input_shape=None):
        if self.scale == "learned":
            # softplus(0.5413) + eps ~= 1: start from unit variance.
            self.raw_scale = self.add_weight(
                shape=self.data_shape, initializer=keras.initializers.Constant(0.5413), name="raw_scale")
        self.built = True

    def distribution(self, params):
        params = tf.cast(params, tf.float32)
        loc = params[..., 0]
        if self.scale == "predicted":
            scale = positive_scale(params[..., 1])
        elif self.scale == "learned":
            scale = positive_scale(tf.cast(self.raw_scale, tf.float32)) * tf.ones_like(loc)
        else:
            scale = tf.fill(tf.shape(loc), tf.constant(float(self.scale), tf.float32))
        return self._independent(tfd.Normal(loc=loc, scale=scale))


@dataclasses.dataclass(frozen=True)
class BernoulliSpec:
    type: Literal["bernoulli"] = "bernoulli"


@dataclasses.dataclass(frozen=True)
class GaussianSpec:
    type: Literal["gaussian"] = "gaussian"
    scale: PositiveFloat | Literal["learned", "predicted"] = "learned"


LIKELIHOODS = {
    "bernoulli": (BernoulliSpec, BernoulliLikelihood),
    "gaussian": (GaussianSpec, GaussianLikelihood),
}


def normalize_spec(spec, registry: Mapping, kind: str) -> dict:
    """A validated spec dict from a name ("bernoulli") or a mapping ({"type": ..., ...})."""
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"a {kind} is a name or a mapping with a 'type' key, got {spec!r}")
    if spec["type"] not in registry:
        raise ConfigError(close_matches_message(kind, spec["type"], registry))
    return validate(registry[spec["type"]][0], spec, f"{kind} {spec['type']!r}")


def build_likelihood(spec, data_shape) -> Likelihood:
    """The likelihood head named by `spec` for data of shape `data_shape`."""
    spec = normalize_spec(spec, LIKELIHOODS, "likelihood")
    layer_cls = LIKELIHOODS[spec.pop("type")][1]
    return layer_cls(data_shape, **spec, name="likelihood")


_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class DiagonalNormal(tfd.MultivariateNormalDiag):
    """N(loc, diag(scale_diag^2)), TFP's `MultivariateNormalDiag` with its draws made by
    `tfvae.seeds.normal` (Philox keyed by the seed), reparameterised:

        z = loc + scale * eps,  eps ~ N(0, I);
        log N(z; loc, scale) = sum_l [-eps_l^2 / 2 - log scale_l] - (L/2) log(2 pi)

    `experimental_sample_and_log_prob` takes log q from eps directly, without inverting z.
    Densities, moments and KL divergences are TFP's. A seed follows TFP's rules
    (`tfp.random.sanitize_seed`: a stateless [2] seed, or None / an int for a stateful draw).
    Why not TFP's own draws: `tfvae.seeds` (under XLA they cost a third of a training step).
    """

    def _noise(self, sample_shape, seed):
        shape = tf.concat([tf.reshape(tf.cast(sample_shape, tf.int32), [-1]), self.batch_shape_tensor(),
                           self.event_shape_tensor()], axis=0)
        return seeds.normal(shape, tfp.random.sanitize_seed(seed), self.dtype)

    def _affine(self, eps):
        scale = self.scale_diag_parameter()
        return eps * scale if self.loc is None else self.loc + eps * scale

    def scale_diag_parameter(self):
        """The diagonal of the scale, a tensor (TFP keeps a LinearOperatorDiag)."""
        return tf.convert_to_tensor(self._scale_diag) if self._scale_diag is not None else tf.ones_like(self.loc)

    def _call_sample_n(self, sample_shape, seed, **kwargs):
        # TFP's MultivariateNormalDiag is a TransformedDistribution, which samples through
        # `_call_sample_n` (not `_sample_n`): overridden here, so that `sample` draws the same
        # z as `experimental_sample_and_log_prob` from one seed.
        return self._affine(self._noise(sample_shape, seed))

    def _sample_and_log_prob(self, sample_shape, seed):
        eps = self._noise(sample_shape, seed)
        log_prob = (-0.5 * tf.reduce_sum(tf.square(eps), axis=-1)
                    - tf.reduce_sum(tf.math.log(self.scale_diag_parameter()), axis=-1)
                    - tf.cast(tf.shape(eps)[-1], eps.dtype) * _HALF_LOG_TWO_PI)
        return self._affine(eps), log_prob


class DiagonalGaussianPosterior:
    """q(z|x) = N(mu(x), diag(sigma(x)^2)), sigma = softplus(raw) + eps; 2 * latent_dim params."""

    @staticmethod
    def num_params(latent_dim: int) -> int:
        return 2 * latent_dim

    @staticmethod
    def distribution(params) -> tfd.Distribution:
        params = tf.cast(params, tf.float32)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        return DiagonalNormal(loc=loc, scale_diag=positive_scale(raw_scale))


class _GaussianComponentMixture(tfd.MixtureSameFamily):
    """A MixtureSameFamily over K Gaussian components of `component_class`, batch shape [K]."""

    component_class: type = tfd.Distribution

    def __init__(self, mixture_distribution, components_distribution, **kwargs):
        if not isinstance(components_distribution, self.component_class):
            raise TypeError(f"components must be a {self.component_class.__name__}, "
                            f"got {type(components_distribution).__name__}")
        if components_distribution.batch_shape.rank != 1:
            raise ValueError(f"components must have batch shape [K], got {components_distribution.batch_shape}")
        super().__init__(mixture_distribution, components_distribution, **kwargs)


class FullCovarianceMixture(_GaussianComponentMixture):
    """sum_k pi_k N(z; mu_k, L_k L_k^T) over K full-covariance Gaussian components (batch
    shape [K]) with a log_prob that never broadcasts the K scale matrices against the draws.

        log N(z; mu_k, L_k L_k^T) = -|y_k|^2 / 2 - sum_i log L_k,ii - (d/2) log 2 pi,
        y_k = L_k^{-1} (z - mu_k),

    solved for all N draws at once per component: K triangular solves of an [L, N] right-hand
    side. TFP's MultivariateNormalTriL.log_prob of draws shaped [N, 1, L] broadcasts L_k to
    [N, K, L, L] (6.6 GB for a VampPrior with K = 500, L = 40 and 1,000 draws), this holds
    [K, L, N]. Sampling, the mean and the rest are MixtureSameFamily's."""

    component_class = tfd.MultivariateNormalTriL

    def _log_prob(self, x):
        components = self.components_distribution
        loc = tf.convert_to_tensor(components.loc)                                 # [K, L]
        scale_tril = components.scale.to_dense()                                  # [K, L, L]
        x = tf.convert_to_tensor(x, loc.dtype)
        dim = loc.shape[-1]
        draws = tf.reshape(x, [-1, dim])                                          # [N, L]
        centred = tf.transpose(draws)[tf.newaxis] - loc[..., tf.newaxis]          # [K, L, N]
        solved = tf.linalg.triangular_solve(scale_tril, centred, lower=True)      # [K, L, N]
        log_det = tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(scale_tril))), axis=-1)   # [K]
        log_components = (-0.5 * tf.reduce_sum(tf.square(solved), axis=-2) - log_det[:, tf.newaxis]
                          - 0.5 * dim * math.log(2 * math.pi))                    # [K, N]
        log_weights = tf.math.log_softmax(self.mixture_distribution.logits_parameter())   # [K]
        log_prob = tf.reduce_logsumexp(log_components + log_weights[:, tf.newaxis], axis=0)   # [N]
        return tf.reshape(log_prob, tf.shape(x)[:-1])


class DiagonalGaussianMixture(_GaussianComponentMixture):
    """sum_k pi_k N(z; mu_k, diag(sigma_k^2)) over K diagonal Gaussian components (batch shape
    [K]) with a log_prob by matrix products instead of a [N, K, L] tensor of differences:

        sum_l (z_l - mu_kl)^2 / sigma_kl^2 = z^2 . a_k - 2 z . b_k + c_k,
        a_k = 1 / sigma_k^2,  b_k = mu_k / sigma_k^2,  c_k = sum_l mu_kl^2 / sigma_kl^2,

    two [N, L] x [L, K] products. The three terms cancel where z is near mu_k and sigma_k is
    small (each is about (z / sigma)^2), so they are formed in float64, whose rounding stays
    below 1e-9 nats for |z| / sigma up to 1e3; the result is float32. TFP's MixtureSameFamily
    holds the [N, K, L] differences: for a VampPrior (K = 500, L = 40) and one importance-
    sampling chunk of 65,536 draws, 5.2 GB and 11.6 s on 2 cores, against 0.7 s here.
    Sampling, the mean and the rest are TFP's."""

    component_class = tfd.MultivariateNormalDiag

    def _log_prob(self, x):
        components = self.components_distribution
        loc = tf.cast(tf.convert_to_tensor(components.loc), tf.float64)                  # [K, L]
        scale = tf.cast(components.stddev(), tf.float64)                                 # [K, L]
        x = tf.convert_to_tensor(x, tf.float32)
        dim = loc.shape[-1]
        draws = tf.cast(tf.reshape(x, [-1, dim]), tf.float64)                            # [N, L]
        precision = 1.0 / tf.square(scale)
        quadratic = (tf.matmul(tf.square(draws), precision, transpose_b=True)
                     - 2.0 * tf.matmul(draws, loc * precision, transpose_b=True)
                     + tf.reduce_sum(tf.square(loc) * precision, axis=-1))                 # [N, K]
        log_components = (-0.5 * quadratic - tf.reduce_sum(tf.math.log(scale), axis=-1)
                          - 0.5 * dim * math.log(2 * math.pi))
        log_weights = tf.cast(tf.math.log_softmax(self.mixture_distribution.logits_parameter()), tf.float64)
        log_prob = tf.reduce_logsumexp(log_components + log_weights, axis=-1)           # [N]
        return tf.reshape(tf.cast(log_prob, tf.float32), tf.shape(x)[:-1])


def standard_normal(latent_dim: int) -> tfd.Distribution:
    """p(z) = N(0, I) with event shape [latent_dim]."""
    return DiagonalNormal(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


def moments(q, seed=(0, 0), samples: int = 256):
    """(mean, standard deviation), each [B, L], of a distribution over z: exact when TFP
    has them, else the distribution's own `estimate_moments(samples, seed)` if it has one
    (a two-layer chain's), else estimated from `samples` draws (e.g. for a flow posterior)."""
    try:
        return q.mean(), q.stddev()
    except NotImplementedError:
        if hasattr(q, "estimate_moments"):
            return q.estimate_moments(samples, seeds.as_seed(seed))
        z = q.sample(samples, seed=seeds.as_seed(seed))
        return tf.reduce_mean(z, 0), tf.math.reduce_std(z, 0) + SCALE_EPS
