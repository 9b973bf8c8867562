"""The semi-amortized objective (SA-VAE; Kim, Wiseman, Miller, Sontag & Rush 2018): the ELBO
at the encoder's posterior parameters refined by K differentiable gradient steps
(`tfvae.parts.refine`), trained through the steps (`tfvae.models.sa_vae` has the math, the
gradients and the differences from the paper).
"""
from __future__ import annotations

from typing import Literal

import tensorflow as tf

from tfvae.config import NonNegativeInt, PositiveFloat, PositiveInt
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss
from tfvae.parts.refine import Refinement, refine_posterior

fold_in = tf.random.experimental.stateless_fold_in


@register_part("objective", "semi_amortized")
class SemiAmortizedObjective(Objective):
    """loss = -mean_B [log p(x|z) - w KL(q(z; lambda_K) || p(z))] at the refined parameters
    lambda_K (one draw of z), w the KL warm-up weight; the encoder trains through the K steps,
    the generative model per `generative_gradient`. Terms: the encoder's (amortized) ELBO terms
    and `refined_elbo`, the single-draw ELBO at lambda_K. With K = 0 it is the ELBO objective:
    the same loss, gradients and draws.

    Args:
      refine_steps: K (0: the plain VAE).
      refine_learning_rate: the step size of each example's ascent along its own ELBO gradient.
      max_grad_norm: clip each example's ELBO gradient to this norm (None: no clipping).
      refine_samples: draws of z per step for the ELBO gradient.
      generative_gradient: "total" (through the steps, Kim et al.) or "partial" (the ELBO
        gradient at lambda_K held fixed).
    """

    extra_metrics = ("refined_elbo",)
    posteriors = ("diagonal", "full")
    posteriors_reason = "the refinement climbs the unconstrained parameters of a Gaussian posterior"

    def __init__(self, refine_steps: NonNegativeInt = 20, refine_learning_rate: PositiveFloat = 0.01,
                 max_grad_norm: PositiveFloat | None = 5.0, refine_samples: PositiveInt = 1,
                 generative_gradient: Literal["total", "partial"] = "total"):
        super().__init__()
        self.refine_steps, self.refine_learning_rate = refine_steps, refine_learning_rate
        self.max_grad_norm, self.refine_samples = max_grad_norm, refine_samples
        self.generative_gradient = generative_gradient

    def get_config(self):
        return {"refine_steps": self.refine_steps, "refine_learning_rate": self.refine_learning_rate,
                "max_grad_norm": self.max_grad_norm, "refine_samples": self.refine_samples,
                "generative_gradient": self.generative_gradient}

    def refine(self, model, x, condition=None, seed=None, steps: int | None = None, training: bool = False,
               differentiable: bool = False, params=None) -> Refinement:
        """The encoder's posterior refined by these K steps (or `steps`); see
        `tfvae.parts.refine.refine_posterior`. Not differentiable unless asked."""
        return refine_posterior(model, x, steps=self.refine_steps if steps is None else steps,
                                learning_rate=self.refine_learning_rate, samples=self.refine_samples,
                                max_grad_norm=self.max_grad_norm, condition=condition, seed=seed,
                                training=training, differentiable=differentiable, params=params)

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        seed = model._seed(seed)
        params = model.posterior_params(x, condition, training=training)
        encoder_q = model.posterior_family.distribution(params)
        # The ordinary ELBO terms of the amortized q: with the VAE's own draw.
        terms = model.elbo_terms(x, 1, condition, seed=seed, posterior=encoder_q, training=training)
        weight = tf.cast(model.kl_weight, tf.float32)
        if self.refine_steps == 0:
            final, refined_params = terms, params
        else:
            refined_params = refine_posterior(
                model, x, steps=self.refine_steps, learning_rate=self.refine_learning_rate,
                samples=self.refine_samples, max_grad_norm=self.max_grad_norm, condition=condition,
                seed=fold_in(seed, 1), training=training, differentiable=True, params=params).params
            final = model.elbo_terms(x, 1, condition, seed=fold_in(seed, 2),
                                    posterior=model.posterior_family.distribution(refined_params),
                                    training=training)
        loss = -tf.reduce_mean(final["log_px_z"] - weight * final["kl"])
        terms = {**terms, "refined_elbo": final["elbo"]}
        generative = None
        if self.generative_gradient == "partial" and self.refine_steps > 0:
            # Same draw, lambda_K held fixed: the generative model's gradient.
            fixed = model.elbo_terms(x, 1, condition, seed=fold_in(seed, 2),
                                    posterior=model.posterior_family.distribution(tf.stop_gradient(refined_params)),
                                    training=training)
            generative = -tf.reduce_mean(fixed["log_px_z"] - weight * fixed["kl"])
        return TrainingLoss(loss, terms, generative=generative)


__all__ = ["SemiAmortizedObjective"]
