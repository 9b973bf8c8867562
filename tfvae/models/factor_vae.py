"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising").

FactorVAE adds to the negative ELBO a penalty on the total correlation of the aggregate
posterior q(z) = E_p(x)[q(z|x)], the KL from q(z) to the product of its marginals q~(z):

    TC(z) = KL(q(z) || q~(z)),   q~(z) = prod_j q(z_j)
    loss  = mean_b[-E_q log p(x_b|z) + KL(q(z|x_b) || p(z))] + gamma * TC(z)

TC has no closed form; the density-ratio trick estimates it with a discriminator D(z), the
probability that z came from q(z) rather than from q~(z). The Bayes-optimal D is
q(z) / (q(z) + q~(z)), so its logit s(z) = log(D / (1 - D)) = log q(z) - log q~(z) and

    TC(z) = E_q(z)[log q(z) - log q~(z)] ~= mean_b s(z_b),   z_b ~ q(z|x_b).

(D has one output logit s; the paper's two-logit softmax is the same model with
s = logit_real - logit_fake.) The gradient of gamma * mean_b s(z_b) reaches the encoder
through the reparameterised z_b; D's own weights are not updated by the VAE loss.

D is trained at every step by its own optimizer on the binary cross-entropy between
samples of q(z) (label 1) and samples of q~(z) (label 0):

    disc_loss = 0.5 * mean_b softplus(-s(z_b)) + 0.5 * mean_b softplus(s(z~_b))

where z~ is the batch z with every latent dimension permuted independently across the batch
(`permute_dims`): its rows are draws from the product of the batch's marginals. Both
samples are `stop_gradient`-ed, so the encoder gets no gradient from the discriminator.

One batch per step (a choice; Kim & Mnih draw a second batch for z~): the VAE term, D's
"real" samples and the permuted "fake" samples all come from the same z ~ q(z|x) of the
batch, as in disentanglement_lib's FactorVAE. Halving the batch instead would halve the
VAE's batch as well; with the same batch every example serves both losses.

The bounds the model reports, evaluates and exports (`elbo_terms`, `log_weights`) are the
VAE's; `fit` also reports `tc` (mean_b s(z_b)), `disc_loss` and `disc_accuracy`.
`kl_weight` (the KL warm-up ramp, 1 otherwise) multiplies the KL only, not the TC penalty.

The model `factor_vae` is the VAE with the objective part `factor` (`tfvae.parts.adversarial`).
"""
from __future__ import annotations

from tfvae.config import NonNegativeFloat, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.adversarial import (DISCRIMINATOR_BETAS, HiddenSizes, discriminator_step, discriminator_terms,
                                     make_discriminator, make_discriminator_optimizer, permute_dims)
from tfvae.registry import register


@register("factor_vae")
class FactorVAE(BaseVAE):
    """FactorVAE: the negative ELBO plus gamma times a discriminator's estimate of the total
    correlation of q(z) (see the module docstring for the math and the one-batch choice).

        loss = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + gamma * mean_b s(z_b)

    Two optimizers in one `train_step`: the compiled optimizer (`model.compile`) updates the
    VAE's variables (`optimized_variables`: encoder, decoder, likelihood) on the loss above; the
    model's own `discriminator_optimizer`, created and built with the model (so that it
    exists before any compiled step and is saved with the weights), updates D on its
    cross-entropy. D is excluded from the VAE's update and z is cut from D's loss.

    Args:
      gamma: weight of the TC estimate. Kim & Mnih sweep gamma from 10 to 100 on dSprites
        and their disentangled models use values near 35-40; 35 is the default.
      discriminator_hidden: hidden layer sizes of D. Default (256, 256): a CPU-friendly
        size; the paper uses six layers of 1000 units.
      discriminator_learning_rate: learning rate of D's Adam (betas 0.5, 0.9), 1e-4 as in
        the paper.
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, gamma: NonNegativeFloat = 35.0, discriminator_hidden: HiddenSizes = (256, 256),
                 discriminator_learning_rate: NonNegativeFloat = 1e-4, **base):
        args = validate(FactorVAE, dict(gamma=gamma, discriminator_hidden=discriminator_hidden,
                                        discriminator_learning_rate=discriminator_learning_rate),
                        "model 'factor_vae'", fill_defaults=False)
        self.gamma = args["gamma"]
        self.discriminator_learning_rate = args["discriminator_learning_rate"]
        self._discriminator_hidden = list(args["discriminator_hidden"])
        super().__init__(**with_fixed_parts("factor_vae", base, objective={
            "type": "factor", "gamma": self.gamma, "discriminator_hidden": self._discriminator_hidden,
            "discriminator_learning_rate": self.discriminator_learning_rate}))

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma,
                "discriminator_hidden": list(self._discriminator_hidden),
                "discriminator_learning_rate": self.discriminator_learning_rate}

    def tc_logits(self, z):
        """D's logits s(z) = log D(z) / (1 - D(z)) ~= log q(z) - log prod_j q(z_j), [B] for z [B, L]."""
        return self.objective_part.tc_logits(self, z)


__all__ = ["DISCRIMINATOR_BETAS", "FactorVAE", "discriminator_step", "discriminator_terms", "make_discriminator",
           "make_discriminator_optimizer", "permute_dims"]
