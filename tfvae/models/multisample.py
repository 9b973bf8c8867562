"""MIWAE, PIWAE and CIWAE (Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018,
"Tighter variational bounds are not necessarily better").

Tighter bounds help the generative network but hurt the inference network: the
signal-to-noise ratio of the encoder's IWAE_K gradient decays like 1/sqrt(K). Each variant
spends its samples differently. With log-weights log w = log p(x, z) - log q(z|x), z ~ q:

    IWAE_K       = log (1/K) sum_k w_k
    MIWAE_{M,K}  = (1/M) sum_m log (1/K) sum_k w_{m,k}     M independent IWAE_K bounds, averaged
    CIWAE_beta   = beta * ELBO + (1 - beta) * IWAE_K       a convex combination, same K samples
    PIWAE_{M,K}:   the generative network follows grad_theta IWAE_{MK} and the inference
                   network grad_phi MIWAE_{M,K}, both from the same M*K samples

Limits: MIWAE_{1,K} = PIWAE_{1,K} = IWAE_K, MIWAE_{M,1} = the ELBO averaged over M samples,
CIWAE_1 = ELBO and CIWAE_0 = IWAE_K. The M*K samples are drawn as one batch
z = q.sample(M*K, seed) (index m*K + k), so with the same seed these limits hold exactly.
"""
from __future__ import annotations

from typing import Annotated

from tfvae.config import UNIT_INTERVAL, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.registry import register

UnitFloat = Annotated[float, UNIT_INTERVAL]


@register("miwae")
class MIWAE(BaseVAE):
    """Multiply importance weighted autoencoder: maximises MIWAE_{M,K}, the mean of M
    independent IWAE_K bounds per example (M*K samples in all): the VAE with the objective part
    `miwae`.

    Args:
      m: M, the number of independent IWAE_K bounds averaged.
      k: K, the importance samples inside each bound.
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, m: PositiveInt = 8, k: PositiveInt = 8, **base):
        name = type(self).registered_name
        args = validate(MIWAE, dict(m=m, k=k), f"model {name!r}", fill_defaults=False)
        self.m, self.k = args["m"], args["k"]
        super().__init__(**with_fixed_parts(name, base, objective={"type": name, "m": self.m, "k": self.k}))

    def get_config(self):
        return {**super().get_config(), "m": self.m, "k": self.k}


@register("piwae")
class PIWAE(MIWAE):
    """Partially importance weighted autoencoder: the generative network trained on
    IWAE_{M*K}, the inference network on MIWAE_{M,K} (the objective part `piwae`). Args as
    `MIWAE`."""


@register("ciwae")
class CIWAE(BaseVAE):
    """Combination importance weighted autoencoder: maximises beta * ELBO + (1 - beta) * IWAE_K
    from the same K samples (the objective part `ciwae`).

    Args:
      k: K, importance samples per example.
      beta: weight of the ELBO, in [0, 1].
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, k: PositiveInt = 64, beta: UnitFloat = 0.5, **base):
        args = validate(CIWAE, dict(k=k, beta=beta), "model 'ciwae'", fill_defaults=False)
        self.k, self.beta = args["k"], args["beta"]
        super().__init__(**with_fixed_parts("ciwae", base, objective={"type": "ciwae", "k": self.k, "beta": self.beta}))

    def get_config(self):
        return {**super().get_config(), "k": self.k, "beta": self.beta}


__all__ = ["CIWAE", "MIWAE", "PIWAE"]
