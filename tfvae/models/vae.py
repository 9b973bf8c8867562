"""The standard VAE (Kingma & Welling 2014; Rezende et al. 2014).

Trains on the negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || p(z)), with the
reparameterised single-sample gradient and the closed-form Gaussian KL. Everything it needs
is the contract's default behaviour in `BaseVAE`.
"""
from tfvae.models.base import BaseVAE
from tfvae.registry import register


@register("vae")
class VAE(BaseVAE):
    """Standard VAE: maximises the ELBO. Args as `BaseVAE`."""
