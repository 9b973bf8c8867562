"""beta-VAE (Higgins et al. 2017) and its capacity-annealed form (Burgess et al. 2018).

Two losses, both on the ELBO's terms (log p(x|z) from one reparameterised z ~ q(z|x), KL
in closed form), averaged over the batch:

    beta form:      -E_q[log p(x|z)] + beta * KL(q(z|x) || p(z))               beta >= 0
    capacity form:  -E_q[log p(x|z)] + gamma * | KL(q(z|x) || p(z)) - C |

In the capacity form C grows linearly from 0 nats to `capacity` over `capacity_steps`
optimizer steps, C = capacity * min(1, step / capacity_steps), with `step` the optimizer's
iteration count at the start of the step; |KL - C| is taken on the batch-mean KL, as in
Burgess et al.'s annealed objective. beta = 1 (beta form) is the VAE. `kl_weight` (the KL
warm-up callback's ramp, 1 otherwise) multiplies the KL penalty of either form.

The model `beta_vae` is the VAE with the objective part `elbo` (`tfvae.parts.objectives`)
given these settings.
"""
from __future__ import annotations

from tfvae.config import NonNegativeFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.registry import register


@register("beta_vae")
class BetaVAE(BaseVAE):
    """beta-VAE: the ELBO with the KL weighted by beta, or held near an annealed capacity C.

    Args:
      beta: weight of the KL in the beta form (ignored when `capacity` is set).
      capacity: None for the beta form; else the final capacity C_max in nats of the
        capacity form.
      capacity_steps: optimizer steps over which C rises from 0 to `capacity`.
      gamma: weight of |KL - C| in the capacity form.
      Other args as `BaseVAE` (but `objective`).

    Outside `fit` (no compiled optimizer) the capacity annealing counts as finished: C = capacity.
    """

    fixed_parts = ("objective",)

    def __init__(self, beta: NonNegativeFloat = 4.0, capacity: NonNegativeFloat | None = None,
                 capacity_steps: PositiveInt = 100_000, gamma: NonNegativeFloat = 1000.0, **base):
        args = validate(BetaVAE, dict(beta=beta, capacity=capacity, capacity_steps=capacity_steps, gamma=gamma),
                        "model 'beta_vae'", fill_defaults=False)
        self.beta, self.capacity = args["beta"], args["capacity"]
        self.capacity_steps, self.gamma = args["capacity_steps"], args["gamma"]
        super().__init__(**with_fixed_parts("beta_vae", base, objective={
            "type": "elbo", "beta": self.beta, "capacity": self.capacity, "capacity_steps": self.capacity_steps,
            "gamma": self.gamma}))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "capacity": self.capacity,
                "capacity_steps": self.capacity_steps, "gamma": self.gamma}

    def current_capacity(self):
        """C in nats at the current optimizer step (a float32 scalar tensor)."""
        return self.objective_part.current_capacity(self)


__all__ = ["BetaVAE"]
