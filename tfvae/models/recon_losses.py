"""VAEs trained with a reconstruction loss in place of the likelihood term: MS-SSIM and log-cosh.

Both train on one reparameterised z ~ q(z|x) per example and the mean of p(x|z) there,
x_hat = E[x | z], with the loss (a mean over the batch of per-example values)

    loss = recon_weight * recon_loss(x, x_hat) + kl_weight * beta * KL(q(z|x) || p(z))

(`kl_weight`: the KL warm-up ramp, 1 otherwise). The reconstruction losses:

  mssim_vae    (MS-SSIM VAE as in PyTorch-VAE, after Snell et al. 2017, "Learning to Generate
               Images with Perceptual Similarity Metrics")

      recon_loss = 1 - MS-SSIM(x, x_hat),   MS-SSIM = prod_{s<S-1} cs_s^{w_s} * ssim_{S-1}^{w_{S-1}}

  averaged over channels (Wang, Simoncelli & Bovik 2003). At scale s both images are
  downsampled s times by 2x2 averaging (odd sides padded by mirroring the last row/column);
  with Gaussian-window local means mu, variances sigma^2 and covariance sigma_xy,

      l  = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1),    C1 = (0.01 max_val)^2
      cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2), C2 = (0.03 max_val)^2

  cs_s is the mean of the cs map at scale s and ssim_s the mean of l * cs; each is clipped
  at 0 before the power, as `tf.image.ssim_multiscale` does, whose value this module
  reproduces exactly (max_val = 1: data in [0, 1]). It is reimplemented here because
  `tf.image.ssim_multiscale` puts `Assert` ops (host-only) in the graph, which the
  compiled training step must not contain; the image size is checked once, in Python.
  The default scales suit small images: 3 scales, a 7x7 window with sigma 1.0 and
  Wang et al.'s first three weights renormalised to sum to 1, so that 28x28 (scales 28,
  14, 7) and 64x64 images work. The default 5 scales with an 11x11 window need images of
  at least 161x161.

  logcosh_vae  (Chen et al. 2019, "Log Hyperbolic Cosine Loss Improves Variational
               Auto-Encoder")

      recon_loss = sum_d (1/a) log cosh(a (x_hat_d - x_d)),   a > 0 (default 10)

  computed as |u| + softplus(-2|u|) - log 2 with u = a t, which never overflows and has
  the exact gradient tanh(u). It behaves like a t^2 / 2 for |t| << 1/a and like
  |t| - log(2)/a for |t| >> 1/a. With recon_weight = a the loss is, up to the constant
  D log(pi / a) (D data dimensions), the negative ELBO of a model whose p(x|z) is the
  hyperbolic secant density of scale 1/a around x_hat, (a / pi) / cosh(a (x_d - x_hat_d)).
  With a Bernoulli head, x_hat = sigmoid(logits): the gradient through the sigmoid
  vanishes where a probability saturates, and on sparse binary images recon_weight = 1,
  beta = 1 collapsed the posterior (shapes, 5 epochs: KL 0.1 nats); recon_weight = a did not.

The loss is NOT a bound on log p(x). The decoder still defines a proper likelihood p(x|z)
(e.g. Bernoulli; x_hat is its mean), and every reported and evaluated quantity (`elbo`,
`log_px_z`, `kl`, importance-sampled log p(x), the exported endpoints) is that of this
likelihood head. The loss trains the head only through its mean, never its log-density,
so expect worse ELBOs and log p(x) than a VAE with the same networks. `fit` reports the
per-example `recon_loss` (unweighted) as an extra metric.

The models `mssim_vae` and `logcosh_vae` are the VAE with the objective parts `mssim` and
`logcosh` (`tfvae.parts.reconstruction`, where the losses are).
"""
from __future__ import annotations

from tfvae.config import NonNegativeFloat, PositiveFloat, PositiveInt, Sizes, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.reconstruction import (SMALL_IMAGE_POWER_FACTORS, WANG_POWER_FACTORS, PowerFactors,
                                        check_mssim_image_shape, gaussian_window, log_cosh, log_cosh_loss, ms_ssim,
                                        ms_ssim_loss)
from tfvae.registry import register


@register("mssim_vae")
class MSSIMVAE(BaseVAE):
    """A VAE trained on 1 - MS-SSIM(x, E[x|z]) plus beta * KL (see the module docstring).

        loss = mean_b[recon_weight * (1 - MS-SSIM(x_b, x_hat_b)) + kl_weight * beta * KL_b]

    1 - MS-SSIM lies in [0, 1] per image; recon_weight None (the default) scales it by the
    number of data dimensions H * W * C (784 for 28x28x1), the size a per-pixel-summed
    reconstruction term has, so that beta = 1 keeps the KL's weight comparable to a VAE's.
    Not a bound on log p(x): `elbo` and log p(x) are those of the likelihood head.

    Args:
      power_factors: the weight of each scale (their number is the number of scales). The
        default, Wang et al.'s first three weights renormalised to sum to 1, with the
        7x7 window, fits images of 28x28 and larger (64x64 takes up to 4 scales).
      filter_size: side of the Gaussian window (odd or even); every scale must be at least
        this large, else the constructor raises ConfigError.
      filter_sigma: standard deviation of the window in pixels.
      beta: weight of the KL; recon_weight: of the reconstruction loss (None: H * W * C).
      data_shape: (height, width, channels); pixel values in [0, 1] (max_val = 1).
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, power_factors: PowerFactors = SMALL_IMAGE_POWER_FACTORS, filter_size: PositiveInt = 7,
                 filter_sigma: PositiveFloat = 1.0, beta: NonNegativeFloat = 1.0,
                 recon_weight: PositiveFloat | None = None, data_shape: Sizes = (28, 28, 1), **base):
        args = validate(MSSIMVAE, dict(power_factors=power_factors, filter_size=filter_size, filter_sigma=filter_sigma,
                                       beta=beta, recon_weight=recon_weight), "model 'mssim_vae'", fill_defaults=False)
        self.power_factors = tuple(args["power_factors"])
        self.filter_size, self.filter_sigma = args["filter_size"], args["filter_sigma"]
        self.beta, self.recon_weight = args["beta"], args["recon_weight"]
        super().__init__(data_shape=data_shape, **with_fixed_parts("mssim_vae", base, objective={
            "type": "mssim", "power_factors": list(self.power_factors), "filter_size": self.filter_size,
            "filter_sigma": self.filter_sigma, "beta": self.beta, "recon_weight": self.recon_weight}))

    def get_config(self):
        return {**super().get_config(), "power_factors": list(self.power_factors), "filter_size": self.filter_size,
                "filter_sigma": self.filter_sigma, "beta": self.beta, "recon_weight": self.recon_weight}

    def reconstruction_loss(self, x, x_hat):
        """1 - MS-SSIM(x, x_hat) per image, [B] (`MSSIMObjective`)."""
        return self.objective_part.reconstruction_loss(x, x_hat)


@register("logcosh_vae")
class LogCoshVAE(BaseVAE):
    """A VAE trained on the log-cosh reconstruction loss plus beta * KL (see the module docstring).

        loss = mean_b[recon_weight * sum_d (1/a) log cosh(a (x_hat_bd - x_bd)) + kl_weight * beta * KL_b]

    Data of any shape. recon_weight None (the default) means 1: the loss is already a sum
    over the data dimensions. Not a bound on log p(x): `elbo` and log p(x) are those of the
    likelihood head.

    recon_weight = a makes the loss the negative ELBO (less D log(pi / a)) of a hyperbolic
    secant likelihood of scale 1/a centred at x_hat.

    Args:
      a: sharpness of log-cosh (Chen et al. use 10): quadratic a t^2 / 2 for |t| << 1/a,
        absolute |t| - log(2)/a for |t| >> 1/a.
      beta: weight of the KL; recon_weight: of the reconstruction loss (None: 1).
      Other args as `BaseVAE` (but `objective`).
    """

    fixed_parts = ("objective",)

    def __init__(self, a: PositiveFloat = 10.0, beta: NonNegativeFloat = 1.0,
                 recon_weight: PositiveFloat | None = None, **base):
        args = validate(LogCoshVAE, dict(a=a, beta=beta, recon_weight=recon_weight), "model 'logcosh_vae'",
                        fill_defaults=False)
        self.a, self.beta, self.recon_weight = args["a"], args["beta"], args["recon_weight"]
        super().__init__(**with_fixed_parts("logcosh_vae", base, objective={
            "type": "logcosh", "a": self.a, "beta": self.beta, "recon_weight": self.recon_weight}))

    def get_config(self):
        return {**super().get_config(), "a": self.a, "beta": self.beta, "recon_weight": self.recon_weight}

    def reconstruction_loss(self, x, x_hat):
        """sum_d (1/a) log cosh(a (x_hat_d - x_d)) per example, [B] (`LogCoshObjective`)."""
        return self.objective_part.reconstruction_loss(x, x_hat)


__all__ = ["LogCoshVAE", "MSSIMVAE", "SMALL_IMAGE_POWER_FACTORS", "WANG_POWER_FACTORS", "check_mssim_image_shape",
           "gaussian_window", "log_cosh", "log_cosh_loss", "ms_ssim", "ms_ssim_loss"]
