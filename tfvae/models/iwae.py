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

`MultiSampleVAE` is the shared machinery of the objectives built from importance weights
(IWAE here; MIWAE, PIWAE, CIWAE in `tfvae.models.multisample`): it draws the weights, reports
the ordinary single-path ELBO terms from the same samples, and trains with separate
surrogate losses for the inference (encoder) and generative (everything else) variables
(`TrainingLoss.inference` / `.generative`, which `BaseVAE.gradients` differentiates).
"""
from __future__ import annotations

from typing import Literal

import tensorflow as tf

from tfvae.config import PositiveInt, validate
from tfvae.models.base import BaseVAE, TrainingLoss
from tfvae.registry import register



def log_mean_exp(log_w, axis: int = 0):
    """log (1/n) sum_i exp(log_w_i) along `axis`, computed stably: the IWAE bound of the
    weights when `axis` indexes the samples."""
    n = tf.cast(tf.shape(log_w)[axis], log_w.dtype)
    return tf.reduce_logsumexp(log_w, axis=axis) - tf.math.log(n)


def dreg_surrogate(log_w_fixed_q, kl_weight=1.0, axis: int = 0):
    """sum_i stop_gradient(c_i) log w_i along `axis`, with wt = softmax(log w) and

        c_i = wt_i^2                                   (kl_weight = 1)
        c_i = (1 - kl_weight) wt_i + kl_weight wt_i^2  (tempered weights during KL warm-up)

    With log w computed from reparameterised z_i and q's parameters stopped, its gradient
    with respect to the encoder's parameters is the DReG estimator of grad_phi L_k: the
    score term -kl_weight * sum_i wt_i d log q(z_i)/d phi has, by the reparameterisation
    identity E[f d log q / d phi] = E[df/dz dz/dphi] applied to f = wt_i, the same expectation
    as -kl_weight * sum_i wt_i (1 - wt_i) d log w_i/dz_i dz_i/dphi. Its value is not a bound
    (only its gradient is used).
    """
    normalized = tf.stop_gradient(tf.nn.softmax(log_w_fixed_q, axis=axis))
    kl_weight = tf.cast(kl_weight, log_w_fixed_q.dtype)
    coefficients = tf.stop_gradient((1.0 - kl_weight) * normalized + kl_weight * tf.square(normalized))
    return tf.reduce_sum(coefficients * log_w_fixed_q, axis=axis)


class MultiSampleVAE(BaseVAE):
    """Base of the variants whose loss is built from several importance weights per example.

    A subclass's `loss` draws the weights (`draw_weights`) and may give a surrogate loss per
    variable group (`TrainingLoss.inference`: the encoder's variables; `.generative`: all the
    others); the training step differentiates each group's surrogate with respect to that
    group only, so an estimator may treat encoder and decoder differently (DReG, PIWAE).
    """

    def draw_weights(self, x, n: int, condition=None, seed=None, training=False):
        """n samples z ~ q(z|x) per example and their log-weights, all from one seed:

            log_w = log p(x|z) + kl_weight * (log p(z) - log q(z|x))        [n, B]

        (kl_weight is 1 except during KL warm-up, where it tempers the prior/posterior ratio
        as in the VAE's loss). Also returns `log_w_fixed_q`, the same values with q's
        parameters stopped in log q (the DReG form), and the ordinary ELBO terms of these
        samples: log_px_z = mean_i log p(x|z_i), kl = KL(q || p) (analytic when available,
        else the Monte Carlo mean over the samples), elbo = log_px_z - kl, each [B].

        The samples are drawn exactly as in `BaseVAE.log_weights`, so with the same seed
        both see the same z.
        """
        params = self.posterior_params(x, condition, training=training)
        q = self.posterior_family.distribution(params)
        q, z, log_qz, log_px_z = self._sample_posterior(x, n, condition, seed, q, training)
        log_pz = self.prior().log_prob(z)
        log_qz_fixed = self.posterior_family.distribution(tf.stop_gradient(params)).log_prob(z)
        weight = tf.cast(self.kl_weight, log_px_z.dtype)
        mean_log_px_z = tf.reduce_mean(log_px_z, axis=0)
        kl = self.kl_term(q, z, log_qz)
        return {"log_w": log_px_z + weight * (log_pz - log_qz),
                "log_w_fixed_q": log_px_z + weight * (log_pz - log_qz_fixed),
                "terms": {"log_px_z": mean_log_px_z, "kl": kl, "elbo": mean_log_px_z - kl}}


@register("iwae")
class IWAE(MultiSampleVAE):
    """Importance weighted autoencoder: maximises L_k = E log (1/k) sum_i w_i.

    Args:
      k: importance samples per example in training (k = 1: the VAE with a Monte Carlo KL).
      estimator: "standard" (reparameterised gradient of L_k) or "dreg" (doubly
        reparameterized encoder gradient; the decoder's is the standard one).
      Other args as `BaseVAE`.
    """

    def __init__(self, k: PositiveInt = 50, estimator: Literal["standard", "dreg"] = "standard", **base):
        args = validate(IWAE, dict(k=k, estimator=estimator), "model 'iwae'", fill_defaults=False)
        super().__init__(**base)
        self.k, self.estimator = args["k"], args["estimator"]

    def get_config(self):
        return {**super().get_config(), "k": self.k, "estimator": self.estimator}

    def loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """loss = -mean_B L_k; the generative variables train on its gradient, the encoder on
        it too ("standard") or on -mean_B sum_i sg(wt_i^2) log w_i(q fixed) ("dreg")."""
        draws = self.draw_weights(x, self.k, condition, seed, training)
        loss = -tf.reduce_mean(log_mean_exp(draws["log_w"]))
        inference = None
        if self.estimator == "dreg":
            inference = -tf.reduce_mean(dreg_surrogate(draws["log_w_fixed_q"], self.kl_weight))
        return TrainingLoss(loss, draws["terms"], inference=inference)


__all__ = ["IWAE", "MultiSampleVAE", "dreg_surrogate", "log_mean_exp"]
