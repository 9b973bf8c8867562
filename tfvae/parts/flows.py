"""Flow posteriors: the inverse autoregressive flow `iaf` (Kingma et al. 2016), an encoder's
diagonal Gaussian pushed through T autoregressive steps with a context h(x)
(`tfvae.models.iaf` has the math, the two updates and what the log-density costs).
"""
from __future__ import annotations

import math
from typing import Literal

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, NonNegativeInt, Sizes
from tfvae.distributions import DiagonalNormal, positive_scale
from tfvae.nets.made import MADE
from tfvae.nets.mlp import check_activation
from tfvae.parts.base import register_part
from tfvae.parts.posteriors import Posterior

tfd, tfb = tfp.distributions, tfp.bijectors

LOG_SCALE_BOUND = 5.0   # the "affine" update's log-scale lies in (-5, 5)


def _memoized(fn):
    """fn, remembering its last (input tensor -> result): MAF asks for the same step's
    bijector twice on one input (its value and its log-det), which would run the MADE twice.
    One entry only, so nothing outlives the next call."""
    last = []

    def call(z, **kwargs):
        if last and last[0] is z:
            return last[1]
        result = fn(z)
        last[:] = [z, result]
        return result

    return call


@register_part("posterior", "iaf")
class IAFPosterior(Posterior):
    """q(z|x): the encoder's N(mu, sigma^2) pushed through T IAF steps. Its raw parameters
    (what the encoder outputs and semi-amortized inference refines) are
    [mu (L), raw sigma (L), context h (H)]. The MADEs are the model's (`model.made_steps`),
    created when the part is attached.

    Args:
      flow_steps: T, the number of IAF steps (0: the diagonal Gaussian).
      made_hidden: hidden widths of each step's MADE (at least one layer).
      made_activation: Keras activation of the MADE's hidden layers.
      context_dim: size of the context h(x) the encoder passes to every MADE (0: none).
      update: "gated" (z' = sigma z + (1 - sigma) m) or "affine" (z' = exp(l) z + m).
      gate_bias: added to s before the sigmoid of the "gated" update.
    """

    def __init__(self, flow_steps: NonNegativeInt = 2, made_hidden: Sizes = (320, 320), made_activation: str = "elu",
                 context_dim: NonNegativeInt = 50, update: Literal["gated", "affine"] = "gated",
                 gate_bias: float = 2.0):
        super().__init__()
        if not math.isfinite(gate_bias):
            raise ConfigError(f"posterior 'iaf': 'gate_bias' must be a finite number, got {gate_bias!r}")
        check_activation(made_activation)
        if not made_hidden:
            raise ConfigError("posterior 'iaf': 'made_hidden' needs at least one hidden layer, e.g. [320, 320]")
        self.flow_steps, self.made_hidden, self.made_activation = flow_steps, tuple(made_hidden), made_activation
        self.context_dim, self.update, self.gate_bias = context_dim, update, gate_bias

    def get_config(self):
        return {"flow_steps": self.flow_steps, "made_hidden": list(self.made_hidden),
                "made_activation": self.made_activation, "context_dim": self.context_dim, "update": self.update,
                "gate_bias": self.gate_bias}

    def attach(self, model):
        """One MADE per flow step, on the model."""
        super().attach(model)
        self.latent_dim = model.latent_dim
        model.made_steps = [MADE(model.latent_dim, self.made_hidden, self.made_activation, self.context_dim,
                                 name=f"made{t}") for t in range(self.flow_steps)]
        for made in model.made_steps:
            made.build()
        self.made_steps = model.made_steps

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim + self.context_dim

    def step_coefficients(self, made_output):
        """(log a, b) of z' = a * z + b from the MADE's output [..., L, 2] = [m, s]."""
        m, s = made_output[..., 0], made_output[..., 1]
        if self.update == "gated":
            s = s + self.gate_bias
            return tf.math.log_sigmoid(s), tf.sigmoid(-s) * m
        return LOG_SCALE_BOUND * tf.tanh(s / LOG_SCALE_BOUND), m

    def step(self, made, context) -> tfb.Bijector:
        """One IAF step z -> a(z) * z + b(z) as Invert(MAF): MAF's inverse x = B(y).inverse(y)
        computes its parameters from its input, so B(z) is the inverse of the affine map."""
        def bijector_fn(z):
            log_a, b = self.step_coefficients(made(z, context))
            return tfb.Invert(tfb.Chain([tfb.Shift(b), tfb.Scale(log_scale=log_a)]))

        return tfb.Invert(tfb.MaskedAutoregressiveFlow(bijector_fn=_memoized(bijector_fn)))

    def flow(self, context) -> tfb.Bijector:
        """IAF_T o reverse o ... o reverse o IAF_1, then one more reversal when there were an
        odd number, so that the output is in the encoder's order (Chain applies right to left)."""
        reverse = tfb.Permute(permutation=list(range(self.latent_dim - 1, -1, -1)))
        steps = []
        for t, made in enumerate(self.made_steps):
            if t:
                steps.append(reverse)
            steps.append(self.step(made, context))
        if len(self.made_steps) % 2 == 0:
            steps.append(reverse)
        return tfb.Chain(steps[::-1])

    def split(self, params):
        """(mu, sigma, context) from the raw parameters [B, 2L + H]."""
        params = tf.cast(params, tf.float32)
        L = self.latent_dim
        return params[..., :L], positive_scale(params[..., L:2 * L]), params[..., 2 * L:]

    def distribution(self, params) -> tfd.Distribution:
        loc, scale, context = self.split(params)
        base = DiagonalNormal(loc=loc, scale_diag=scale)
        if not self.made_steps:
            return base
        return tfd.TransformedDistribution(base, self.flow(context))


__all__ = ["IAFPosterior", "LOG_SCALE_BOUND"]
