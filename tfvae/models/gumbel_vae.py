"""Gumbel-softmax / Concrete VAE (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017): a VAE whose
latent is N categorical variables of K classes each, trained through their continuous relaxation.

The model. z = [z_1, ..., z_N], each z_i a one-hot vector of K classes (concatenated, so
latent_dim = N * K and every generic tool sees one latent vector; z_i is z[i*K:(i+1)*K]):

    p(z) = prod_i Cat(z_i; uniform),   q(z|x) = prod_i Cat(z_i; pi_i(x)),  pi_i = softmax(l_i(x)),

with the encoder giving the N*K logits l. Its ELBO has the closed-form KL

    KL = sum_i KL(Cat(pi_i) || Uniform(K)) = sum_i sum_k pi_ik log(pi_ik K)     in [0, N log K].

Training: one-hot draws are not differentiable, so each training step replaces them by the
Concrete / Gumbel-softmax relaxation at temperature tau: with g_k ~ Gumbel(0, 1),

    y_i = softmax((l_i + g_i) / tau)   (argmax y_i = argmax(l_i + g_i) is an exact draw of Cat(pi_i)),

a reparameterised point of the simplex, with density (Maddison et al., eq. 3; TFP's convention)

    log p(y) = log (K-1)! + (K-1) log tau + sum_k [l_k - (tau+1) log y_k] - K logsumexp_k(l_k - tau log y_k),

and prior draws relaxed the same way from uniform logits. The training loss is

    -E_{y ~ relaxed q}[log p(x|y)] + kl_weight * KL       (kl="analytic": the discrete KL above,
                                                          what both papers train on)

or, with kl="monte_carlo", the one-sample relaxed KL log q_tau(y|x) - log p_tau(y) instead.

Evaluation (`evaluate_as`). "discrete" (the default): everywhere outside the training step
(`elbo_terms`, importance-sampled log p(x), `sample`, `reconstruct`, export) the latents are the
one-hot categoricals of the model above, as in Maddison et al., who train relaxed and evaluate
the discrete model. The reported ELBO and log p(x) then bound the same model, and log p(x) >=
ELBO. "relaxed": the relaxed densities at the stored temperature are used there too, with the
reported KL still the discrete one (kl="analytic"); then the ELBO and the importance-sampled
log p(x) (which uses the relaxed q and p) bound different models and "log p(x) - ELBO" is not a
gap. On binarized MNIST (30 x 10 latents, 10 epochs) relaxed evaluation gave log p(x) ~ -700
nats against an ELBO of -111: the relaxed q concentrates far more sharply than the relaxed prior
(the relaxed KL grows with the logit gaps, the discrete one is at most log K per latent), so
the discrete model is the one worth scoring; its log p(x) was -106 (ELBO -129: the decoder sees
hard codes it was not trained on until tau is small).

Temperature annealing (in-graph, no callback): every training step t (t = the optimizer's
iteration count before the update, starting at 0) runs at

    tau_t = max(tau_min, tau0 * exp(-anneal_rate * t)),

stored in the non-trainable weight `temperature` (saved with the weights; relaxed evaluation
uses it, i.e. the temperature of the last training step). Jang et al. anneal with r in
{1e-5, 1e-4} per step, updating tau every 500 or 1000 steps; this updates it every step. The
defaults tau0 = 1, tau_min = 0.5, r = 3e-5 are those of the authors' MNIST notebook (30 x 10
latents). A fresh optimizer (e.g. fine-tuning a loaded model) restarts the schedule at tau0.
The straight-through ("hard") estimator is not implemented.

Numerics: relaxed draws are made in log space, log y = log_softmax((l + g) / tau), each log y_k
floored at LOG_FLOOR = -80 before exponentiating, so no y_k underflows to 0 (which would make
log p(y) infinite or NaN for a confident encoder); densities are evaluated at log y, so q and p
see the same (floored) point. The floor changes only draws with some y_k < e^-80.

The model `gumbel_vae` is the VAE with the posterior `categorical` (N categoricals of K classes)
and the prior `categorical_uniform` (`tfvae.parts.categorical`, which holds the distributions).
"""
from __future__ import annotations

from tfvae.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.categorical import Categories, EvaluateAs
from tfvae.registry import register


class CategoricalLatentsAccess:
    """For the models with categorical latents (`GumbelVAE`, `JointVAE`): their posterior
    part's temperature and mode, as attributes of the model."""

    @property
    def temperature(self):
        """The non-trainable weight holding the temperature of the last training step."""
        return self.posterior_part.latents.temperature

    def relaxed_latents(self):
        """Within this block (as in every training step) the categorical latents are relaxed."""
        return self.posterior_part.latents.relaxed()

    @property
    def latents_relaxed(self) -> bool:
        return self.posterior_part.latents.is_relaxed

    @property
    def category_sizes(self) -> tuple[int, ...]:
        return self.posterior_part.latents.categories

    def current_temperature(self):
        """The stored temperature (a float32 scalar tensor)."""
        return self.posterior_part.latents.current_temperature()

    def scheduled_temperature(self, step):
        """The temperature of training step `step` (a float32 scalar tensor)."""
        return self.posterior_part.latents.scheduled_temperature(step)


@register("gumbel_vae")
class GumbelVAE(CategoricalLatentsAccess, BaseVAE):
    """VAE with N = `num_latents` categorical latents of K = `categories` classes each, trained
    through the Gumbel-softmax relaxation (Jang et al. 2017, Maddison et al. 2017); see the
    module docstring for the math.

        loss = -E_{relaxed q}[log p(x|z)] + kl_weight * sum_i KL(Cat(pi_i(x)) || Uniform(K))

    from one reparameterised relaxed z per example (kl="analytic"; kl="monte_carlo": the
    one-sample relaxed KL instead). Outside training the latents are one-hot (evaluate_as
    "discrete"): ELBO, log p(x), samples and reconstructions are those of the discrete model.

    Args:
      num_latents: N, the number of categorical variables.
      categories: K, the classes of each (>= 2).
      tau0, tau_min, anneal_rate: the temperature schedule max(tau_min, tau0 exp(-rate * step)).
      evaluate_as: "discrete" or "relaxed" (at the stored temperature) latents outside training.
      latent_dim: N * K (derived; may be given, and must then equal N * K).
      Other args as `BaseVAE` (but `prior` and `posterior`).
    """

    fixed_parts = ("prior", "posterior")

    def __init__(self, num_latents: PositiveInt = 30, categories: Categories = 10, tau0: PositiveFloat = 1.0,
                 tau_min: PositiveFloat = 0.5, anneal_rate: NonNegativeFloat = 3e-5,
                 evaluate_as: EvaluateAs = "discrete", latent_dim: PositiveInt | None = None, **base):
        where = f"model {base.get('name') or 'gumbel_vae'!r}"
        args = validate(GumbelVAE, dict(num_latents=num_latents, categories=categories, tau0=tau0, tau_min=tau_min,
                                        anneal_rate=anneal_rate, evaluate_as=evaluate_as, latent_dim=latent_dim),
                        where, fill_defaults=False)
        self.num_latents, self.categories = args["num_latents"], args["categories"]
        size = self.num_latents * self.categories
        if args["latent_dim"] is not None and args["latent_dim"] != size:
            raise ConfigError(f"{where}: 'latent_dim' is num_latents * categories = {size}, got {latent_dim!r} "
                              f"(leave it out)")
        if args["tau_min"] > args["tau0"]:
            raise ConfigError(f"{where}: 'tau_min' ({args['tau_min']}) must be <= 'tau0' ({args['tau0']})")
        posterior = {"type": "categorical", "categories": [self.categories] * self.num_latents,
                     **{key: args[key] for key in ("tau0", "tau_min", "anneal_rate", "evaluate_as")}}
        super().__init__(latent_dim=size, **with_fixed_parts("gumbel_vae", base, prior={"type": "categorical_uniform"},
                                                              posterior=posterior))

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents, "categories": self.categories,
                **self.posterior_part.latents.settings()}


__all__ = ["CategoricalLatentsAccess", "GumbelVAE"]
