"""Autoregressive flows as parts.

- posterior `iaf` (Kingma et al. 2016): an encoder's diagonal Gaussian pushed through T inverse
  autoregressive steps with a context h(x) (`tfvae.models.iaf` has the math, the two updates
  and what the log-density costs);
- prior `flow`: N(0, I) pushed through T masked autoregressive steps (MAF, Papamakarios et al.
  2017), a learned prior whose density takes one MADE pass per step,

      z = f(eps):  z_i = eps_i exp(l_i(z_<i)) + m_i(z_<i),    log p(z) = log N(eps; 0, I) - sum_i l_i,

  with eps = f^-1(z) in one pass (m, l of every dimension from z at once) and the order of
  the dimensions reversed between steps. Drawing z is sequential (L passes per step): cheap
  for the prior, which is sampled only to generate, and evaluated on every training draw
  (its KL has no closed form: the Monte Carlo rule). l_i = 5 tanh(s_i / 5) bounds the
  log-scale; the MADEs' output layers start at zero, so a fresh flow prior is N(0, I).
"""
from __future__ import annotations

import math
from typing import Literal

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, NonNegativeInt, Sizes
from tfvae.distributions import DiagonalNormal, positive_scale, standard_normal
from tfvae.nets.made import MADE
from tfvae.nets.mlp import check_activation
from tfvae.parts.base import register_part
from tfvae.parts.posteriors import Posterior
from tfvae.parts.priors import Prior

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

    density_anywhere = False     # log q at an arbitrary z inverts the flow: latent_dim MADE passes

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


def reversal(latent_dim: int) -> tfb.Bijector:
    """The permutation that reverses the order of the latent dimensions (|det| = 1)."""
    return tfb.Permute(permutation=list(range(latent_dim - 1, -1, -1)))


@register_part("prior", "flow")
class FlowPrior(Prior):
    """p(z): N(0, I) through T masked autoregressive flow steps (see the module docstring).
    The MADEs are the model's (`model.prior_made_steps`), created when the part is attached.

    Args:
      flow_steps: T (0: N(0, I)).
      made_hidden: hidden widths of each step's MADE (at least one layer).
      made_activation: Keras activation of the MADE's hidden layers.
    """

    def __init__(self, flow_steps: NonNegativeInt = 2, made_hidden: Sizes = (64, 64), made_activation: str = "elu"):
        super().__init__()
        check_activation(made_activation)
        if not made_hidden:
            raise ConfigError("prior 'flow': 'made_hidden' needs at least one hidden layer, e.g. [64, 64]")
        self.flow_steps, self.made_hidden, self.made_activation = flow_steps, tuple(made_hidden), made_activation

    def get_config(self):
        return {"flow_steps": self.flow_steps, "made_hidden": list(self.made_hidden),
                "made_activation": self.made_activation}

    def attach(self, model):
        super().attach(model)
        model.prior_made_steps = [MADE(model.latent_dim, self.made_hidden, self.made_activation, name=f"prior_made{t}")
                                  for t in range(self.flow_steps)]
        for made in model.prior_made_steps:
            made.build()
        self.made_steps = model.prior_made_steps

    @staticmethod
    def shift_and_log_scale(made):
        """The (m, l) function of one MAF step from its MADE."""
        def fn(z):
            output = made(z)
            return output[..., 0], LOG_SCALE_BOUND * tf.tanh(output[..., 1] / LOG_SCALE_BOUND)
        return fn

    def bijector(self) -> tfb.Bijector:
        """f: eps -> z, MAF_T o reverse o ... o reverse o MAF_1 (Chain applies right to left)."""
        reverse = reversal(self.model.latent_dim)
        steps = []
        for t, made in enumerate(self.made_steps):
            if t:
                steps.append(reverse)
            steps.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=self.shift_and_log_scale(made)))
        return tfb.Chain(steps[::-1])

    def distribution(self) -> tfd.Distribution:
        base = standard_normal(self.model.latent_dim)
        if not self.made_steps:
            return base
        return tfd.TransformedDistribution(base, self.bijector())


__all__ = ["FlowPrior", "IAFPosterior", "LOG_SCALE_BOUND", "reversal"]
