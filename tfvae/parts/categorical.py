"""Parts for categorical latents trained through their Gumbel-softmax relaxation, alone or
beside a Gaussian part (the math: `tfvae.models.gumbel_vae`, `tfvae.models.joint_vae`).

- posterior `categorical`: q(z|x) = prod_j Cat(z_j; softmax(l_j(x))) over one-hot vectors of
  K_1..K_M classes (`categories`), concatenated: latent_dim = sum K_j. Inside the training step
  (and `relaxed()`) the draws are Concrete relaxations at the annealed temperature; elsewhere
  they are one-hot (evaluate_as "discrete") or stay relaxed ("relaxed"). Latent space "simplex".
- prior `categorical_uniform`: uniform categoricals in the posterior's mode and temperature.
- posterior `gaussian_categorical` and prior `gaussian_categorical`: z = [z_c, z_d], a diagonal
  Gaussian of `continuous_dim` beside the categoricals above, and N(0, I) x uniform
  categoricals (Dupont 2018). Latent space "gaussian_categorical".
- objective `joint_capacity`: -E_q log p(x|z) + gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|
  (`tfvae.models.joint_vae`), for the `gaussian_categorical` posterior.

The KL of a categorical posterior to the uniform prior is the discrete sum_j KL(Cat(pi_j) ||
Uniform(K_j)) when kl is "analytic", also while the latents are relaxed (what Jang et al.,
Maddison et al. and Dupont train on); kl "monte_carlo" takes log q - log p of the draws.
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
from tfvae.config import Check, ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from tfvae.distributions import DiagonalGaussianPosterior, standard_normal
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss
from tfvae.parts.posteriors import Posterior
from tfvae.parts.priors import Prior

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


# --------------------------------------------------------------------- products of latents
def capacity_schedule(step, c_max: float, steps: int):
    """C = c_max * min(1, step / steps), a float32 scalar tensor."""
    return c_max * tf.minimum(1.0, tf.cast(step, tf.float32) / float(steps))


class ConcatenatedLatents(tfd.Distribution):
    """The product of independent distributions over vectors, with their draws concatenated:
    z = [z_1, ..., z_P], log p(z) = sum_i log p_i(z_i).

    Args:
      parts: distributions with the same batch shape and event shapes [d_i]; event [sum d_i].

    A single part draws with the seed as given (the same draws as the part alone); several
    parts draw with independent seeds split from it. `mean`/`stddev` concatenate the parts'
    (NotImplementedError when a part has none).
    """

    def __init__(self, parts, validate_args=False, allow_nan_stats=True, name="ConcatenatedLatents"):
        parameters = dict(locals())
        self._parts = list(parts)
        if not self._parts or any(p.event_shape.rank != 1 or p.event_shape[0] is None for p in self._parts):
            raise ValueError("ConcatenatedLatents needs one or more parts with event shapes [d]")
        self._sizes = [int(p.event_shape[0]) for p in self._parts]
        reparameterized = all(p.reparameterization_type == tfd.FULLY_REPARAMETERIZED for p in self._parts)
        kind = tfd.FULLY_REPARAMETERIZED if reparameterized else tfd.NOT_REPARAMETERIZED
        super().__init__(dtype=tf.float32, reparameterization_type=kind,
                         validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                         parameters=parameters, name=name)

    @property
    def parts(self) -> list:
        return list(self._parts)

    def split(self, z) -> list:
        """z [..., sum d_i] as the parts' values [..., d_i]."""
        return tf.split(z, self._sizes, axis=-1) if len(self._sizes) > 1 else [z]

    def _batch_shape(self):
        return self._parts[0].batch_shape

    def _batch_shape_tensor(self):
        return self._parts[0].batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([sum(self._sizes)])

    def _event_shape_tensor(self):
        return tf.constant([sum(self._sizes)], tf.int32)

    def _seeds(self, seed):
        if len(self._parts) == 1:
            return [seed]
        return tfp.random.split_seed(seed, n=len(self._parts))

    def _sample_n(self, n, seed=None):
        return tf.concat([p.sample(n, seed=s) for p, s in zip(self._parts, self._seeds(seed))], axis=-1)

    def _sample_and_log_prob(self, sample_shape, seed):
        draws = [p.experimental_sample_and_log_prob(sample_shape, seed=s)
                 for p, s in zip(self._parts, self._seeds(seed))]
        return tf.concat([z for z, _ in draws], axis=-1), tf.add_n([lp for _, lp in draws])

    def _log_prob(self, z):
        return tf.add_n([p.log_prob(zi) for p, zi in zip(self._parts, self.split(z))])

    def _mean(self):
        return tf.concat([p.mean() for p in self._parts], axis=-1)

    def _stddev(self):
        return tf.concat([p.stddev() for p in self._parts], axis=-1)

# --------------------------------------------------------------------- the latents' mode and temperature
class CategoricalLatents:
    """The categorical latents of a model: their class counts, temperature schedule and mode.

    `bind(model)` creates the non-trainable weight `temperature` (starting at tau0; copied from
    the first replica under a distribution strategy). Within `relaxed()` (entered by every
    training step, `training_scope`) and always when evaluate_as is "relaxed", `latents(logits)`
    is a `RelaxedOneHotProduct` at the stored temperature, else a `OneHotProduct`. Each training
    step first sets the temperature to max(tau_min, tau0 exp(-anneal_rate t)), t the optimizer's
    iteration count.
    """

    def __init__(self, categories, tau0: float, tau_min: float, anneal_rate: float, evaluate_as: str, where: str):
        if tau_min > tau0:
            raise ConfigError(f"{where}: 'tau_min' ({tau_min}) must be <= 'tau0' ({tau0})")
        self.categories = tuple(int(k) for k in categories)
        self.tau0, self.tau_min, self.anneal_rate = float(tau0), float(tau_min), float(anneal_rate)
        self.evaluate_as = evaluate_as
        self.temperature = None
        self._relaxing = 0

    def settings(self) -> dict:
        return {"tau0": self.tau0, "tau_min": self.tau_min, "anneal_rate": self.anneal_rate,
                "evaluate_as": self.evaluate_as}

    def bind(self, model):
        self.temperature = model.add_weight(shape=(), initializer=keras.initializers.Constant(self.tau0),
                                            trainable=False, aggregation="only_first_replica", name="temperature")

    @contextlib.contextmanager
    def relaxed(self):
        """Distributions built inside this block are the relaxed ones (read when a distribution
        is built: at trace time in a graph)."""
        self._relaxing += 1
        try:
            yield
        finally:
            self._relaxing -= 1

    @property
    def is_relaxed(self) -> bool:
        return self._relaxing > 0 or self.evaluate_as == "relaxed"

    def latents(self, logits) -> CategoricalProduct:
        """The categoricals with these logits [..., sum K]: relaxed at the stored temperature
        when `is_relaxed`, else one-hot."""
        if self.is_relaxed:
            return RelaxedOneHotProduct(logits, self.categories, self.current_temperature())
        return OneHotProduct(logits, self.categories)

    def uniform(self) -> CategoricalProduct:
        return self.latents(tf.zeros([sum(self.categories)]))

    def scheduled_temperature(self, step):
        """The temperature of training step `step` (a float32 scalar tensor)."""
        return annealed_temperature(step, self.tau0, self.tau_min, self.anneal_rate)

    def current_temperature(self):
        return tf.cast(self.temperature, tf.float32)

    @contextlib.contextmanager
    def training_scope(self, model):
        self.temperature.assign(self.scheduled_temperature(model.optimizer.iterations))
        with self.relaxed():
            yield


def _discrete_kl(q, model):
    """The categorical KL to uniform [B] of a one-hot or relaxed q under kl="analytic", else None."""
    if model.kl_mode != "analytic" or not isinstance(q, CategoricalProduct):
        return None
    return q.categorical_kl_to_uniform()


# --------------------------------------------------------------------- categorical latents alone
@register_part("posterior", "categorical")
class CategoricalPosterior(Posterior):
    """q(z|x) = prod_j Cat(z_j; softmax(l_j(x))) from the encoder's sum K_j logits; relaxed in
    training (see `CategoricalLatents`).

    Args:
      categories: the class counts K_j (each >= 2); latent_dim must be their sum.
      tau0, tau_min, anneal_rate: the temperature schedule max(tau_min, tau0 exp(-rate * step)).
      evaluate_as: "discrete" or "relaxed" (at the stored temperature) latents outside training.
    """

    latent_space = "simplex"

    def __init__(self, categories: CategorySizes = (10,), tau0: PositiveFloat = 1.0, tau_min: PositiveFloat = 0.5,
                 anneal_rate: NonNegativeFloat = 3e-5, evaluate_as: EvaluateAs = "discrete"):
        super().__init__()
        if not categories:
            raise ConfigError("posterior 'categorical': 'categories' lists one class count or more, e.g. [10]")
        self.latents = CategoricalLatents(categories, tau0, tau_min, anneal_rate, evaluate_as,
                                          "posterior 'categorical'")

    def get_config(self):
        return {"categories": list(self.latents.categories), **self.latents.settings()}

    def attach(self, model):
        super().attach(model)
        size = sum(self.latents.categories)
        if model.latent_dim != size:
            raise ConfigError(f"posterior 'categorical': latent_dim must be the sum of categories "
                              f"{list(self.latents.categories)} = {size}, got {model.latent_dim}")
        self.latents.bind(model)

    def num_params(self, latent_dim: int) -> int:
        return sum(self.latents.categories)

    def distribution(self, params) -> tfd.Distribution:
        return self.latents.latents(tf.cast(params, tf.float32))

    def training_scope(self, model):
        return self.latents.training_scope(model)

    def analytic_kl(self, q, prior):
        return _discrete_kl(q, self.model)


@register_part("prior", "categorical_uniform")
class UniformCategoricalPrior(Prior):
    """p(z) = prod_j Uniform(K_j) over the posterior's one-hot vectors (relaxed at its
    temperature when its latents are)."""

    latent_space = "simplex"

    def distribution(self) -> tfd.Distribution:
        return self.model.posterior_part.latents.uniform()


# --------------------------------------------------------------------- Gaussian beside categorical
@register_part("posterior", "gaussian_categorical")
class GaussianCategoricalPosterior(Posterior):
    """q(z|x) = N(mu(x), diag(sigma(x)^2)) x prod_j Cat(softmax(l_j(x))) from the encoder's
    [mu (L_c), raw sigma (L_c), logits (sum K_j)]; z = [z_c, z_d]. Either part may be absent.

    Args:
      continuous_dim: L_c (0: no Gaussian part).
      categories: the class counts K_j ([]: no categorical part); latent_dim = L_c + sum K_j.
      tau0, tau_min, anneal_rate, evaluate_as: as the posterior `categorical`.
    """

    latent_space = "gaussian_categorical"

    def __init__(self, continuous_dim: NonNegativeInt = 10, categories: CategorySizes = (10,),
                 tau0: PositiveFloat = 0.67, tau_min: PositiveFloat = 0.67, anneal_rate: NonNegativeFloat = 0.0,
                 evaluate_as: EvaluateAs = "discrete"):
        super().__init__()
        where = "posterior 'gaussian_categorical'"
        if continuous_dim + len(categories) == 0:
            raise ConfigError(f"{where}: needs a continuous part (continuous_dim > 0) or a discrete one "
                              f"(categories, e.g. [10]), or both")
        self.continuous_dim = continuous_dim
        self.latents = CategoricalLatents(categories, tau0, tau_min, anneal_rate, evaluate_as, where)

    def get_config(self):
        return {"continuous_dim": self.continuous_dim, "categories": list(self.latents.categories),
                **self.latents.settings()}

    def attach(self, model):
        super().attach(model)
        size = self.continuous_dim + sum(self.latents.categories)
        if model.latent_dim != size:
            raise ConfigError(f"posterior 'gaussian_categorical': latent_dim must be continuous_dim + "
                              f"sum(categories) = {size}, got {model.latent_dim}")
        self.latents.bind(model)

    def num_params(self, latent_dim: int) -> int:
        return 2 * self.continuous_dim + sum(self.latents.categories)

    def distribution(self, params) -> tfd.Distribution:
        params = tf.cast(params, tf.float32)
        split = 2 * self.continuous_dim
        parts = []
        if self.continuous_dim:
            parts.append(DiagonalGaussianPosterior.distribution(params[..., :split]))
        if self.latents.categories:
            parts.append(self.latents.latents(params[..., split:]))
        return ConcatenatedLatents(parts)

    def training_scope(self, model):
        return self.latents.training_scope(model)

    def kl_parts(self, q, prior, z=None):
        """(KL_c, KL_d), each [B] (zeros for an absent part), of q against the prior: in closed
        form under kl="analytic" (z unused); else the Monte Carlo means over the draws z
        [k, B, L] of log q - log p of each part."""
        if self.model.kl_mode != "analytic":
            values = [tf.reduce_mean(q_part.log_prob(z_part) - p_part.log_prob(z_part), axis=0)
                      for q_part, p_part, z_part in zip(q.parts, prior.parts, q.split(z))]
        else:
            values = [q_part.categorical_kl_to_uniform() if isinstance(q_part, CategoricalProduct)
                      else tfd.kl_divergence(q_part, p_part) for q_part, p_part in zip(q.parts, prior.parts)]
        zeros = tf.zeros_like(values[0])
        kl_c = values[0] if self.continuous_dim else zeros
        kl_d = values[-1] if self.latents.categories else zeros
        return kl_c, kl_d

    def analytic_kl(self, q, prior):
        """KL_c + KL_d [B] in closed form when kl="analytic" and q is this family's; else None."""
        if self.model.kl_mode != "analytic" or not isinstance(q, ConcatenatedLatents):
            return None
        if len(q.parts) != bool(self.continuous_dim) + bool(self.latents.categories):
            return None
        kl_c, kl_d = self.kl_parts(q, prior)
        return kl_c + kl_d


@register_part("prior", "gaussian_categorical")
class GaussianCategoricalPrior(Prior):
    """p(z) = N(0, I_{L_c}) x prod_j Uniform(K_j), the parts of the posterior
    `gaussian_categorical` (the categoricals relaxed at its temperature when its latents are)."""

    latent_space = "gaussian_categorical"

    def distribution(self) -> tfd.Distribution:
        posterior = self.model.posterior_part
        parts = []
        if posterior.continuous_dim:
            parts.append(standard_normal(posterior.continuous_dim))
        if posterior.latents.categories:
            parts.append(posterior.latents.uniform())
        return ConcatenatedLatents(parts)


KL_PARTS = ("kl_continuous", "kl_discrete")


@register_part("objective", "joint_capacity")
class JointCapacityObjective(Objective):
    """loss = -E_q[log p(x|z)] + w (gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|) from one z ~ q
    per example, with C_c = capacity_c min(1, t / capacity_steps) and C_d the same for
    capacity_d, capped at sum_j log K_j (the largest KL_d); t the optimizer step (the final
    values outside `fit`), |KL - C| on the batch-mean KL, w the KL warm-up weight.

    Args:
      gamma_c, gamma_d: weights of the two capacity penalties.
      capacity_c, capacity_d: final capacities in nats.
      capacity_steps: optimizer steps over which both rise linearly from 0.
    """

    extra_metrics = KL_PARTS
    posteriors = ("gaussian_categorical",)
    posteriors_reason = "its two capacities are the KLs of the Gaussian and the categorical parts"

    def __init__(self, gamma_c: NonNegativeFloat = 30.0, gamma_d: NonNegativeFloat = 30.0,
                 capacity_c: NonNegativeFloat = 5.0, capacity_d: NonNegativeFloat = 5.0,
                 capacity_steps: PositiveInt = 25_000):
        super().__init__()
        self.gamma_c, self.gamma_d = gamma_c, gamma_d
        self.capacity_c, self.capacity_d, self.capacity_steps = capacity_c, capacity_d, capacity_steps

    def get_config(self):
        return {"gamma_c": self.gamma_c, "gamma_d": self.gamma_d, "capacity_c": self.capacity_c,
                "capacity_d": self.capacity_d, "capacity_steps": self.capacity_steps}

    def max_discrete_kl(self, model) -> float:
        """sum_j log K_j: the KL of one-hot categoricals to uniform ones, the largest KL_d."""
        return float(sum(math.log(k) for k in model.posterior_part.latents.categories))

    def current_capacities(self, model):
        """(C_c, C_d) at the current optimizer step, float32 scalar tensors; their final values
        outside `fit` (no compiled optimizer)."""
        optimizer = getattr(model, "optimizer", None)
        step = optimizer.iterations if optimizer is not None else self.capacity_steps
        c_c = capacity_schedule(step, self.capacity_c, self.capacity_steps)
        c_d = tf.minimum(capacity_schedule(step, self.capacity_d, self.capacity_steps), self.max_discrete_kl(model))
        return c_c, c_d

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        posterior = model.posterior_part
        q, z, _, log_px_z = model._sample_posterior(x, 1, condition, seed, None, training)
        log_px_z = tf.reduce_mean(log_px_z, axis=0)
        kl_c, kl_d = posterior.kl_parts(q, model.prior(), z)
        c_c, c_d = self.current_capacities(model)
        penalty = 0.0
        if posterior.continuous_dim:
            penalty += self.gamma_c * tf.abs(tf.reduce_mean(kl_c) - c_c)
        if posterior.latents.categories:
            penalty += self.gamma_d * tf.abs(tf.reduce_mean(kl_d) - c_d)
        value = -tf.reduce_mean(log_px_z) + tf.cast(model.kl_weight, tf.float32) * penalty
        kl = kl_c + kl_d
        return TrainingLoss(value, {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl,
                                    "kl_continuous": kl_c, "kl_discrete": kl_d})


__all__ = ["KL_PARTS", "CategoricalLatents", "CategoricalPosterior", "CategoricalProduct", "ConcatenatedLatents",
           "GaussianCategoricalPosterior", "GaussianCategoricalPrior", "JointCapacityObjective", "OneHotProduct",
           "RelaxedOneHotProduct", "UniformCategoricalPrior", "annealed_temperature", "capacity_schedule",
           "categorical_kl_to_uniform", "merge_categories", "split_categories"]
