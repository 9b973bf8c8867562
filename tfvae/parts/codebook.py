"""The parts of the VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete
Representation Learning"), chosen in config: the posterior `vector_quantized` (the encoder's
output snapped to a learned codebook), the prior `uniform_codebook` and the objective `vq`.
The model `vqvae` is the VAE made of these three (`tfvae.models.vqvae`).

The encoder outputs L vectors z_e(x) = (z_e,1, ..., z_e,L), each of D numbers (one flat
vector of latent_dim = L * D numbers, so every generic tool sees a single z). A codebook
e_1..e_K (shape [K, D]) replaces each vector by its nearest code:

    k_l(x) = argmin_j ||z_e,l(x) - e_j||^2,      z_q,l(x) = e_{k_l(x)}.

Gradients pass the quantisation unchanged (straight-through): z_q = sg(e_k) + z_e - sg(z_e),
whose value is exactly the code and whose gradient with respect to z_e is the identity
(sg = stop_gradient; the paper's z_e + sg(z_q - z_e), written so that the forward value is
the code bit for bit). The loss, a mean over the batch of per-example sums over the L
latents and D dimensions, is

    loss = -log p(x | z_q) + ||sg(z_e) - e||^2 + beta * ||z_e - sg(e)||^2

(reconstruction; codebook loss, which moves the codes; commitment loss, beta = 0.25 by
default). With `ema=True` the codebook loss is dropped and the codes are exponential moving
averages of the encoder outputs assigned to them (the paper's appendix A.1), updated in
the training step only, after the gradient step (the objective's `after_train_step`), from
the batch's assignments:

    N_j <- gamma N_j + (1 - gamma) n_j,          n_j = #{(b, l): k_l(x_b) = j}
    m_j <- gamma m_j + (1 - gamma) s_j,          s_j = sum_{(b, l): k_l(x_b) = j} z_e,l(x_b)
    e_j <- m_j / N~_j,   N~_j = (N_j + eps) / (n + K eps) * n,   n = sum_j N_j

(gamma = `decay`, eps = `epsilon`: Laplace smoothing, as in the authors' Sonnet code, so a
code nobody picks is never divided by 0). The averages start at N_j = 1, m_j = e_j (one
pseudo-assignment at each initial code), so the first updates move codes from their initial place instead of collapsing unused ones to
the origin. Under a `tf.distribute` strategy the counts and sums are summed over replicas
first, so every replica applies the same update.

Dead codes (optional, with ema: `restart_threshold` > 0): after the EMA step, every code whose
N_j fell below the threshold is restarted at an encoder output z_e,l(x_b) of the batch drawn
uniformly at random, with N_j = 1 and m_j = e_j (the random restarts of Dhariwal et al. 2020,
"Jukebox"). Without them an MLP VQ-VAE with an EMA codebook on binarized MNIST collapses: in a
step-by-step trace (8 latents x 64 codes) the first ten gradient steps moved the cloud of
encoder outputs as a whole, by several times its spread, away from the codebook, after which
one code was nearest to every output of a latent, the decoder learned to ignore it, and
log p(x|z_q) stayed at the ~-207 nats of a model that outputs the mean image. The zoo preset
`vqvae_bmnist` without restarts ended its 10 epochs at a test ELBO of -228 nats with
perplexity 4 (one code per latent), against -125 with them; its gradient-updated codebook
(ema=False) did not collapse (-134). Restarted codes land inside the cloud and catch it.
(Under a distribution strategy every replica draws from its own batch; the first replica's
draw is kept.)

Probabilistic reading (the paper's section 3.1): q(z|x) is the point mass at z_q(x) (one-hot
over the codes of each latent) and the prior is uniform over the codes of each latent,
p(z) = prod_l 1/K on code vectors. Hence log q(z_q|x) = 0,

    KL(q(z|x) || p(z)) = L log K           (a constant: it is left out of the loss)
    ELBO(x) = log p(x | z_q(x)) - L log K,

and the importance-sampled estimate log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) with z_i ~ q
has k equal terms, so it equals the ELBO for every k (`tfvae.log_likelihood` and the export's
`log_likelihood` endpoint give the ELBO; the gap between them is 0 by construction, not
because q is exact). `prior().log_prob(z)` is -L log K when each of the L vectors of z is a
code (to float32 round-off) and -inf otherwise (a probability mass function on the codebook).

The KL warm-up weight `kl_weight` has no effect: the KL is constant and not in the loss.
The codebook learns only through the objective `vq` (its codebook loss or its EMA step), so
the posterior refuses every other objective (`tfvae.parts.rules`). `fit` also reports
`quantization_error` (||z_e - e||^2 per example), and the codebook usage of each batch:
`perplexity`, exp of the entropy of the code frequencies over the B * L assignments (K when
all codes are used equally, 1 when one code takes everything), and `codes_used`, the fraction
of the K codes chosen at least once.
"""
from __future__ import annotations

import math
from typing import Annotated

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import seeds
from tfvae.config import Check, ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss
from tfvae.parts.posteriors import Posterior
from tfvae.parts.priors import Prior
from tfvae.seeds import as_seed

tfd = tfp.distributions

DecayRate = Annotated[float, Check(lambda v: 0 <= v < 1, "in [0, 1)")]
CODE_RTOL, CODE_ATOL = 1e-5, 1e-6     # how close z must be to a code for p(z) > 0
USAGE = ("quantization_error", "perplexity", "codes_used")


# --------------------------------------------------------------------- quantisation
def nearest_codes(z_e, codebook, num_latents: int):
    """k_l = argmin_j ||z_e,l - e_j||^2 for z_e [..., L * D] split into L vectors of D and a
    codebook [K, D]: int32 indices [..., L]."""
    z_e = tf.convert_to_tensor(z_e, tf.float32)
    codebook = tf.convert_to_tensor(codebook, tf.float32)
    dim = codebook.shape[-1]
    flat = tf.reshape(z_e, [-1, dim])
    distances = (tf.reduce_sum(tf.square(flat), axis=-1, keepdims=True)
                 - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
                 + tf.reduce_sum(tf.square(codebook), axis=-1)[tf.newaxis])           # [N * L, K]
    indices = tf.argmin(distances, axis=-1, output_type=tf.int32)
    return tf.reshape(indices, tf.concat([tf.shape(z_e)[:-1], [num_latents]], axis=0))


def quantize(z_e, codebook, num_latents: int):
    """(codes [..., L * D], indices [..., L]): each of the L vectors of z_e replaced by its
    nearest code. The codes are differentiable with respect to the codebook only."""
    indices = nearest_codes(z_e, codebook, num_latents)
    codes = tf.gather(tf.convert_to_tensor(codebook, tf.float32), indices)             # [..., L, D]
    return tf.reshape(codes, tf.shape(z_e)), indices


def straight_through(z_e, codes):
    """sg(codes) + z_e - sg(z_e): the value of the codes, the gradient of z_e (identity)."""
    return tf.stop_gradient(codes) + (z_e - tf.stop_gradient(z_e))


def codebook_usage(indices, codebook_size: int):
    """(perplexity, fraction of codes used), scalars, of the code indices (any shape):
    exp(-sum_j p_j log p_j) with p_j the frequency of code j, and #{j: p_j > 0} / K."""
    # A sum of one-hot rows, not tf.math.bincount: XLA has no kernel for bincount.
    counts = tf.reduce_sum(tf.one_hot(tf.reshape(indices, [-1]), codebook_size, dtype=tf.float32), axis=0)
    p = counts / tf.reduce_sum(counts)
    perplexity = tf.exp(-tf.reduce_sum(tf.math.xlogy(p, p)))
    return perplexity, tf.reduce_mean(tf.cast(counts > 0, tf.float32))


def assignment_statistics(vectors, indices, codebook_size: int):
    """(n [K], s [K, D]): how many of the vectors [N, D] each code got (indices [N]), and
    the sum of those vectors."""
    one_hot = tf.one_hot(tf.reshape(indices, [-1]), codebook_size, dtype=tf.float32)        # [N, K]
    return tf.reduce_sum(one_hot, axis=0), tf.matmul(one_hot, vectors, transpose_a=True)


def restart_dead_codes(cluster_size, embed_sum, codebook, vectors, threshold: float, seed):
    """(N, m, codebook) with every code whose N_j < threshold moved to one of the vectors
    [N, D] drawn uniformly at random (stateless `seed`, shape [2]), with N_j = 1, m_j = e_j."""
    dead = cluster_size < threshold                                                     # [K]
    picks = seeds.integers(tf.shape(cluster_size), seed, tf.shape(vectors)[0])
    fresh = tf.gather(vectors, picks)                                                   # [K, D]
    codebook = tf.where(dead[:, tf.newaxis], fresh, codebook)
    embed_sum = tf.where(dead[:, tf.newaxis], fresh, embed_sum)
    return tf.where(dead, tf.ones_like(cluster_size), cluster_size), embed_sum, codebook


def ema_codebook(cluster_size, embed_sum, counts, sums, decay: float, epsilon: float):
    """One EMA step (module docstring): (N [K], m [K, D], codebook [K, D]) after
    N <- decay N + (1 - decay) n, m <- decay m + (1 - decay) s, e = m / N~ (Laplace smoothed)."""
    cluster_size = decay * cluster_size + (1.0 - decay) * counts
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    total = tf.reduce_sum(cluster_size)
    size = tf.cast(tf.shape(cluster_size)[0], tf.float32)
    smoothed = (cluster_size + epsilon) / (total + size * epsilon) * total
    return cluster_size, embed_sum, embed_sum / smoothed[:, tf.newaxis]


# --------------------------------------------------------------------- distributions
class UniformCodebook(tfd.Distribution):
    """p(z) = prod_l 1/K over z = (e_{k_1}, ..., e_{k_L}), k_l uniform on 1..K, independently:
    batch shape [], event shape [L * D].

    `sample` draws the L code indices uniformly and looks the codes up (not reparameterised);
    `log_prob(z)` [...] is -L log K when every vector of z is a code (to float32 round-off),
    else -inf.
    """

    def __init__(self, codebook, num_latents: int, name: str = "UniformCodebook"):
        parameters = dict(locals())
        self._codebook = tf.convert_to_tensor(codebook, tf.float32)
        self._num_latents = int(num_latents)
        self._size, self._dim = self._codebook.shape
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                         validate_args=False, allow_nan_stats=True, parameters=parameters, name=name)

    @property
    def codebook(self):
        return self._codebook

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _event_shape(self):
        return tf.TensorShape([self._num_latents * self._dim])

    def _event_shape_tensor(self):
        return tf.constant([self._num_latents * self._dim], tf.int32)

    def _sample_n(self, n, seed=None):
        indices = seeds.integers([n, self._num_latents], tfp.random.sanitize_seed(seed), self._size)
        return tf.reshape(tf.gather(self._codebook, indices), [n, self._num_latents * self._dim])

    def _log_prob(self, z):
        z = tf.convert_to_tensor(z, tf.float32)
        codes, _ = quantize(z, self._codebook, self._num_latents)
        on_codebook = tf.reduce_all(tf.abs(z - codes) <= CODE_ATOL + CODE_RTOL * tf.abs(codes), axis=-1)
        return tf.where(on_codebook, -self._num_latents * math.log(self._size), -math.inf)

    def _entropy(self):
        return tf.constant(self._num_latents * math.log(self._size), tf.float32)


def point_mass(z):
    """q(z|x) = delta(z - z_q(x)) for z_q [B, L * D]: batch shape [B], event [L * D];
    log q = 0 at z_q, mean z_q, stddev 0."""
    return tfd.Independent(tfd.Deterministic(loc=z), reinterpreted_batch_ndims=1)


# --------------------------------------------------------------------- the parts
@register_part("posterior", "vector_quantized")
class VectorQuantizedPosterior(Posterior):
    """q(z|x) = the point mass at z_q(x), the encoder's z_e(x) [B, L * D] with each of its L
    vectors of D = latent_dim / L numbers replaced by the nearest of K learned codes, through
    the straight-through estimator (module docstring). The part owns the codebook [K, D] and,
    with `ema`, its moving averages, created on the model as `codebook`, `ema_cluster_size`
    and `ema_embed_sum`.

    Args:
      num_latents: L, the number of discrete latents per example (latent_dim must be a
        multiple of it).
      codebook_size: K, the number of codes.
      ema: update the codebook by exponential moving averages (the objective `vq` then drops
        its codebook loss; the codes are not trainable) instead of by gradients.
      decay: gamma of the moving averages (with ema).
      epsilon: Laplace smoothing of the cluster sizes (with ema).
      restart_threshold: with ema, restart the codes whose EMA cluster size N_j falls below
        this at random encoder outputs of the batch (0: never, the paper's algorithm; 1 is
        Jukebox's value: a code must win about one of the B * L assignments per batch).

    The codebook starts uniform in [-sqrt(3 / D), sqrt(3 / D)]: each code has expected
    squared norm 1, about the scale of an MLP encoder's initial outputs.
    """

    latent_space = "codebook"
    objectives = ("vq",)
    objectives_reason = "the codebook learns only through the vq objective's codebook loss or its EMA step"

    def __init__(self, num_latents: PositiveInt = 4, codebook_size: PositiveInt = 256, ema: bool = False,
                 decay: DecayRate = 0.99, epsilon: PositiveFloat = 1e-5, restart_threshold: NonNegativeFloat = 0.0):
        super().__init__()
        if restart_threshold > 0 and not ema:
            raise ConfigError(f"posterior 'vector_quantized': restart_threshold={restart_threshold} needs ema=True "
                              f"(the EMA cluster sizes are what measures how much a code is used)")
        self.num_latents, self.codebook_size = num_latents, codebook_size
        self.ema, self.decay, self.epsilon, self.restart_threshold = ema, decay, epsilon, restart_threshold

    def get_config(self):
        return {"num_latents": self.num_latents, "codebook_size": self.codebook_size, "ema": self.ema,
                "decay": self.decay, "epsilon": self.epsilon, "restart_threshold": self.restart_threshold}

    def attach(self, model):
        if model.latent_dim % self.num_latents:
            raise ConfigError(f"posterior 'vector_quantized': latent_dim ({model.latent_dim}) must be a multiple of "
                              f"num_latents ({self.num_latents}): z is L vectors of latent_dim / L numbers")
        super().attach(model)
        self.embedding_dim = model.latent_dim // self.num_latents
        limit = math.sqrt(3.0 / self.embedding_dim)
        # With ema the three are assigned inside the replicas' step, to the same value in
        # every replica (the statistics are summed over replicas first): keep the first's.
        aggregation = "only_first_replica" if self.ema else "none"
        self.codebook = model.add_weight(
            shape=(self.codebook_size, self.embedding_dim), dtype="float32", name="codebook",
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=model.seed),
            trainable=not self.ema, aggregation=aggregation)
        if self.ema:
            self.cluster_size = model.add_weight(shape=(self.codebook_size,), dtype="float32", initializer="ones",
                                                 trainable=False, aggregation=aggregation, name="ema_cluster_size")
            self.embed_sum = model.add_weight(shape=(self.codebook_size, self.embedding_dim), dtype="float32",
                                              initializer="zeros", trainable=False, aggregation=aggregation,
                                              name="ema_embed_sum")
            self.embed_sum.assign(self.codebook)

    def num_params(self, latent_dim: int) -> int:
        return latent_dim

    def quantize(self, z_e):
        """(codes [..., L * D], indices [..., L]) of the encoder outputs z_e [..., L * D]."""
        return quantize(tf.cast(z_e, tf.float32), self.codebook, self.num_latents)

    def distribution(self, params) -> tfd.Distribution:
        z_e = tf.cast(params, tf.float32)
        return point_mass(straight_through(z_e, self.quantize(z_e)[0]))

    def analytic_kl(self, q, prior):
        """KL(q || p) = L log K per example, [B]: a point mass against the uniform codebook prior."""
        return tf.fill(q.batch_shape_tensor(), tf.constant(self.num_latents * math.log(self.codebook_size),
                                                           tf.float32))

    def update_codebook(self, z_e, indices, seed=(0, 0)):
        """One EMA step of the codebook from encoder outputs z_e [B, L * D] assigned to the
        codes `indices` [B, L] (summed over replicas under a distribution strategy), then the
        restarts of dead codes (stateless `seed`) when restart_threshold > 0."""
        vectors = tf.reshape(tf.stop_gradient(z_e), [-1, self.embedding_dim])
        counts, sums = assignment_statistics(vectors, indices, self.codebook_size)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            counts, sums = context.all_reduce("sum", [counts, sums])
        cluster_size, embed_sum, codebook = ema_codebook(self.cluster_size, self.embed_sum, counts, sums,
                                                         self.decay, self.epsilon)
        if self.restart_threshold > 0:
            cluster_size, embed_sum, codebook = restart_dead_codes(
                cluster_size, embed_sum, codebook, vectors, self.restart_threshold, as_seed(seed))
        self.cluster_size.assign(cluster_size)
        self.embed_sum.assign(embed_sum)
        self.codebook.assign(codebook)


@register_part("prior", "uniform_codebook")
class UniformCodebookPrior(Prior):
    """p(z) = prod_l 1/K over the codes of the posterior `vector_quantized`
    (`UniformCodebook`)."""

    latent_space = "codebook"

    def distribution(self) -> tfd.Distribution:
        posterior = self.model.posterior_part
        return UniformCodebook(posterior.codebook, posterior.num_latents)


@register_part("objective", "vq")
class VQObjective(Objective):
    """loss = mean_B [-log p(x|z_q) + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2] (module
    docstring; the codebook loss is left out when the posterior's codebook is an EMA, which
    `after_train_step` then updates). Terms: the ELBO terms [B] of z_q, `quantization_error`
    [B] and the batch's `perplexity` and `codes_used` (scalars).

    Args:
      commitment_cost: beta, the weight of the commitment loss ||z_e - sg(e)||^2.
    """

    extra_metrics = USAGE
    posteriors = ("vector_quantized",)
    posteriors_reason = "its codebook and commitment losses are distances to the posterior's codes"

    def __init__(self, commitment_cost: NonNegativeFloat = 0.25):
        super().__init__()
        self.commitment_cost = commitment_cost

    def get_config(self):
        return {"commitment_cost": self.commitment_cost}

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        # q is a point mass, so `seed` draws nothing (a constant one spares the model's seed stream).
        posterior = model.posterior_part
        z_e = model.posterior_params(x, condition, training=training)
        codes, indices = posterior.quantize(z_e)
        terms = model.elbo_terms(x, 1, condition, seed=(0, 0), posterior=point_mass(straight_through(z_e, codes)),
                                 training=training)
        commitment = tf.reduce_sum(tf.square(z_e - tf.stop_gradient(codes)), axis=-1)
        vq_loss = self.commitment_cost * commitment
        if not posterior.ema:
            vq_loss += tf.reduce_sum(tf.square(tf.stop_gradient(z_e) - codes), axis=-1)
        value = -tf.reduce_mean(terms["log_px_z"]) + tf.reduce_mean(vq_loss)
        perplexity, used = codebook_usage(indices, posterior.codebook_size)
        terms = {**terms, "quantization_error": tf.stop_gradient(commitment), "perplexity": perplexity,
                 "codes_used": used}
        return TrainingLoss(value, terms, aux={"z_e": z_e, "indices": indices})

    def after_train_step(self, model, result: TrainingLoss) -> dict:
        """With an EMA codebook, its step on the step's encoder outputs and codes, seeded per
        step and the same in every replica: (seed, 0) folded with the optimizer's step count."""
        posterior = model.posterior_part
        if posterior.ema:
            step = tf.cast(model.optimizer.iterations, tf.int32)
            posterior.update_codebook(result.aux["z_e"], result.aux["indices"],
                                      tf.random.experimental.stateless_fold_in(as_seed(model.seed), step))
        return {}


__all__ = ["USAGE", "UniformCodebook", "UniformCodebookPrior", "VQObjective", "VectorQuantizedPosterior",
           "assignment_statistics", "codebook_usage", "ema_codebook", "nearest_codes", "point_mass", "quantize",
           "restart_dead_codes", "straight_through"]
