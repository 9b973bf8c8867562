"""Model variants; importing this package registers every one of them."""
from tfvae.models.base import BaseVAE
from tfvae.models.linear_gaussian import LinearGaussian
from tfvae.models.vae import VAE

__all__ = ["BaseVAE", "LinearGaussian", "VAE"]
