"""JointVAE (Dupont 2018, "Learning Disentangled Joint Continuous and Discrete Representations").

The latent joins a continuous and a discrete part, z = [z_c, z_d]:

    z_c in R^{L_c}:  q(z_c|x) = N(mu(x), diag(sigma(x)^2)),  p(z_c) = N(0, I)
    z_d = [y_1, ..., y_M]:  one-hot categoricals of K_1..K_M classes, q(y_j|x) = Cat(pi_j(x)),
          uniform prior, relaxed during training exactly as in `tfvae.models.gumbel_vae`
          (Concrete distributions at temperature tau)

so latent_dim = L_c + sum_j K_j; the encoder outputs [mu, raw sigma, logits] (2 L_c + sum K_j
numbers), and q(z|x) = q(z_c|x) q(z_d|x) (`ConcatenatedLatents`). Each part's KL to its prior
has a capacity C that the loss holds it near:

    loss = -E_q[log p(x|z)] + gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|

    KL_c = KL(N(mu, sigma^2) || N(0, I))                  (closed form)
    KL_d = sum_j KL(Cat(pi_j) || Uniform(K_j))            (closed form, as Dupont's code)
    C_c  = C_c,max * min(1, t / capacity_steps)
    C_d  = min(C_d,max * min(1, t / capacity_steps), sum_j log K_j)

with t the optimizer's iteration count at the start of the step (in-graph; outside `fit` the
schedule counts as finished, C = its final value, as `beta_vae`). sum_j log K_j is the largest
KL_d can reach, so C_d is capped there. |KL - C| is taken on the batch-mean KL, as in Dupont's
code; `kl_weight` (the KL warm-up ramp, 1 otherwise) multiplies both penalties. A part with no
latents (continuous_dim = 0, or categories = []) has no penalty.

gamma_c = gamma_d = 1 and C = 0 give the negative ELBO of the VAE (continuous part alone) or of
`gumbel_vae` (discrete part alone); with both parts, of their product. As in `gumbel_vae`, the
discrete latents are relaxed inside the training step only; elsewhere (ELBO, importance-sampled
log p(x), samples, export) they are one-hot (evaluate_as="discrete", the default), so the
reported ELBO (with KL_c + KL_d) and log p(x) bound the same model; evaluate_as="relaxed" keeps
the relaxed densities (at the stored temperature) outside training too, and then they bound
different models. kl="monte_carlo" uses the one-sample KLs log q - log p of each part instead
of the closed forms. The temperature follows `gumbel_vae`'s schedule; Dupont keeps it fixed at
0.67 (the defaults here: tau0 = tau_min = 0.67, anneal_rate = 0).

The model `joint_vae` is the VAE with the posterior and prior `gaussian_categorical` and the
objective `joint_capacity` (`tfvae.parts.categorical`).
"""
from __future__ import annotations

from tfvae.config import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.models.gumbel_vae import CategoricalLatentsAccess
from tfvae.parts.categorical import CategorySizes, EvaluateAs
from tfvae.registry import register

LATENT_SETTINGS = ("tau0", "tau_min", "anneal_rate", "evaluate_as")
CAPACITY_SETTINGS = ("gamma_c", "gamma_d", "capacity_c", "capacity_d", "capacity_steps")


@register("joint_vae")
class JointVAE(CategoricalLatentsAccess, BaseVAE):
    """JointVAE: a Gaussian and a categorical latent (relaxed in training), each with its own
    KL capacity (see the module docstring for the math).

        loss = -E_q[log p(x|z)] + gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|

    Args:
      continuous_dim: L_c, size of the Gaussian part (0: none).
      categories: class counts K_j of the categorical latents (each >= 2; []: none).
      gamma_c, gamma_d: weights of the two capacity penalties.
      capacity_c, capacity_d: final capacities C_max in nats (C_d is also capped at sum log K_j).
      capacity_steps: optimizer steps over which both capacities rise linearly from 0.
      tau0, tau_min, anneal_rate: the temperature schedule of `gumbel_vae`.
      evaluate_as: "discrete" or "relaxed" categorical latents outside training, as `gumbel_vae`.
      latent_dim: L_c + sum K_j (derived; may be given, and must then equal it).
      Other args as `BaseVAE` (but `prior`, `posterior` and `objective`).

    Defaults: Dupont's MNIST settings, 10 continuous latents and one 10-way categorical,
    C_max = 5 nats for both parts over 25,000 steps, gamma = 30, temperature 0.67.
    """

    fixed_parts = ("prior", "posterior", "objective")

    def __init__(self, continuous_dim: NonNegativeInt = 10, categories: CategorySizes = (10,),
                 gamma_c: NonNegativeFloat = 30.0, gamma_d: NonNegativeFloat = 30.0,
                 capacity_c: NonNegativeFloat = 5.0, capacity_d: NonNegativeFloat = 5.0,
                 capacity_steps: PositiveInt = 25_000, tau0: PositiveFloat = 0.67, tau_min: PositiveFloat = 0.67,
                 anneal_rate: NonNegativeFloat = 0.0, evaluate_as: EvaluateAs = "discrete",
                 latent_dim: PositiveInt | None = None, **base):
        where = f"model {base.get('name') or 'joint_vae'!r}"
        args = validate(JointVAE, dict(
            continuous_dim=continuous_dim, categories=categories, gamma_c=gamma_c, gamma_d=gamma_d,
            capacity_c=capacity_c, capacity_d=capacity_d, capacity_steps=capacity_steps, tau0=tau0,
            tau_min=tau_min, anneal_rate=anneal_rate, evaluate_as=evaluate_as, latent_dim=latent_dim), where,
            fill_defaults=False)
        self.continuous_dim, self.categories = args["continuous_dim"], tuple(args["categories"])
        size = self.continuous_dim + sum(self.categories)
        if size == 0:
            raise ConfigError(f"{where}: needs a continuous part (continuous_dim > 0) or a discrete one "
                              f"(categories, e.g. [10]), or both")
        if args["latent_dim"] is not None and args["latent_dim"] != size:
            raise ConfigError(f"{where}: 'latent_dim' is continuous_dim + sum(categories) = {size}, "
                              f"got {latent_dim!r} (leave it out)")
        if args["tau_min"] > args["tau0"]:
            raise ConfigError(f"{where}: 'tau_min' ({args['tau_min']}) must be <= 'tau0' ({args['tau0']})")
        posterior = {"type": "gaussian_categorical", "continuous_dim": self.continuous_dim,
                     "categories": list(self.categories), **{key: args[key] for key in LATENT_SETTINGS}}
        objective = {"type": "joint_capacity", **{key: args[key] for key in CAPACITY_SETTINGS}}
        super().__init__(latent_dim=size, **with_fixed_parts(
            "joint_vae", base, prior={"type": "gaussian_categorical"}, posterior=posterior, objective=objective))

    def get_config(self):
        return {**super().get_config(), "continuous_dim": self.continuous_dim, "categories": list(self.categories),
                **self.objective_part.get_config(), **self.posterior_part.latents.settings()}


__all__ = ["JointVAE"]
