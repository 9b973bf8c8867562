"""Training objectives, chosen in config as `objective:`.

An objective's `loss(model, x, condition, training, seed)` returns a `TrainingLoss`: the scalar
the model trains on (a mean over the batch), the per-example terms (`elbo`, `log_px_z`, `kl`
and the objective's own, every name in its `extra_metrics` logged by `fit`), and optionally a
surrogate loss per variable group (the encoder's variables, all the others) for estimators
that treat the two differently. The model's one generic training step differentiates it.

- `elbo`: the negative ELBO with the KL weighted by beta (Higgins et al. 2017), or the
  capacity form gamma * |KL - C| with C annealed (Burgess et al. 2018); beta = 1 is the VAE;
- `iwae`: the k-sample bound L_k = E log (1/k) sum_i w_i (Burda et al. 2016), with the
  standard or the doubly reparameterized encoder gradient (Tucker et al. 2019);
- `miwae`, `piwae`, `ciwae`: Rainforth et al. 2018's multi-sample bounds.

The KL rule: the ELBO's KL(q || p) is TFP's closed form when one is registered for the pair of
distributions and the model's kl is "analytic", else the Monte Carlo mean of
log q(z) - log p(z) over the objective's own draws (`BaseVAE.kl_term`); every objective reports
its terms through `BaseVAE.bound_terms`, which adds the KL's parts where a model has them.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import tensorflow as tf

from tfvae.config import UNIT_INTERVAL, NonNegativeFloat, PositiveInt
from tfvae.parts.base import Part, register_part


@dataclasses.dataclass
class TrainingLoss:
    """What a model trains on (`Objective.loss`, `BaseVAE.training_loss`).

    value: the scalar loss, a mean over the batch: logged as "loss", and its gradient trains
      every variable unless surrogates are given.
    terms: per-example tensors [B]: `elbo`, `log_px_z`, `kl`, and the objective's own.
    inference, generative: optional surrogate losses whose gradients train the encoder's
      variables and all the others respectively (IWAE's DReG, PIWAE, SA-VAE). None: `value`.
    aux: tensors `after_train_step` needs (e.g. the z a discriminator learns from).
    """

    value: tf.Tensor
    terms: dict
    inference: tf.Tensor | None = None
    generative: tf.Tensor | None = None
    aux: dict = dataclasses.field(default_factory=dict)


class Objective(Part):
    """What a model trains on. `extra_metrics`: names of its terms that `fit` logs besides
    loss, elbo, log_px_z and kl. `posteriors`: the posterior parts it works with (empty: any),
    and `posteriors_reason`, why (`tfvae.parts.rules`)."""

    extra_metrics: tuple[str, ...] = ()
    posteriors: tuple[str, ...] = ()
    posteriors_reason = ""

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        raise NotImplementedError

    def separate_variables(self, model) -> list:
        """Variables this objective trains with an optimizer of its own, which the model's
        optimizer must leave alone; none by default."""
        return []

    def after_train_step(self, model, result: TrainingLoss) -> dict:
        """A second update after the model's (a discriminator, an EMA codebook); returns metric
        values to log instead of those in `result.terms`."""
        return {}


@register_part("objective", "elbo")
class ELBOObjective(Objective):
    """loss = -mean_B [E_q log p(x|z) - w beta KL] (beta form), or, when `capacity` is set,
    -mean_B E_q log p(x|z) + w gamma |mean_B KL - C(t)| with C(t) = capacity * min(1, t /
    capacity_steps) at optimizer step t (capacity form; C = capacity outside `fit`); w is the
    KL warm-up weight (`kl_weight`, 1 after warm-up). One z ~ q(z|x) per example.

    Args:
      beta: weight of the KL (1: the VAE's negative ELBO).
      capacity: None for the beta form, else C_max in nats.
      capacity_steps: optimizer steps over which C rises from 0 to `capacity`.
      gamma: weight of |KL - C| in the capacity form.
    """

    def __init__(self, beta: NonNegativeFloat = 1.0, capacity: NonNegativeFloat | None = None,
                 capacity_steps: PositiveInt = 100_000, gamma: NonNegativeFloat = 1000.0):
        super().__init__()
        self.beta, self.capacity, self.capacity_steps, self.gamma = beta, capacity, capacity_steps, gamma

    def get_config(self):
        return {"beta": self.beta, "capacity": self.capacity, "capacity_steps": self.capacity_steps,
                "gamma": self.gamma}

    def current_capacity(self, model):
        """C in nats at the model's optimizer step (a float32 scalar tensor)."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return tf.constant(self.capacity, tf.float32)
        step = tf.cast(optimizer.iterations, tf.float32)
        return self.capacity * tf.minimum(1.0, step / float(self.capacity_steps))

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        terms = model.elbo_terms(x, 1, condition, seed=seed, training=training)
        weight = tf.cast(model.kl_weight, tf.float32)
        if self.capacity is None:
            factor = weight if self.beta == 1.0 else weight * self.beta
            return TrainingLoss(-tf.reduce_mean(terms["log_px_z"] - factor * terms["kl"]), terms)
        deviation = tf.abs(tf.reduce_mean(terms["kl"]) - self.current_capacity(model))
        return TrainingLoss(-tf.reduce_mean(terms["log_px_z"]) + weight * self.gamma * deviation, terms)


# ----------------------------------------------------------------- importance weights
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


def draw_weights(model, x, n: int, condition=None, seed=None, training=False):
    """n samples z ~ q(z|x) per example and their log-weights, all from one seed:

        log_w = log p(x|z) + kl_weight * (log p(z) - log q(z|x))        [n, B]

    (kl_weight is 1 except during KL warm-up, where it tempers the prior/posterior ratio as
    in the VAE's loss). Also returns `log_w_fixed_q`, the same values with q's parameters
    stopped in log q (the DReG form), and the ordinary ELBO terms of these samples: log_px_z
    = mean_i log p(x|z_i), kl = KL(q || p) (the KL rule of this module; `BaseVAE.bound_terms`)
    and elbo = log_px_z - kl, each [B]. The samples are drawn exactly as in
    `BaseVAE.log_weights`: with the same seed both see the same z.
    """
    params = model.posterior_params(x, condition, training=training)
    q = model.posterior_family.distribution(params)
    q, z, log_qz, log_px_z = model._sample_posterior(x, n, condition, seed, q, training)
    log_pz = model.prior().log_prob(z)
    log_qz_fixed = model.posterior_family.distribution(tf.stop_gradient(params)).log_prob(z)
    weight = tf.cast(model.kl_weight, log_px_z.dtype)
    return {"log_w": log_px_z + weight * (log_pz - log_qz),
            "log_w_fixed_q": log_px_z + weight * (log_pz - log_qz_fixed),
            "terms": model.bound_terms(tf.reduce_mean(log_px_z, axis=0), q, z, log_qz)}


@register_part("objective", "iwae")
class IWAEObjective(Objective):
    """loss = -mean_B L_k, L_k = log (1/k) sum_i w_i; the generative variables train on its
    gradient, the encoder on it too ("standard") or on -mean_B sum_i sg(wt_i^2) log w_i(q
    fixed) ("dreg": same expectation, far lower variance at large k).

    Args:
      k: importance samples per example (k = 1: the ELBO with a Monte Carlo KL).
      estimator: "standard" or "dreg".
    """

    def __init__(self, k: PositiveInt = 50, estimator: Literal["standard", "dreg"] = "standard"):
        super().__init__()
        self.k, self.estimator = k, estimator

    def get_config(self):
        return {"k": self.k, "estimator": self.estimator}

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        draws = draw_weights(model, x, self.k, condition, seed, training)
        loss = -tf.reduce_mean(log_mean_exp(draws["log_w"]))
        inference = None
        if self.estimator == "dreg":
            inference = -tf.reduce_mean(dreg_surrogate(draws["log_w_fixed_q"], model.kl_weight))
        return TrainingLoss(loss, draws["terms"], inference=inference)


@register_part("objective", "miwae")
class MIWAEObjective(Objective):
    """loss = -mean_B MIWAE_{M,K}: the mean of M independent IWAE_K bounds per example (M K
    samples in all).

    Args:
      m: M, the independent bounds averaged.
      k: K, the importance samples inside each.
    """

    def __init__(self, m: PositiveInt = 8, k: PositiveInt = 8):
        super().__init__()
        self.m, self.k = m, k

    def get_config(self):
        return {"m": self.m, "k": self.k}

    def grouped_log_weights(self, model, x, condition, training, seed):
        """(log-weights [M, K, B], ELBO terms) from M K samples drawn with one seed."""
        draws = draw_weights(model, x, self.m * self.k, condition, seed, training)
        return tf.reshape(draws["log_w"], [self.m, self.k, -1]), draws["terms"]

    @staticmethod
    def miwae_bound(log_w):
        """MIWAE_{M,K} per example from log-weights [M, K, B]: mean over M of IWAE_K."""
        return tf.reduce_mean(log_mean_exp(log_w, axis=1), axis=0)

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        log_w, terms = self.grouped_log_weights(model, x, condition, training, seed)
        return TrainingLoss(-tf.reduce_mean(self.miwae_bound(log_w)), terms)


@register_part("objective", "piwae")
class PIWAEObjective(MIWAEObjective):
    """The generative network trained on IWAE_{M K}, the encoder on MIWAE_{M,K}, both from the
    same M K samples; the reported loss is -IWAE_{M K}. Args as `miwae`."""

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        log_w, terms = self.grouped_log_weights(model, x, condition, training, seed)
        generative = -tf.reduce_mean(log_mean_exp(tf.reshape(log_w, [self.m * self.k, -1]), axis=0))
        return TrainingLoss(generative, terms, inference=-tf.reduce_mean(self.miwae_bound(log_w)))


@register_part("objective", "ciwae")
class CIWAEObjective(Objective):
    """loss = -(beta mean_B ELBO + (1 - beta) mean_B IWAE_K) from the same K samples, the ELBO's
    KL by this module's rule and weighted by kl_weight: beta = 1 is the VAE's loss (exactly at
    K = 1), beta = 0 is IWAE_K.

    Args:
      k: K, importance samples per example.
      beta: weight of the ELBO, in [0, 1].
    """

    def __init__(self, k: PositiveInt = 64, beta: Annotated[float, UNIT_INTERVAL] = 0.5):
        super().__init__()
        self.k, self.beta = k, beta

    def get_config(self):
        return {"k": self.k, "beta": self.beta}

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        draws = draw_weights(model, x, self.k, condition, seed, training)
        terms = draws["terms"]
        weight = tf.cast(model.kl_weight, terms["kl"].dtype)
        elbo = tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"])
        iwae = tf.reduce_mean(log_mean_exp(draws["log_w"]))
        return TrainingLoss(-(self.beta * elbo + (1.0 - self.beta) * iwae), terms)


__all__ = ["CIWAEObjective", "ELBOObjective", "IWAEObjective", "MIWAEObjective", "Objective", "PIWAEObjective",
           "TrainingLoss", "dreg_surrogate", "draw_weights", "log_mean_exp"]
