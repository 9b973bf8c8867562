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

The model `vamp` is the VAE with the prior part `vamp` (`tfvae.parts.priors`), 40 latents by
default.
"""
from __future__ import annotations

import tensorflow as tf

from tfvae.config import NonNegativeInt, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.registry import register


@register("vamp")
class VampVAE(BaseVAE):
    """VAE with the VampPrior p(z) = (1/K) sum_k q(z|u_k) over K learned pseudo-inputs.

    Args:
      pseudo_inputs: K, the number of pseudo-inputs (mixture components).
      Others as `BaseVAE` (but `prior`); condition_dim must be 0.
    """

    fixed_parts = ("prior",)

    def __init__(self, pseudo_inputs: PositiveInt = 500, latent_dim: PositiveInt = 40,
                 condition_dim: NonNegativeInt = 0, **base):
        self.num_pseudo_inputs = validate(VampVAE, dict(pseudo_inputs=pseudo_inputs), "model 'vamp'",
                                          fill_defaults=False)["pseudo_inputs"]
        super().__init__(latent_dim=latent_dim, condition_dim=condition_dim, **with_fixed_parts(
            "vamp", base, prior={"type": "vamp", "pseudo_inputs": self.num_pseudo_inputs}))

    def get_config(self):
        return {**super().get_config(), "pseudo_inputs": self.num_pseudo_inputs}

    def pseudo_inputs(self) -> tf.Tensor:
        """u [K, *data_shape] (`tfvae.parts.priors.VampPrior.pseudo_inputs`)."""
        return self.prior_part.pseudo_inputs()

    def set_pseudo_inputs(self, u):
        """Sets the pseudo-inputs to u [K, *data_shape] (`VampPrior.set_pseudo_inputs`)."""
        self.prior_part.set_pseudo_inputs(u)


__all__ = ["VampVAE"]
