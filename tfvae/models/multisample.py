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

import tensorflow as tf

from tfvae.config import UNIT_INTERVAL, PositiveInt, validate
from tfvae.models.base import TrainingLoss
from tfvae.models.iwae import MultiSampleVAE, log_mean_exp
from tfvae.registry import register

UnitFloat = Annotated[float, UNIT_INTERVAL]


@register("miwae")
class MIWAE(MultiSampleVAE):
    """Multiply importance weighted autoencoder: maximises MIWAE_{M,K}, the mean of M
    independent IWAE_K bounds per example (M*K samples in all).

    Args:
      m: M, the number of independent IWAE_K bounds averaged.
      k: K, the importance samples inside each bound.
      Other args as `BaseVAE`.
    """

    def __init__(self, m: PositiveInt = 8, k: PositiveInt = 8, **base):
        args = validate(MIWAE, dict(m=m, k=k), f"model {type(self).registered_name!r}", fill_defaults=False)
        super().__init__(**base)
        self.m, self.k = args["m"], args["k"]

    def get_config(self):
        return {**super().get_config(), "m": self.m, "k": self.k}

    def grouped_log_weights(self, x, condition, training, seed):
        """(log-weights [M, K, B], ELBO terms) from M*K samples drawn with one seed."""
        draws = self.draw_weights(x, self.m * self.k, condition, seed, training)
        return tf.reshape(draws["log_w"], [self.m, self.k, -1]), draws["terms"]

    @staticmethod
    def miwae_bound(log_w):
        """MIWAE_{M,K} per example from log-weights [M, K, B]: mean over M of IWAE_K."""
        return tf.reduce_mean(log_mean_exp(log_w, axis=1), axis=0)

    def loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """loss = -mean_B MIWAE_{M,K}, which trains both networks."""
        log_w, terms = self.grouped_log_weights(x, condition, training, seed)
        return TrainingLoss(-tf.reduce_mean(self.miwae_bound(log_w)), terms)


@register("piwae")
class PIWAE(MIWAE):
    """Partially importance weighted autoencoder: the generative network trained on
    IWAE_{M*K}, the inference network on MIWAE_{M,K}.

    Both from the same M*K samples; the generative network is the decoder and the likelihood's
    parameters, the inference network the encoder. The reported loss is -IWAE_{M*K}, the bound the generative
    model is fitted to: its own gradient is that of IWAE_{M*K} for every variable, and the
    training step gives the encoder the MIWAE surrogate instead. Args as `MIWAE`.
    """

    def loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        log_w, terms = self.grouped_log_weights(x, condition, training, seed)
        generative = -tf.reduce_mean(log_mean_exp(tf.reshape(log_w, [self.m * self.k, -1]), axis=0))
        inference = -tf.reduce_mean(self.miwae_bound(log_w))
        return TrainingLoss(generative, terms, inference=inference)


@register("ciwae")
class CIWAE(MultiSampleVAE):
    """Combination importance weighted autoencoder: maximises
    beta * ELBO + (1 - beta) * IWAE_K from the same K samples.

    The ELBO term is mean_k log p(x|z_k) - KL(q || p), the KL analytic when available (as in
    the VAE; an unbiased, lower-variance estimate of the same ELBO as the paper's
    mean_k log w_k, which is what kl="monte_carlo" gives), so beta = 1 is the VAE's loss
    (exactly so at K = 1) and beta = 0 is IWAE_K.

    Args:
      k: K, importance samples per example.
      beta: weight of the ELBO, in [0, 1].
      Other args as `BaseVAE`.
    """

    def __init__(self, k: PositiveInt = 64, beta: UnitFloat = 0.5, **base):
        args = validate(CIWAE, dict(k=k, beta=beta), f"model {type(self).registered_name!r}", fill_defaults=False)
        super().__init__(**base)
        self.k, self.beta = args["k"], args["beta"]

    def get_config(self):
        return {**super().get_config(), "k": self.k, "beta": self.beta}

    def loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """loss = -(beta * mean_B ELBO + (1 - beta) * mean_B IWAE_K), with the KL of the ELBO
        weighted by kl_weight as in the VAE; it trains both networks."""
        draws = self.draw_weights(x, self.k, condition, seed, training)
        terms = draws["terms"]
        weight = tf.cast(self.kl_weight, terms["kl"].dtype)
        elbo = tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"])
        iwae = tf.reduce_mean(log_mean_exp(draws["log_w"]))
        return TrainingLoss(-(self.beta * elbo + (1.0 - self.beta) * iwae), terms)


__all__ = ["CIWAE", "MIWAE", "PIWAE"]
