"""The importance weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

With k samples z_1..z_k ~ q(z|x) and weights w_i = p(x, z_i) / q(z_i|x), IWAE trains on

    L_k(x) = E[ log (1/k) sum_i w_i ]  <=  log p(x),

which is the ELBO at k = 1, increases with k and tends to log p(x). Two gradient estimators:

* "standard": the reparameterised gradient of L_k,
      grad L_k = sum_i wt_i grad log w_i,   wt_i = w_i / sum_j w_j;
* "dreg" (doubly reparameterized, Tucker, Lawson, Gu & Maddison 2019): for the encoder's
  parameters phi, with z_i = z(eps_i, phi),
      grad_phi L_k = E[ sum_i wt_i^2  d log w_i / d z_i  d z_i / d phi ],
  where log w_i is taken with q's parameters held fixed (only the path through z_i is
  differentiated); the decoder's gradient is the standard one. Same expectation, far lower
  variance for the encoder at large k, whose standard gradient's signal-to-noise ratio
  decays like 1/sqrt(k) (Rainforth et al. 2018).

The model `iwae` is the VAE with the objective part `iwae` (`tfvae.parts.objectives`, where
the bound, the weights and the DReG surrogate are): `class: iwae, k: 5` and `class: vae,
objective: {type: iwae, k: 5}` are the same model.
"""
from __future__ import annotations

from typing import Literal

from tfvae.config import PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.objectives import dreg_surrogate, log_mean_exp
from tfvae.registry import register


@register("iwae")
class IWAE(BaseVAE):
    """Importance weighted autoencoder: maximises L_k = E log (1/k) sum_i w_i.

    Args:
      k: importance samples per example in training (k = 1: the VAE with a Monte Carlo KL).
      estimator: "standard" (reparameterised gradient of L_k) or "dreg" (doubly
        reparameterized encoder gradient; the decoder's is the standard one).
      Other args as `BaseVAE` (but `objective`, which these two set).
    """

    fixed_parts = ("objective",)

    def __init__(self, k: PositiveInt = 50, estimator: Literal["standard", "dreg"] = "standard", **base):
        args = validate(IWAE, dict(k=k, estimator=estimator), "model 'iwae'", fill_defaults=False)
        self.k, self.estimator = args["k"], args["estimator"]
        super().__init__(**with_fixed_parts("iwae", base, objective={"type": "iwae", "k": self.k,
                                                                     "estimator": self.estimator}))

    def get_config(self):
        return {**super().get_config(), "k": self.k, "estimator": self.estimator}


__all__ = ["IWAE", "dreg_surrogate", "log_mean_exp"]
