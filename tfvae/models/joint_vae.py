"""JointVAE (Dupont 2018, "Learning Disentangled Joint Continuous and Discrete Representations").

The latent joins a continuous and a discrete part, z = [z_c, z_d]:

    z_c in R^{L_c}:  q(z_c|x) = N(mu(x), diag(sigma(x)^2)),  p(z_c) = N(0, I)
    z_d = [y_1, ..., y_M]:  one-hot categoricals of K_1..K_M classes, q(y_j|x) = Cat(pi_j(x)),
          uniform prior, relaxed during training exactly as in `tfvae.models.gumbel_vae`
          (Concrete distributions at temperature tau)

so latent_dim = L_c + sum_j K_j; the encoder outputs [mu, raw sigma, logits] (2 L_c + sum K_j
numbers), and q(z|x) = q(z_c|x) q(z_d|x) (`ConcatenatedLatents`). Each part's KL to its prior
has a capacity C that the loss holds it near:

    loss = -E_q[log p(x|z)] + gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|

    KL_c = KL(N(mu, sigma^2) || N(0, I))                  (closed form)
    KL_d = sum_j KL(Cat(pi_j) || Uniform(K_j))            (closed form, as Dupont's code)
    C_c  = C_c,max * min(1, t / capacity_steps)
    C_d  = min(C_d,max * min(1, t / capacity_steps), sum_j log K_j)

with t the optimizer's iteration count at the start of the step (in-graph; outside `fit` the
schedule counts as finished, C = its final value, as `beta_vae`). sum_j log K_j is the largest
KL_d can reach, so C_d is capped there. |KL - C| is taken on the batch-mean KL, as in Dupont's
code; `kl_weight` (the KL warm-up ramp, 1 otherwise) multiplies both penalties. A part with no
latents (continuous_dim = 0, or categories = []) has no penalty.

gamma_c = gamma_d = 1 and C = 0 give the negative ELBO of the VAE (continuous part alone) or of
`gumbel_vae` (discrete part alone); with both parts, of their product. As in `gumbel_vae`, the
discrete latents are relaxed inside the training step only; elsewhere (ELBO, importance-sampled
log p(x), samples, export) they are one-hot (evaluate_as="discrete", the default), so the
reported ELBO (with KL_c + KL_d) and log p(x) bound the same model; evaluate_as="relaxed" keeps
the relaxed densities (at the stored temperature) outside training too, and then they bound
different models. kl="monte_carlo" uses the one-sample KLs log q - log p of each part instead
of the closed forms. The temperature follows `gumbel_vae`'s schedule; Dupont keeps it fixed at
0.67 (the defaults here: tau0 = tau_min = 0.67, anneal_rate = 0).
"""
from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, validate
from tfvae.distributions import DiagonalGaussianPosterior, standard_normal
from tfvae.models.base import TrainingLoss
from tfvae.models.gumbel_vae import CategoricalProduct, CategorySizes, EvaluateAs, RelaxedLatentVAE
from tfvae.registry import register

tfd = tfp.distributions

KL_PARTS = ("kl_continuous", "kl_discrete")


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


class JointPosterior:
    """q(z|x) = N(mu, diag(sigma^2)) x categoricals(logits) from the encoder's [mu (L_c),
    raw sigma (L_c), logits (sum K)]; either part may be absent. `make(logits)` builds the
    categorical part (the model's `categorical_latents`: one-hot or relaxed)."""

    def __init__(self, continuous_dim: int, categories, make):
        self.continuous_dim, self.categories, self.make = continuous_dim, tuple(categories), make

    def num_params(self, latent_dim: int) -> int:
        return 2 * self.continuous_dim + sum(self.categories)

    def distribution(self, params) -> tfd.Distribution:
        params = tf.cast(params, tf.float32)
        split = 2 * self.continuous_dim
        parts = []
        if self.continuous_dim:
            parts.append(DiagonalGaussianPosterior.distribution(params[..., :split]))
        if self.categories:
            parts.append(self.make(params[..., split:]))
        return ConcatenatedLatents(parts)


@register("joint_vae")
class JointVAE(RelaxedLatentVAE):
    """JointVAE: a Gaussian and a categorical latent (relaxed in training), each with its own
    KL capacity (see the module docstring for the math).

        loss = -E_q[log p(x|z)] + gamma_c |KL_c - C_c| + gamma_d |KL_d - C_d|

    Args:
      continuous_dim: L_c, size of the Gaussian part (0: none).
      categories: class counts K_j of the categorical latents (each >= 2; []: none).
      gamma_c, gamma_d: weights of the two capacity penalties.
      capacity_c, capacity_d: final capacities C_max in nats (C_d is also capped at sum log K_j).
      capacity_steps: optimizer steps over which both capacities rise linearly from 0.
      tau0, tau_min, anneal_rate: the temperature schedule of `gumbel_vae`.
      evaluate_as: "discrete" or "relaxed" categorical latents outside training, as `gumbel_vae`.
      latent_dim: L_c + sum K_j (derived; may be given, and must then equal it).
      Other args as `BaseVAE`.

    Defaults: Dupont's MNIST settings, 10 continuous latents and one 10-way categorical,
    C_max = 5 nats for both parts over 25,000 steps, gamma = 30, temperature 0.67.
    """

    extra_metrics = KL_PARTS

    def __init__(self, continuous_dim: NonNegativeInt = 10, categories: CategorySizes = (10,),
                 gamma_c: NonNegativeFloat = 30.0, gamma_d: NonNegativeFloat = 30.0,
                 capacity_c: NonNegativeFloat = 5.0, capacity_d: NonNegativeFloat = 5.0,
                 capacity_steps: PositiveInt = 25_000, tau0: PositiveFloat = 0.67, tau_min: PositiveFloat = 0.67,
                 anneal_rate: NonNegativeFloat = 0.0, evaluate_as: EvaluateAs = "discrete",
                 latent_dim: PositiveInt | None = None, **base):
        where = f"model {base.get('name') or 'joint_vae'!r}"
        args = validate(JointVAE, dict(
            continuous_dim=continuous_dim, categories=categories, gamma_c=gamma_c, gamma_d=gamma_d,
            capacity_c=capacity_c, capacity_d=capacity_d, capacity_steps=capacity_steps, tau0=tau0,
            tau_min=tau_min, anneal_rate=anneal_rate, evaluate_as=evaluate_as, latent_dim=latent_dim), where,
            fill_defaults=False)
        self.continuous_dim, self.categories = args["continuous_dim"], tuple(args["categories"])
        size = self.continuous_dim + sum(self.categories)
        if size == 0:
            raise ConfigError(f"{where}: needs a continuous part (continuous_dim > 0) or a discrete one "
                              f"(categories, e.g. [10]), or both")
        if args["latent_dim"] is not None and args["latent_dim"] != size:
            raise ConfigError(f"{where}: 'latent_dim' is continuous_dim + sum(categories) = {size}, "
                              f"got {latent_dim!r} (leave it out)")
        self.gamma_c, self.gamma_d = args["gamma_c"], args["gamma_d"]
        self.capacity_c, self.capacity_d = args["capacity_c"], args["capacity_d"]
        self.capacity_steps = args["capacity_steps"]
        self._set_latent_settings(args["tau0"], args["tau_min"], args["anneal_rate"], args["evaluate_as"], where)
        super().__init__(latent_dim=size, **base)

    def get_config(self):
        return {**super().get_config(), "continuous_dim": self.continuous_dim, "categories": list(self.categories),
                "gamma_c": self.gamma_c, "gamma_d": self.gamma_d, "capacity_c": self.capacity_c,
                "capacity_d": self.capacity_d, "capacity_steps": self.capacity_steps, **self.latent_config()}

    # ----------------------------------------------------------------- distributions
    @property
    def category_sizes(self) -> tuple[int, ...]:
        return self.categories

    @property
    def posterior_family(self):
        return JointPosterior(self.continuous_dim, self.categories, self.categorical_latents)

    def prior(self) -> tfd.Distribution:
        """p(z) = N(0, I) x uniform categoricals (relaxed at the current temperature when the
        latents are)."""
        parts = []
        if self.continuous_dim:
            parts.append(standard_normal(self.continuous_dim))
        if self.categories:
            parts.append(self.categorical_latents(tf.zeros([sum(self.categories)])))
        return ConcatenatedLatents(parts)

    def kl_parts(self, q, z):
        """(KL_c, KL_d), each [B] (zeros for an absent part), of the joint posterior q: in closed
        form under kl="analytic" (z unused); else the Monte Carlo means over the draws z
        [k, B, L] of log q - log p of each part."""
        prior_parts = self.prior().parts
        if self.kl_mode != "analytic":
            values = [tf.reduce_mean(q_part.log_prob(z_part) - p_part.log_prob(z_part), axis=0)
                      for q_part, p_part, z_part in zip(q.parts, prior_parts, q.split(z))]
        else:
            values = [q_part.categorical_kl_to_uniform() if isinstance(q_part, CategoricalProduct)
                      else tfd.kl_divergence(q_part, p_part) for q_part, p_part in zip(q.parts, prior_parts)]
        zeros = tf.zeros_like(values[0])
        kl_c = values[0] if self.continuous_dim else zeros
        kl_d = values[-1] if self.categories else zeros
        return kl_c, kl_d

    def analytic_kl(self, q):
        """KL_c + KL_d [B] in closed form when kl="analytic" and q is this model's joint
        posterior; else None (then `kl_term` takes the Monte Carlo KL)."""
        if self.kl_mode != "analytic" or not isinstance(q, ConcatenatedLatents):
            return None
        if len(q.parts) != bool(self.continuous_dim) + bool(self.categories):
            return None
        kl_c, kl_d = self.kl_parts(q, None)
        return kl_c + kl_d

    # ----------------------------------------------------------------- objective
    def max_discrete_kl(self) -> float:
        """sum_j log K_j: the KL of one-hot categoricals to uniform ones, the largest KL_d."""
        return float(sum(math.log(k) for k in self.categories))

    def current_capacities(self):
        """(C_c, C_d) at the current optimizer step, float32 scalar tensors; their final values
        outside `fit` (no compiled optimizer)."""
        optimizer = getattr(self, "optimizer", None)
        step = optimizer.iterations if optimizer is not None else self.capacity_steps
        c_c = capacity_schedule(step, self.capacity_c, self.capacity_steps)
        c_d = tf.minimum(capacity_schedule(step, self.capacity_d, self.capacity_steps), self.max_discrete_kl())
        return c_c, c_d

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The capacity loss from one z ~ q per example.

        terms: `log_px_z`, `kl` = KL_c + KL_d, `elbo` = log_px_z - kl, and `kl_continuous`,
        `kl_discrete`, each [B].
        """
        q, z, _, log_px_z = self._sample_posterior(x, 1, condition, seed, None, training)
        log_px_z = tf.reduce_mean(log_px_z, axis=0)
        kl_c, kl_d = self.kl_parts(q, z)
        c_c, c_d = self.current_capacities()
        penalty = 0.0
        if self.continuous_dim:
            penalty += self.gamma_c * tf.abs(tf.reduce_mean(kl_c) - c_c)
        if self.categories:
            penalty += self.gamma_d * tf.abs(tf.reduce_mean(kl_d) - c_d)
        loss = -tf.reduce_mean(log_px_z) + tf.cast(self.kl_weight, tf.float32) * penalty
        kl = kl_c + kl_d
        return TrainingLoss(loss, {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl,
                                   "kl_continuous": kl_c, "kl_discrete": kl_d})


__all__ = ["ConcatenatedLatents", "JointPosterior", "JointVAE", "capacity_schedule"]
