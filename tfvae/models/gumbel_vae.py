"""Gumbel-softmax / Concrete VAE (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017): a VAE whose
latent is N categorical variables of K classes each, trained through their continuous relaxation.

The model. z = [z_1, ..., z_N], each z_i a one-hot vector of K classes (concatenated, so
latent_dim = N * K and every generic tool sees one latent vector; z_i is z[i*K:(i+1)*K]):

    p(z) = prod_i Cat(z_i; uniform),   q(z|x) = prod_i Cat(z_i; pi_i(x)),  pi_i = softmax(l_i(x)),

with the encoder giving the N*K logits l. Its ELBO has the closed-form KL

    KL = sum_i KL(Cat(pi_i) || Uniform(K)) = sum_i sum_k pi_ik log(pi_ik K)     in [0, N log K].

Training: one-hot draws are not differentiable, so each training step replaces them by the
Concrete / Gumbel-softmax relaxation at temperature tau: with g_k ~ Gumbel(0, 1),

    y_i = softmax((l_i + g_i) / tau)   (argmax y_i = argmax(l_i + g_i) is an exact draw of Cat(pi_i)),

a reparameterised point of the simplex, with density (Maddison et al., eq. 3; TFP's convention)

    log p(y) = log (K-1)! + (K-1) log tau + sum_k [l_k - (tau+1) log y_k] - K logsumexp_k(l_k - tau log y_k),

and prior draws relaxed the same way from uniform logits. The training loss is

    -E_{y ~ relaxed q}[log p(x|y)] + kl_weight * KL       (kl="analytic": the discrete KL above,
                                                          what both papers train on)

or, with kl="monte_carlo", the one-sample relaxed KL log q_tau(y|x) - log p_tau(y) instead.

Evaluation (`evaluate_as`). "discrete" (the default): everywhere outside the training step
(`elbo_terms`, importance-sampled log p(x), `sample`, `reconstruct`, export) the latents are the
one-hot categoricals of the model above, as in Maddison et al., who train relaxed and evaluate
the discrete model. The reported ELBO and log p(x) then bound the same model, and log p(x) >=
ELBO. "relaxed": the relaxed densities at the stored temperature are used there too, with the
reported KL still the discrete one (kl="analytic"); then the ELBO and the importance-sampled
log p(x) (which uses the relaxed q and p) bound different models and "log p(x) - ELBO" is not a
gap. On binarized MNIST (30 x 10 latents, 10 epochs) relaxed evaluation gave log p(x) ~ -700
nats against an ELBO of -111: the relaxed q concentrates far more sharply than the relaxed prior
(the relaxed KL grows with the logit gaps, the discrete one is at most log K per latent), so
the discrete model is the one worth scoring; its log p(x) was -106 (ELBO -129: the decoder sees
hard codes it was not trained on until tau is small).

Temperature annealing (in-graph, no callback): every training step t (t = the optimizer's
iteration count before the update, starting at 0) runs at

    tau_t = max(tau_min, tau0 * exp(-anneal_rate * t)),

stored in the non-trainable weight `temperature` (saved with the weights; relaxed evaluation
uses it, i.e. the temperature of the last training step). Jang et al. anneal with r in
{1e-5, 1e-4} per step, updating tau every 500 or 1000 steps; this updates it every step. The
defaults tau0 = 1, tau_min = 0.5, r = 3e-5 are those of the authors' MNIST notebook (30 x 10
latents). A fresh optimizer (e.g. fine-tuning a loaded model) restarts the schedule at tau0.
The straight-through ("hard") estimator is not implemented.

Numerics: relaxed draws are made in log space, log y = log_softmax((l + g) / tau), each log y_k
floored at LOG_FLOOR = -80 before exponentiating, so no y_k underflows to 0 (which would make
log p(y) infinite or NaN for a confident encoder); densities are evaluated at log y, so q and p
see the same (floored) point. The floor changes only draws with some y_k < e^-80.
"""
from __future__ import annotations

import contextlib
import math
from typing import Annotated, Literal

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import seeds
from tfvae.config import (Check, ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, validate)
from tfvae.models.base import BaseVAE
from tfvae.registry import register

tfd = tfp.distributions

LOG_FLOOR = -80.0                                # log y_k >= LOG_FLOOR for every relaxed draw
_TINY = float(np.finfo(np.float32).tiny)         # smallest normal float32: uniforms in [tiny, 1)

Categories = Annotated[int, Check(lambda v: v >= 2, ">= 2")]
CategorySizes = Annotated[tuple[int, ...], Check(lambda v: all(k >= 2 for k in v), "all entries >= 2")]
EvaluateAs = Literal["discrete", "relaxed"]


# --------------------------------------------------------------------- pure functions
def annealed_temperature(step, tau0: float, tau_min: float, anneal_rate: float):
    """tau = max(tau_min, tau0 * exp(-anneal_rate * step)), a float32 scalar tensor."""
    step = tf.cast(step, tf.float32)
    return tf.maximum(tf.constant(tau_min, tf.float32), tau0 * tf.exp(-anneal_rate * step))


def _groups(categories) -> list[tuple[int, int]]:
    """Runs of equal sizes as (count, size): (10, 10, 10, 5) -> [(3, 10), (1, 5)]."""
    groups = []
    for k in categories:
        if groups and groups[-1][1] == k:
            groups[-1] = (groups[-1][0] + 1, k)
        else:
            groups.append((1, k))
    return groups


def split_categories(t, categories) -> list:
    """The flat [..., sum(categories)] tensor t as a list of [..., n, K] tensors, one per run of
    n consecutive categoricals of the same size K (a single reshape when all sizes are equal)."""
    groups = _groups(categories)
    chunks = [t] if len(groups) == 1 else tf.split(t, [n * k for n, k in groups], axis=-1)
    leading = tf.shape(t)[:-1]
    return [tf.reshape(c, tf.concat([leading, [n, k]], 0)) for c, (n, k) in zip(chunks, groups)]


def merge_categories(blocks) -> tf.Tensor:
    """The inverse of `split_categories`: [..., n, K] blocks back to one [..., sum n*K] tensor."""
    flat = [tf.reshape(b, tf.concat([tf.shape(b)[:-2], [b.shape[-2] * b.shape[-1]]], 0)) for b in blocks]
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=-1)


def categorical_kl_to_uniform(logits, categories):
    """sum_i KL(Cat(softmax(l_i)) || Uniform(K_i)) = sum_i sum_k pi_ik log(pi_ik K_i), shape [...],
    for flat logits [..., sum(categories)] (categorical i's logits in its own slice)."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    total = 0.0
    for block in split_categories(logits, categories):
        log_pi = tf.nn.log_softmax(block, axis=-1)
        total += tf.reduce_sum(tf.exp(log_pi) * (log_pi + math.log(block.shape[-1])), axis=[-2, -1])
    return total


# --------------------------------------------------------------------- distributions
class CategoricalProduct(tfd.Distribution):
    """Base of `OneHotProduct` and `RelaxedOneHotProduct`: independent categoricals with flat
    logits [..., sum(categories)] (categorical i's logits in its own slice): batch shape [...],
    event shape [sum(categories)]. Both draw from the same Gumbel noise, so for one seed the
    one-hot draw is the argmax of the relaxed one (the Gumbel-max trick)."""

    def __init__(self, logits, categories, reparameterization_type, parameters, name):
        self._categories = tuple(int(k) for k in categories)
        if not self._categories or min(self._categories) < 2:
            raise ValueError(f"categories must be a non-empty list of class counts >= 2, got {categories!r}")
        self._size = sum(self._categories)
        with tf.name_scope(name):
            self._logits = tf.convert_to_tensor(logits, tf.float32, name="logits")
        shape = self._logits.shape
        if shape.rank is not None and (shape.rank < 1 or shape[-1] not in (None, self._size)):
            raise ValueError(f"logits must have shape [..., {self._size}] (sum of categories "
                             f"{list(self._categories)}), got {shape}")
        super().__init__(dtype=tf.float32, reparameterization_type=reparameterization_type, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    @property
    def logits(self):
        return self._logits

    @property
    def categories(self) -> tuple[int, ...]:
        return self._categories

    def _batch_shape(self):
        return self._logits.shape[:-1]

    def _batch_shape_tensor(self):
        return tf.shape(self._logits)[:-1]

    def _event_shape(self):
        return tf.TensorShape([self._size])

    def _event_shape_tensor(self):
        return tf.constant([self._size], tf.int32)

    def _perturbed_logits(self, sample_shape, seed):
        """l + g [*sample_shape, *batch, sum K], g standard Gumbel from one stateless uniform draw."""
        shape = tf.concat([tf.cast(sample_shape, tf.int32), tf.shape(self._logits)], 0)
        uniform = _TINY + (1.0 - _TINY) * seeds.uniform(shape, tfp.random.sanitize_seed(seed))     # [_TINY, 1)
        return self._logits - tf.math.log(-tf.math.log(uniform))

    def categorical_kl_to_uniform(self):
        """KL of these categoricals to uniform ones, summed over them: [batch]."""
        return categorical_kl_to_uniform(self._logits, self._categories)


class OneHotProduct(CategoricalProduct):
    """prod_i Cat(z_i; softmax(l_i)) over concatenated one-hot vectors z = [z_1, ..., z_N].

    log p(z) = sum_i sum_k z_ik log pi_ik (for one-hot z); mean = pi, stddev = sqrt(pi (1 - pi)).
    Draws are not reparameterised (no gradient reaches the logits through them).
    """

    def __init__(self, logits, categories, name="OneHotProduct"):
        parameters = dict(locals())
        super().__init__(logits, categories, tfd.NOT_REPARAMETERIZED, parameters, name)

    def _sample_n(self, n, seed=None):
        blocks = split_categories(self._perturbed_logits(tf.reshape(n, [1]), seed), self._categories)
        return tf.stop_gradient(merge_categories(
            [tf.one_hot(tf.argmax(b, axis=-1), b.shape[-1], dtype=tf.float32) for b in blocks]))

    def _log_prob(self, z):
        blocks = split_categories(self._logits, self._categories)
        log_pi = merge_categories([tf.nn.log_softmax(b, axis=-1) for b in blocks])
        return tf.reduce_sum(tf.convert_to_tensor(z, tf.float32) * log_pi, axis=-1)

    def _mean(self):
        return merge_categories([tf.nn.softmax(b, axis=-1) for b in split_categories(self._logits, self._categories)])

    def _stddev(self):
        probs = self._mean()
        return tf.sqrt(probs * (1.0 - probs))


class RelaxedOneHotProduct(CategoricalProduct):
    """prod_i Concrete(y_i; l_i, tau): independent relaxed one-hot categoricals, concatenated.

    Args:
      logits: [..., sum(categories)]; categorical i's logits are its slice (batch shape [...]).
      categories: the class counts K_i (each >= 2); event shape [sum(categories)].
      temperature: tau > 0, a scalar shared by all categoricals.

    Draws are reparameterised. `log_prob` is the sum over i of TFP's
    `RelaxedOneHotCategorical.log_prob`, evaluated at log(max(y, e^LOG_FLOOR)); a point with a
    negative entry has log-density -inf. There is no closed-form mean (`mean()` raises
    NotImplementedError; `tfvae.distributions.moments` estimates it from draws).
    """

    def __init__(self, logits, categories, temperature, name="RelaxedOneHotProduct"):
        parameters = dict(locals())
        with tf.name_scope(name):
            self._temperature = tf.convert_to_tensor(temperature, tf.float32, name="temperature")
        super().__init__(logits, categories, tfd.FULLY_REPARAMETERIZED, parameters, name)

    @property
    def temperature(self):
        return self._temperature

    def _log_space_sample(self, sample_shape, seed):
        """log y [*sample_shape, *batch, sum K]: log_softmax((l + g) / tau) per categorical,
        floored at LOG_FLOOR."""
        perturbed = self._perturbed_logits(sample_shape, seed) / self._temperature
        return merge_categories([tf.maximum(tf.nn.log_softmax(b, axis=-1), LOG_FLOOR)
                                 for b in split_categories(perturbed, self._categories)])

    def _log_density(self, log_y):
        """log p(y) [...] from log y [..., sum K] (Concrete density, summed over categoricals)."""
        tau = self._temperature
        total = 0.0
        for l, s in zip(split_categories(self._logits, self._categories), split_categories(log_y, self._categories)):
            k = float(l.shape[-1])
            per = (math.lgamma(k) + (k - 1.0) * tf.math.log(tau)
                   + tf.reduce_sum(l - (tau + 1.0) * s, axis=-1)
                   - k * tf.reduce_logsumexp(l - tau * s, axis=-1))
            total += tf.reduce_sum(per, axis=-1)
        return total

    def _sample_n(self, n, seed=None):
        return tf.exp(self._log_space_sample(tf.reshape(n, [1]), seed))

    def _sample_and_log_prob(self, sample_shape, seed):
        log_y = self._log_space_sample(sample_shape, seed)
        return tf.exp(log_y), self._log_density(log_y)

    def _log_prob(self, y):
        y = tf.convert_to_tensor(y, tf.float32)
        log_p = self._log_density(tf.math.log(tf.maximum(y, math.exp(LOG_FLOOR))))
        return tf.where(tf.reduce_any(y < 0.0, axis=-1), tf.constant(-np.inf, tf.float32), log_p)


class CategoricalPosterior:
    """q(z|x) from the encoder's sum(categories) logits, through `make(logits)` (the model's
    `categorical_latents`: one-hot or relaxed, as the model's mode says)."""

    def __init__(self, categories, make):
        self.categories, self.make = tuple(categories), make

    def num_params(self, latent_dim: int) -> int:
        return sum(self.categories)

    def distribution(self, params) -> tfd.Distribution:
        return self.make(tf.cast(params, tf.float32))


# --------------------------------------------------------------------- models
class RelaxedLatentVAE(BaseVAE):
    """Base of the models with categorical latents trained through their relaxation
    (`GumbelVAE`, `JointVAE`): the latents' mode and the annealed temperature.

    Inside the training step, and inside `with model.relaxed_latents():`, the categorical latents
    are relaxed (`RelaxedOneHotProduct` at the current temperature); elsewhere they are what
    `evaluate_as` says ("discrete": `OneHotProduct`). Subclasses build their categorical
    distributions with `categorical_latents` and call `_set_latent_settings` before
    `BaseVAE.__init__`. Each training step first sets `temperature` to
    max(tau_min, tau0 * exp(-anneal_rate * t)), t = `optimizer.iterations`.
    """

    euclidean_latent = False      # one-hot codes (or points of the simplex when relaxed)

    def _set_latent_settings(self, tau0: float, tau_min: float, anneal_rate: float, evaluate_as: str, where: str):
        if tau_min > tau0:
            raise ConfigError(f"{where}: 'tau_min' ({tau_min}) must be <= 'tau0' ({tau0})")
        self.tau0, self.tau_min, self.anneal_rate = float(tau0), float(tau_min), float(anneal_rate)
        self.evaluate_as = evaluate_as
        self._relaxing = 0

    def build_variant(self):
        """The temperature weight, starting at tau0. Copied from the first replica under a
        distribution strategy (every replica computes the same value)."""
        self.temperature = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.tau0),
                                           trainable=False, aggregation="only_first_replica", name="temperature")

    def latent_config(self) -> dict:
        return {"tau0": self.tau0, "tau_min": self.tau_min, "anneal_rate": self.anneal_rate,
                "evaluate_as": self.evaluate_as}

    @contextlib.contextmanager
    def relaxed_latents(self):
        """Within this block (and in every training step: `training_scope`), distributions over the categorical latents
        are the relaxed ones. Read when a distribution is built (at trace time in a graph)."""
        self._relaxing += 1
        try:
            yield self
        finally:
            self._relaxing -= 1

    @property
    def latents_relaxed(self) -> bool:
        return self._relaxing > 0 or self.evaluate_as == "relaxed"

    def categorical_latents(self, logits) -> CategoricalProduct:
        """The categorical latents with these logits [..., sum K]: relaxed at the current
        temperature when `latents_relaxed`, else one-hot."""
        if self.latents_relaxed:
            return RelaxedOneHotProduct(logits, self.category_sizes, self.current_temperature())
        return OneHotProduct(logits, self.category_sizes)

    def scheduled_temperature(self, step):
        """The temperature of training step `step` (a float32 scalar tensor)."""
        return annealed_temperature(step, self.tau0, self.tau_min, self.anneal_rate)

    def current_temperature(self):
        """The stored temperature (a float32 scalar tensor)."""
        return tf.cast(self.temperature, tf.float32)

    @contextlib.contextmanager
    def training_scope(self):
        """Each training step sets the temperature of its step, then builds its loss on the
        relaxed latents."""
        self.temperature.assign(self.scheduled_temperature(self.optimizer.iterations))
        with self.relaxed_latents():
            yield


@register("gumbel_vae")
class GumbelVAE(RelaxedLatentVAE):
    """VAE with N = `num_latents` categorical latents of K = `categories` classes each, trained
    through the Gumbel-softmax relaxation (Jang et al. 2017, Maddison et al. 2017); see the
    module docstring for the math.

        loss = -E_{relaxed q}[log p(x|z)] + kl_weight * sum_i KL(Cat(pi_i(x)) || Uniform(K))

    from one reparameterised relaxed z per example (kl="analytic"; kl="monte_carlo": the
    one-sample relaxed KL instead). Outside training the latents are one-hot (evaluate_as
    "discrete"): ELBO, log p(x), samples and reconstructions are those of the discrete model.

    Args:
      num_latents: N, the number of categorical variables.
      categories: K, the classes of each (>= 2).
      tau0, tau_min, anneal_rate: the temperature schedule max(tau_min, tau0 exp(-rate * step)).
      evaluate_as: "discrete" or "relaxed" (at the stored temperature) latents outside training.
      latent_dim: N * K (derived; may be given, and must then equal N * K).
      Other args as `BaseVAE`.
    """

    def __init__(self, num_latents: PositiveInt = 30, categories: Categories = 10, tau0: PositiveFloat = 1.0,
                 tau_min: PositiveFloat = 0.5, anneal_rate: NonNegativeFloat = 3e-5,
                 evaluate_as: EvaluateAs = "discrete", latent_dim: PositiveInt | None = None, **base):
        where = f"model {base.get('name') or 'gumbel_vae'!r}"
        args = validate(GumbelVAE, dict(num_latents=num_latents, categories=categories, tau0=tau0, tau_min=tau_min,
                                        anneal_rate=anneal_rate, evaluate_as=evaluate_as, latent_dim=latent_dim),
                        where, fill_defaults=False)
        self.num_latents, self.categories = args["num_latents"], args["categories"]
        size = self.num_latents * self.categories
        if args["latent_dim"] is not None and args["latent_dim"] != size:
            raise ConfigError(f"{where}: 'latent_dim' is num_latents * categories = {size}, got {latent_dim!r} "
                              f"(leave it out)")
        self._set_latent_settings(args["tau0"], args["tau_min"], args["anneal_rate"], args["evaluate_as"], where)
        super().__init__(latent_dim=size, **base)

    @property
    def category_sizes(self) -> tuple[int, ...]:
        return (self.categories,) * self.num_latents

    @property
    def posterior_family(self):
        return CategoricalPosterior(self.category_sizes, self.categorical_latents)

    def get_config(self):
        return {**super().get_config(), "num_latents": self.num_latents, "categories": self.categories,
                **self.latent_config()}

    def prior(self) -> tfd.Distribution:
        """p(z): N uniform categoricals (relaxed at the current temperature when the latents
        are); event [N * K]."""
        return self.categorical_latents(tf.zeros([self.latent_dim]))

    def analytic_kl(self, q):
        """sum_i KL(Cat(pi_i) || Uniform(K)) [B] when kl="analytic" and q is a categorical
        product (one-hot or relaxed); else None (then `kl_term` takes the Monte Carlo KL)."""
        if self.kl_mode != "analytic" or not isinstance(q, CategoricalProduct):
            return None
        return q.categorical_kl_to_uniform()


__all__ = ["CategoricalPosterior", "CategoricalProduct", "GumbelVAE", "OneHotProduct", "RelaxedLatentVAE",
           "RelaxedOneHotProduct", "annealed_temperature", "categorical_kl_to_uniform", "merge_categories",
           "split_categories"]
