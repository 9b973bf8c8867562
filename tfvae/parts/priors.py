"""Priors p(z), chosen in config as `prior:`.

- `standard_normal`: N(0, I);
- `mixture`: a learned mixture of K diagonal Gaussians;
- `vamp`: the VampPrior (Tomczak & Welling 2018), (1/K) sum_k q(z|u_k) over K learned
  pseudo-inputs u_k in data space, the components the model's own posterior at them.

A prior's `distribution()` has batch shape [] and event shape [latent_dim]. Its weights are
created on the model it is attached to, under the names the zoo's weight files use.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, NonNegativeFloat, PositiveInt
from tfvae.distributions import (DiagonalGaussianMixture, FullCovarianceMixture, positive_scale, raw_scale,
                                 standard_normal)
from tfvae.inputs import check_batch
from tfvae.parts.base import Part, register_part

tfd = tfp.distributions

VAMP_INIT_MEAN, VAMP_INIT_STD = 0.05, 0.01   # initial pseudo-inputs in data space: u ~ N(0.05, 0.01^2)
UNIT_MARGIN = 1e-4                           # set_pseudo_inputs clips targets in [0, 1] to [m, 1 - m]


class Prior(Part):
    """p(z). `latent_space`: where z lives ("euclidean": R^latent_dim), which the posterior's
    must match."""

    latent_space = "euclidean"
    needs_posterior_density = False   # built from q(z|.) at other inputs: log q at any z

    def distribution(self) -> tfd.Distribution:
        raise NotImplementedError


@register_part("prior", "standard_normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def distribution(self) -> tfd.Distribution:
        return standard_normal(self.model.latent_dim)


@register_part("prior", "mixture")
class MixturePrior(Prior):
    """p(z) = sum_k softmax(logits)_k N(z; mu_k, diag(sigma_k^2)), all learned.

    Initialised with equal weights, scales 1 and means drawn from N(0, loc_init_stddev^2): a
    prior that starts close to N(0, I), whose components separate as they learn. Means drawn
    from N(0, 1) scattered ten unit-scale components ~7 apart in 50 dimensions, a prior far
    from where the encoder starts; on mog_prior_bmnist's short recipe (10 epochs) that cost
    7.5-9.7 nats of test log p(x) against a spread of 0.1 (two seeds), and the converged
    model kept only 9 active units.

    Args:
      components: K, the number of mixture components.
      loc_init_stddev: spread of the initial component means.
    """

    def __init__(self, components: PositiveInt = 10, loc_init_stddev: NonNegativeFloat = 0.1):
        super().__init__()
        self.components, self.loc_init_stddev = components, loc_init_stddev

    def get_config(self):
        return {"components": self.components, "loc_init_stddev": self.loc_init_stddev}

    def attach(self, model):
        super().attach(model)
        shape = (self.components, model.latent_dim)
        self.logits = model.add_weight(shape=(self.components,), initializer="zeros", name="prior_logits")
        self.locs = model.add_weight(shape=shape, initializer=keras.initializers.RandomNormal(stddev=self.loc_init_stddev,
                                                                                           seed=model.seed),
                                     name="prior_locs")
        self.raw_scales = model.add_weight(shape=shape, initializer=keras.initializers.Constant(float(raw_scale(1.0))),
                                           name="prior_raw_scales")

    def distribution(self) -> tfd.Distribution:
        components = tfd.MultivariateNormalDiag(loc=tf.cast(self.locs, tf.float32),
                                                scale_diag=positive_scale(tf.cast(self.raw_scales, tf.float32)))
        return DiagonalGaussianMixture(mixture_distribution=tfd.Categorical(logits=tf.cast(self.logits, tf.float32)),
                                       components_distribution=components)


@register_part("prior", "vamp")
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z|u_k): the model's posterior at K learned pseudo-inputs u_k.

    The pseudo-inputs live in data space: sigmoid of their raw weights for a Bernoulli
    likelihood (inside [0, 1]), the raw weights otherwise. Needs an unconditional model: the
    pseudo-inputs have no condition to pass to the encoder.

    Args:
      pseudo_inputs: K, the number of pseudo-inputs (mixture components).
    """

    needs_posterior_density = True

    def __init__(self, pseudo_inputs: PositiveInt = 500):
        super().__init__()
        self.pseudo_inputs_count = pseudo_inputs

    def get_config(self):
        return {"pseudo_inputs": self.pseudo_inputs_count}

    def attach(self, model):
        if model.condition_dim:
            raise ConfigError(f"prior 'vamp' needs an unconditional model: (1/K) sum_k q(z|u_k) has no condition "
                              f"to pass to the encoder; got condition_dim={model.condition_dim}, use 0")
        super().attach(model)
        self.bounded = model.likelihood.support == "unit_interval"
        if self.bounded:
            mean = math.log(VAMP_INIT_MEAN / (1 - VAMP_INIT_MEAN))
            std = VAMP_INIT_STD / (VAMP_INIT_MEAN * (1 - VAMP_INIT_MEAN))   # d logit/du at 0.05 times 0.01
        else:
            mean, std = VAMP_INIT_MEAN, VAMP_INIT_STD
        self.raw = model.add_weight(shape=(self.pseudo_inputs_count, *model.data_shape),
                                    initializer=keras.initializers.RandomNormal(mean=mean, stddev=std, seed=model.seed),
                                    name="raw_pseudo_inputs")

    def pseudo_inputs(self) -> tf.Tensor:
        """u [K, *data_shape]."""
        raw = tf.cast(self.raw, tf.float32)
        return tf.sigmoid(raw) if self.bounded else raw

    def set_pseudo_inputs(self, u):
        """Sets the pseudo-inputs to u [K, *data_shape], e.g. K training examples; for a
        Bernoulli likelihood u in [0, 1] is clipped to [1e-4, 1 - 1e-4], which the sigmoid can
        represent."""
        model = self.model
        u = check_batch(u, model.data_shape, "pseudo-inputs", model.likelihood.support).numpy()
        if u.shape[0] != self.pseudo_inputs_count:
            raise ValueError(f"expected {self.pseudo_inputs_count} pseudo-inputs, got {u.shape[0]}")
        if self.bounded:
            u = np.clip(u, UNIT_MARGIN, 1 - UNIT_MARGIN)
            u = np.log(u) - np.log1p(-u)
        self.raw.assign(u.astype(np.float32))

    def distribution(self) -> tfd.Distribution:
        # The encoder body directly: u is inside the support by construction, and the input
        # checks of `encode` would copy K images to numpy on every eager call.
        params = self.model.encoder_net(self.pseudo_inputs(), None, training=False)
        components = self.model.posterior_family.distribution(params)
        weights = tfd.Categorical(logits=tf.zeros([self.pseudo_inputs_count]))
        if isinstance(components, tfd.MultivariateNormalTriL):      # the full posterior
            return FullCovarianceMixture(mixture_distribution=weights, components_distribution=components)
        if isinstance(components, tfd.MultivariateNormalDiag):      # the diagonal posterior
            return DiagonalGaussianMixture(mixture_distribution=weights, components_distribution=components)
        return tfd.MixtureSameFamily(mixture_distribution=weights, components_distribution=components)


__all__ = ["MixturePrior", "Prior", "StandardNormalPrior", "VampPrior"]
