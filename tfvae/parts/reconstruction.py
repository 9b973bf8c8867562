"""Objectives that train on a reconstruction loss instead of -log p(x|z), plus beta * KL:
1 - MS-SSIM (`mssim`) and log-cosh (`logcosh`), with the losses themselves
(`tfvae.models.recon_losses` has the math and the choices).

    loss = mean_b[recon_weight * recon_loss(x_b, x_hat_b) + w beta KL(q(z|x_b) || p(z))]

with one reparameterised z ~ q(z|x_b) per example, x_hat_b the mean of p(x|z) there and w the
KL warm-up weight. Not a bound on log p(x): the reported `elbo`, `log_px_z` and `kl` are the
likelihood head's for the same z, and `recon_loss` (unweighted) is logged by `fit`.
"""
from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import tensorflow as tf

from tfvae.config import Check, ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt
from tfvae.inputs import check_batch
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss

WANG_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # 5 scales, Wang et al. 2003
# The first three, renormalised to sum to 1: the default for 28x28 and 64x64 images.
SMALL_IMAGE_POWER_FACTORS = tuple(w / sum(WANG_POWER_FACTORS[:3]) for w in WANG_POWER_FACTORS[:3])

PowerFactors = Annotated[tuple[float, ...], Check(lambda v: len(v) > 0 and all(w > 0 for w in v),
                                                   "non-empty, all entries > 0")]


# ---------------------------------------------------------------------------- log-cosh
def log_cosh(u):
    """log cosh(u) elementwise, as |u| + softplus(-2|u|) - log 2: finite for any finite u,
    with gradient tanh(u)."""
    u = tf.abs(u)
    return u + tf.nn.softplus(-2.0 * u) - math.log(2.0)


def log_cosh_loss(x, x_hat, a: float = 10.0, event_ndims: int | None = None):
    """sum over the event dims of (1/a) log cosh(a (x_hat - x)).

    Args:
      x, x_hat: [B, *event_shape] (float32 or float64; x_hat's dtype is kept).
      a: the sharpness a > 0.
      event_ndims: how many trailing axes to sum over; None: all but the first.
    Returns:
      [B] per-example losses.
    """
    x_hat = tf.convert_to_tensor(x_hat)
    x = tf.cast(x, x_hat.dtype)
    event_ndims = x_hat.shape.rank - 1 if event_ndims is None else event_ndims
    per_dim = log_cosh(a * (x_hat - x)) / a
    return tf.reduce_sum(per_dim, axis=list(range(-event_ndims, 0)))


# ---------------------------------------------------------------------------- MS-SSIM
def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """The normalised size x size Gaussian window exp(-(i^2 + j^2) / (2 sigma^2)), with i, j
    centred offsets (half-integers for an even size), as `tf.image.ssim`'s filter."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / sigma ** 2)
    return g / g.sum()


def scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """(height, width) at each of `scales` scales: each halves the sides, rounding up."""
    sizes = [(height, width)]
    for _ in range(scales - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def check_mssim_image_shape(data_shape, scales: int, filter_size: int, where: str = "MS-SSIM"):
    """Raises ConfigError unless data_shape is (H, W, C) and every one of `scales` scales is
    at least filter_size x filter_size (the window is applied without padding)."""
    data_shape = tuple(data_shape)
    if len(data_shape) != 3:
        raise ConfigError(f"{where}: MS-SSIM needs images shaped (height, width, channels), got data_shape "
                          f"{data_shape}")
    height, width, _ = data_shape
    sizes = scale_sizes(height, width, scales)
    if min(sizes[-1]) < filter_size:
        usable = sum(1 for h, w in scale_sizes(height, width, 64) if min(h, w) >= filter_size)
        advice = (f"at most {usable} scale(s) (power_factors of length {usable}) fit with filter_size {filter_size}"
                  if usable else f"use a filter_size of at most {min(height, width)}")
        raise ConfigError(
            f"{where}: {height}x{width} images are too small for {scales} scales with filter_size {filter_size}: "
            f"scale {scales - 1} is {sizes[-1][0]}x{sizes[-1][1]}, smaller than the {filter_size}x{filter_size} "
            f"window; {advice}, or use a smaller filter_size.")


def _downsample(images):
    """2x2 average pooling of [N, H, W, C] (static H, W); an odd side is first padded by
    repeating its last row/column (mirror padding, as tf.image.ssim_multiscale)."""
    height, width = images.shape[1], images.shape[2]
    if height % 2 or width % 2:
        images = tf.pad(images, [[0, 0], [0, height % 2], [0, width % 2], [0, 0]], mode="SYMMETRIC")
    return tf.nn.avg_pool2d(images, ksize=2, strides=2, padding="VALID")


def _ssim_and_cs(x, y, window, max_val: float, k1: float, k2: float):
    """Mean SSIM and mean contrast-structure term over the window positions (no padding),
    each [N, C], for x, y [N, H, W, C] and window [f, f, C, 1]."""
    def local_mean(t):
        return tf.nn.depthwise_conv2d(t, window, strides=[1, 1, 1, 1], padding="VALID")

    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    mu_x, mu_y = local_mean(x), local_mean(y)
    mu_xy = mu_x * mu_y
    luminance = (2.0 * mu_xy + c1) / (tf.square(mu_x) + tf.square(mu_y) + c1)
    # sigma_xy = E[xy] - mu_x mu_y and sigma_x^2 + sigma_y^2 = E[x^2 + y^2] - mu_x^2 - mu_y^2
    cs = ((2.0 * (local_mean(x * y) - mu_xy) + c2)
          / (local_mean(tf.square(x) + tf.square(y)) - tf.square(mu_x) - tf.square(mu_y) + c2))
    return tf.reduce_mean(luminance * cs, axis=[1, 2]), tf.reduce_mean(cs, axis=[1, 2])


def _clipped_power(value, power: float):
    """max(value, 0) ** power, with gradient 0 (not NaN) where value <= 0."""
    positive = value > 0
    return tf.where(positive, tf.pow(tf.where(positive, value, tf.ones_like(value)), power), tf.zeros_like(value))


def ms_ssim(x, y, power_factors=SMALL_IMAGE_POWER_FACTORS, filter_size: int = 7, filter_sigma: float = 1.0,
            max_val: float = 1.0, k1: float = 0.01, k2: float = 0.03):
    """Multi-scale SSIM of image pairs, with the value of `tf.image.ssim_multiscale` (same
    arguments) but no host-side assert in the graph.

    Args:
      x, y: [..., H, W, C] images of the same shape, with static H, W, C (x is cast to
        y's dtype).
      power_factors: the weight w_s of each scale; their number is the number of scales.
      filter_size, filter_sigma: the Gaussian window (size x size, standard deviation).
      max_val: the dynamic range of the pixel values (1 for data in [0, 1]).
    Returns:
      [...] MS-SSIM per image: prod_s max(cs_s, 0)^{w_s} (s < last) * max(ssim_last, 0)^{w_last},
      averaged over channels; 1 for identical images.
    Raises:
      ConfigError: the images are not (H, W, C) or too small for the scales and window.
    """
    y = tf.convert_to_tensor(y)
    x = tf.cast(x, y.dtype)
    image_shape = tuple(y.shape[-3:])
    if y.shape.rank is None or y.shape.rank < 3 or None in image_shape:
        raise ConfigError(f"MS-SSIM needs images [..., height, width, channels] with a static shape, got {y.shape}")
    power_factors = tuple(float(w) for w in power_factors)
    check_mssim_image_shape(image_shape, len(power_factors), filter_size)
    leading = tf.shape(y)[:-3]
    x, y = (tf.reshape(t, (-1, *image_shape)) for t in (x, y))
    window = gaussian_window(filter_size, filter_sigma)[:, :, None, None]
    window = tf.constant(np.tile(window, (1, 1, image_shape[-1], 1)), y.dtype)
    factors = []
    for s, power in enumerate(power_factors):
        if s > 0:
            x, y = _downsample(x), _downsample(y)
        ssim, cs = _ssim_and_cs(x, y, window, max_val, k1, k2)
        factors.append(_clipped_power(ssim if s == len(power_factors) - 1 else cs, power))
    per_channel = tf.reduce_prod(tf.stack(factors, axis=-1), axis=-1)           # [N, C]
    return tf.reshape(tf.reduce_mean(per_channel, axis=-1), leading)


def ms_ssim_loss(x, x_hat, **ms_ssim_args):
    """1 - MS-SSIM(x, x_hat) per image, [...] for images [..., H, W, C]; in [0, 1], 0 for
    identical images. Keyword arguments as `ms_ssim`."""
    return 1.0 - ms_ssim(x, x_hat, **ms_ssim_args)


class ReconstructionObjective(Objective):
    """Base of the reconstruction-loss objectives. Args: beta, the KL's weight; recon_weight,
    the reconstruction loss's (None: `default_recon_weight`)."""

    extra_metrics = ("recon_loss",)

    def __init__(self, beta: NonNegativeFloat = 1.0, recon_weight: PositiveFloat | None = None):
        super().__init__()
        self.beta, self.recon_weight = beta, recon_weight

    def get_config(self):
        return {"beta": self.beta, "recon_weight": self.recon_weight}

    def default_recon_weight(self) -> float:
        return 1.0

    @property
    def effective_recon_weight(self) -> float:
        return self.default_recon_weight() if self.recon_weight is None else self.recon_weight

    def reconstruction_loss(self, x, x_hat):
        """Per-example reconstruction loss [B] of x_hat [B, *data_shape] against x."""
        raise NotImplementedError

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        x = check_batch(x, model.data_shape, "x", model.likelihood.support)
        q = model.encode(x, condition, training=training)
        z, log_qz = q.experimental_sample_and_log_prob(1, seed=model._seed(seed))     # [1, B, L], [1, B]
        p = model.decode(z, condition, training=training)                             # batch shape [1, B]
        terms = model.bound_terms(p.log_prob(x)[0], q, z, log_qz)
        recon = self.reconstruction_loss(x, p.mean()[0])
        weight = tf.cast(model.kl_weight, tf.float32)
        loss = tf.reduce_mean(self.effective_recon_weight * recon + (weight * self.beta) * terms["kl"])
        return TrainingLoss(loss, {**terms, "recon_loss": recon})


@register_part("objective", "mssim")
class MSSIMObjective(ReconstructionObjective):
    """recon_loss = 1 - MS-SSIM(x, x_hat) per image (in [0, 1]); recon_weight None scales it by
    the number of data dimensions H W C, the size of a per-pixel-summed term, so that beta = 1
    keeps the KL's weight comparable to a VAE's. Needs images (H, W, C) with pixels in [0, 1],
    large enough for every scale and the window.

    Args:
      power_factors: the weight of each scale (their number is the number of scales).
      filter_size: side of the Gaussian window; filter_sigma: its standard deviation in pixels.
      beta, recon_weight: as `ReconstructionObjective`.
    """

    def __init__(self, power_factors: PowerFactors = SMALL_IMAGE_POWER_FACTORS, filter_size: PositiveInt = 7,
                 filter_sigma: PositiveFloat = 1.0, beta: NonNegativeFloat = 1.0,
                 recon_weight: PositiveFloat | None = None):
        super().__init__(beta, recon_weight)
        self.power_factors, self.filter_size, self.filter_sigma = tuple(power_factors), filter_size, filter_sigma

    def get_config(self):
        return {"power_factors": list(self.power_factors), "filter_size": self.filter_size,
                "filter_sigma": self.filter_sigma, **super().get_config()}

    def attach(self, model):
        check_mssim_image_shape(model.data_shape, len(self.power_factors), self.filter_size, "objective 'mssim'")
        super().attach(model)

    def default_recon_weight(self) -> float:
        return float(np.prod(self.model.data_shape))

    def reconstruction_loss(self, x, x_hat):
        return ms_ssim_loss(x, x_hat, power_factors=self.power_factors, filter_size=self.filter_size,
                            filter_sigma=self.filter_sigma)


@register_part("objective", "logcosh")
class LogCoshObjective(ReconstructionObjective):
    """recon_loss = sum_d (1/a) log cosh(a (x_hat_d - x_d)) per example; recon_weight None means
    1. recon_weight = a makes the loss the negative ELBO (less D log(pi / a)) of a hyperbolic
    secant likelihood of scale 1/a centred at x_hat.

    Args:
      a: sharpness (Chen et al. use 10).
      beta, recon_weight: as `ReconstructionObjective`.
    """

    def __init__(self, a: PositiveFloat = 10.0, beta: NonNegativeFloat = 1.0, recon_weight: PositiveFloat | None = None):
        super().__init__(beta, recon_weight)
        self.a = a

    def get_config(self):
        return {"a": self.a, **super().get_config()}

    def reconstruction_loss(self, x, x_hat):
        return log_cosh_loss(x, x_hat, self.a, event_ndims=len(self.model.data_shape))


__all__ = ["LogCoshObjective", "MSSIMObjective", "ReconstructionObjective", "SMALL_IMAGE_POWER_FACTORS",
           "WANG_POWER_FACTORS", "check_mssim_image_shape", "gaussian_window", "log_cosh", "log_cosh_loss", "ms_ssim",
           "ms_ssim_loss"]
