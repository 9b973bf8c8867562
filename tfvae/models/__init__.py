"""Model variants; importing this package registers every one of them."""
from tfvae.models.base import BaseVAE
from tfvae.models.beta_tcvae import BetaTCVAE
from tfvae.models.beta_vae import BetaVAE
from tfvae.models.dip_vae import DIPVAE
from tfvae.models.factor_vae import FactorVAE
from tfvae.models.gumbel_vae import GumbelVAE
from tfvae.models.hvae2 import HVAE2
from tfvae.models.iaf import IAF
from tfvae.models.iwae import IWAE
from tfvae.models.joint_vae import JointVAE
from tfvae.models.ladder import LadderVAE
from tfvae.models.linear_gaussian import LinearGaussian
from tfvae.models.mmd import WAEMMD, InfoVAE
from tfvae.models.mog_prior import MoGPriorVAE
from tfvae.models.multisample import CIWAE, MIWAE, PIWAE
from tfvae.models.recon_losses import LogCoshVAE, MSSIMVAE
from tfvae.models.sa_vae import SAVAE
from tfvae.models.svae import SVAE
from tfvae.models.vae import VAE
from tfvae.models.vamp import VampVAE
from tfvae.models.vqvae import VQVAE

__all__ = ["BaseVAE", "BetaTCVAE", "BetaVAE", "CIWAE", "DIPVAE", "FactorVAE", "GumbelVAE", "HVAE2", "IAF", "IWAE", "InfoVAE", "JointVAE", "LadderVAE",
           "LinearGaussian", "LogCoshVAE", "MIWAE", "MSSIMVAE", "MoGPriorVAE", "PIWAE", "SAVAE", "SVAE", "VAE", "VQVAE", "VampVAE", "WAEMMD"]
