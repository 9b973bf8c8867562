"""VAE with a VampPrior (Tomczak & Welling 2018): the prior is the encoder's own posterior,
averaged over K learned pseudo-inputs u_1..u_K of the data's shape,

    p(z) = (1/K) sum_k q(z | u_k).

The optimal prior for the ELBO is the aggregated posterior (1/N) sum_n q(z | x_n); the
VampPrior approximates it with K << N learned points. Prior and encoder share weights, so
the prior moves whenever the encoder does.

Pseudo-inputs stay inside the data's support, so the encoder only sees the kind of input it
is trained on (its input checks would refuse others): for a Bernoulli likelihood
u = sigmoid(raw), in [0, 1]; for a real-valued likelihood u = raw. The paper clips a linear
layer to [0, 1] with a hard tanh instead, whose gradient is zero outside that interval; the
sigmoid's never is (it reaches 0 or 1 only by float32 saturation, still inside [0, 1]).
The pseudo-inputs start as near-blank images, u ~ 0.05 +- 0.01 in data space (under the
sigmoid raw ~ N(logit(0.05), 0.21): its slope at 0.05 maps 0.21 to ~0.01), in the spirit of
the authors' code, which draws the pseudo-input layer from a Gaussian of std 0.01 around a
small value. `set_pseudo_inputs` starts them from training examples instead (the paper's
alternative).

KL(q(z|x) || p(z)) has no closed form (Gaussian against a mixture): TFP has no KL for this
pair, so `BaseVAE.analytic_kl` returns None and the ELBO uses the Monte Carlo estimate
log q(z|x) - log p(z) at the sampled z (one sample in training). Importance sampling uses
`prior().log_prob`, so `tfvae.log_likelihood` and the export work as for any variant; the
prior is rebuilt from the weights inside every graph that needs it.

Conditional models are refused: the contract's p(z) takes no condition, and the encoder
q(z|x, c) would need a pseudo-condition for every pseudo-input.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, NonNegativeInt, PositiveInt, validate
from tfvae.inputs import check_batch
from tfvae.models.base import BaseVAE
from tfvae.registry import register

tfd = tfp.distributions

INIT_MEAN, INIT_STD = 0.05, 0.01    # initial pseudo-inputs in data space: u ~ N(0.05, 0.01^2)
UNIT_MARGIN = 1e-4                   # set_pseudo_inputs clips targets in [0, 1] to [m, 1 - m]


@register("vamp")
class VampVAE(BaseVAE):
    """VAE with the VampPrior p(z) = (1/K) sum_k q(z|u_k) over K learned pseudo-inputs.

    Args:
      pseudo_inputs: K, the number of pseudo-inputs (mixture components).
      Others as `BaseVAE`; condition_dim must be 0.
    """

    def __init__(self, pseudo_inputs: PositiveInt = 500, latent_dim: PositiveInt = 40,
                 condition_dim: NonNegativeInt = 0, **base):
        args = validate(VampVAE, dict(pseudo_inputs=pseudo_inputs, condition_dim=condition_dim),
                        "model 'vamp'", fill_defaults=False)
        if args["condition_dim"]:
            raise ConfigError(f"model 'vamp' is unconditional: its prior (1/K) sum_k q(z|u_k) has no "
                              f"condition to pass to the encoder; got condition_dim={condition_dim}, "
                              f"use condition_dim=0")
        self.num_pseudo_inputs = args["pseudo_inputs"]
        super().__init__(latent_dim=latent_dim, condition_dim=0, **base)

    def build_variant(self):
        """The pseudo-inputs' raw weights [K, *data_shape]."""
        self.bounded = self.likelihood.support == "unit_interval"
        if self.bounded:
            mean = math.log(INIT_MEAN / (1 - INIT_MEAN))
            std = INIT_STD / (INIT_MEAN * (1 - INIT_MEAN))   # d logit/du at 0.05 times 0.01
        else:
            mean, std = INIT_MEAN, INIT_STD
        self.raw_pseudo_inputs = self.add_weight(
            shape=(self.num_pseudo_inputs, *self.data_shape),
            initializer=keras.initializers.RandomNormal(mean=mean, stddev=std, seed=self.seed),
            name="raw_pseudo_inputs")

    def get_config(self):
        return {**super().get_config(), "pseudo_inputs": self.num_pseudo_inputs}

    # ----------------------------------------------------------------- pseudo-inputs
    def pseudo_inputs(self) -> tf.Tensor:
        """u [K, *data_shape]: sigmoid(raw) for a Bernoulli likelihood (inside [0, 1]), raw
        otherwise."""
        raw = tf.cast(self.raw_pseudo_inputs, tf.float32)
        return tf.sigmoid(raw) if self.bounded else raw

    def set_pseudo_inputs(self, u):
        """Sets the pseudo-inputs to u [K, *data_shape], e.g. K training examples. For a
        Bernoulli likelihood u must lie in [0, 1]; it is clipped to [1e-4, 1 - 1e-4] so that
        the sigmoid can represent it (binary pixels become 1e-4 and 1 - 1e-4)."""
        u = check_batch(u, self.data_shape, "pseudo-inputs", self.likelihood.support).numpy()
        if u.shape[0] != self.num_pseudo_inputs:
            raise ValueError(f"expected {self.num_pseudo_inputs} pseudo-inputs, got {u.shape[0]}")
        if self.bounded:
            u = np.clip(u, UNIT_MARGIN, 1 - UNIT_MARGIN)
            u = np.log(u) - np.log1p(-u)
        self.raw_pseudo_inputs.assign(u.astype(np.float32))

    # ----------------------------------------------------------------- prior
    def prior(self) -> tfd.Distribution:
        """p(z) = (1/K) sum_k q(z|u_k): a MixtureSameFamily with uniform weights whose
        components (batch shape [K]) are the encoder's posteriors at the pseudo-inputs;
        batch shape [], event shape [latent_dim]."""
        # The encoder body directly: u is inside the support by construction, and the input
        # checks of `encode` would copy K images to numpy on every eager call.
        params = self.encoder_net(self.pseudo_inputs(), None, training=False)
        components = self.posterior_family.distribution(params)
        weights = tfd.Categorical(logits=tf.zeros([self.num_pseudo_inputs]))
        return tfd.MixtureSameFamily(mixture_distribution=weights, components_distribution=components)
