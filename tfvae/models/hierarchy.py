"""What the two-stochastic-layer VAEs (`hvae2`, `ladder`) share.

The generic tools of tfvae (importance sampling, per-example posterior optimisation,
export) see z as one vector of size latent_dim. A model with latent layers z1 (bottom, size
d1, the one the decoder reads) and z2 (top, size d2) therefore works on the concatenation

    z = [z1, z2],   latent_dim = d1 + d2,

and returns its prior p(z) = p(z2) p(z1|z2) and its posterior q(z|x) as distributions over
that vector (`TwoLevelChain`): `sample` draws one block and then the other given it, and
`log_prob` is the sum of the two factors' log-densities. Neither has a closed-form KL, so
`analytic_kl` is None and `BaseVAE.kl_term` uses the Monte Carlo estimate
mean_i [log q(z_i|x) - log p(z_i)]; `elbo_terms` and `log_weights` then give

    log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z|x)

(q(z|x) = q(z1|x) q(z2|z1) for hvae2, q(z2|x) q(z1|z2, x) for the ladder). Besides the
total, the objectives report and `fit` logs the KL of each layer, kl_z1 and kl_z2
(`TwoLayerVAE.kl_terms`): a layer the model does not use shows a KL near 0.
"""
from __future__ import annotations

import json

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError
from tfvae.distributions import DiagonalGaussianPosterior, standard_normal
from tfvae.models.base import BaseVAE, without_default_parts
from tfvae.nets.mlp import check_activation, dense_stack
from tfvae.parts import build_part

tfd = tfp.distributions


# --------------------------------------------------------------------- the joint over [z1, z2]
class TwoLevelChain(tfd.Distribution):
    """A distribution over z = [z1, z2] (event [d1 + d2]) that factorises as a chain:

        r(z) = r(z_a) r(z_b | z_a),   (a, b) = (1, 2) if `first_is_z1` else (2, 1).

    Args:
      first: distribution over the block drawn first (event [d_a]); its batch shape is the
        chain's batch shape.
      then: callable z_a [..., d_a] -> distribution over z_b (event [d_b], batch shape the
        leading dims of z_a, broadcast with `first`'s batch shape).
      first_is_z1: whether the block drawn first is z1 (the first d1 entries of z).
      sizes: (d1, d2).

    Sampling is ancestral (z_a ~ r(z_a), then z_b ~ r(z_b|z_a), from two seeds split off
    the given one) and reparameterised when both factors are. Mean and variance have no
    closed form (they raise NotImplementedError); `estimate_moments` estimates them, with the
    first block's exact, for `tfvae.distributions.moments`.
    """

    def __init__(self, first, then, first_is_z1: bool, sizes, name: str = "TwoLevelChain"):
        parameters = dict(locals())
        self._first, self._then = first, then
        self._first_is_z1 = bool(first_is_z1)
        self._sizes = tuple(int(s) for s in sizes)
        reparameterized = first.reparameterization_type == tfd.FULLY_REPARAMETERIZED
        super().__init__(
            dtype=first.dtype,
            reparameterization_type=tfd.FULLY_REPARAMETERIZED if reparameterized else tfd.NOT_REPARAMETERIZED,
            validate_args=False, allow_nan_stats=True, parameters=parameters, name=name)

    @property
    def first(self):
        """The distribution of the block drawn first."""
        return self._first

    def conditional(self, z_first):
        """The distribution of the other block given the first one."""
        return self._then(z_first)

    def split(self, z):
        """(z_first, z_second): the blocks of z in drawing order."""
        z1, z2 = tf.split(z, list(self._sizes), axis=-1)
        return (z1, z2) if self._first_is_z1 else (z2, z1)

    def _join(self, z_first, z_second):
        return tf.concat([z_first, z_second] if self._first_is_z1 else [z_second, z_first], axis=-1)

    def _batch_shape(self):
        return self._first.batch_shape

    def _batch_shape_tensor(self):
        return self._first.batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([sum(self._sizes)])

    def _event_shape_tensor(self):
        return tf.constant([sum(self._sizes)], tf.int32)

    def _sample_n(self, n, seed=None):
        first_seed, second_seed = tfp.random.split_seed(seed, n=2, salt="TwoLevelChain")
        z_first = self._first.sample(n, seed=first_seed)
        z_second = self._then(z_first).sample(seed=second_seed)
        return self._join(z_first, z_second)

    def _log_prob(self, z):
        z_first, z_second = self.split(z)
        return self._first.log_prob(z_first) + self._then(z_first).log_prob(z_second)

    def layer_log_probs(self, z, log_prob):
        """(log r(z1 | ...), log r(z2 | ...)): the two factors of log_prob = log r(z) for z
        [..., d1 + d2], z1's first. The factor of the block drawn first is evaluated; the
        other is the rest, log_prob minus it (no second pass through the conditional)."""
        first = self._first.log_prob(self.split(z)[0])
        return (first, log_prob - first) if self._first_is_z1 else (log_prob - first, first)

    def estimate_moments(self, samples: int, seed):
        """(mean, standard deviation) over z, each [batch..., d1 + d2]: the first block's
        exactly, the second's from `samples` draws z_a of the first, Rao-Blackwellised:

            E[z_b] ~= mean_s m(z_a_s),   Var[z_b] ~= mean_s v(z_a_s) + var_s m(z_a_s)

        with m, v the conditional's mean and variance (the law of total variance). The noise
        is only what the conditional's mean varies with z_a: a block that ignores the first
        gets its moments exactly, where plain sample moments would carry Var[z_b]/samples of
        noise (with a standard deviation of 2, 0.016: above the 0.01 that makes a unit count
        as active)."""
        z_first = self._first.sample(samples, seed=seed)
        second = self._then(z_first)
        conditional_means = second.mean()
        second_mean = tf.reduce_mean(conditional_means, 0)
        second_variance = tf.reduce_mean(second.variance(), 0) + tf.math.reduce_variance(conditional_means, 0)
        mean = self._join(self._first.mean(), second_mean)
        stddev = self._join(self._first.stddev(), tf.sqrt(second_variance))
        return mean, stddev


# --------------------------------------------------------------------- conditional Gaussian nets
class GaussianMLP(keras.layers.Layer):
    """v -> N(mu(v), diag(sigma(v)^2)) over `output_dim` values: `hidden` Dense layers with
    `activation`, then a linear layer to (mu, raw sigma), sigma = softplus(raw) + eps (the
    `DiagonalGaussianPosterior` parameterisation). Any leading dims of v are kept."""

    def __init__(self, input_dim: int, output_dim: int, hidden, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.hidden = dense_stack(hidden, activation, "hidden")
        self.out = keras.layers.Dense(DiagonalGaussianPosterior.num_params(self.output_dim), name="params")

    def build(self, input_shape=None):
        width = self.input_dim
        for layer in self.hidden + [self.out]:
            layer.build((None, width))
            width = layer.units
        self.built = True

    def call(self, v):
        """The raw parameters [..., 2 * output_dim] for v [..., input_dim]."""
        leading = tf.shape(v)[:-1]
        h = tf.reshape(v, [-1, self.input_dim])
        for layer in self.hidden:
            h = layer(h)
        return tf.reshape(self.out(h), tf.concat([leading, [2 * self.output_dim]], axis=0))

    def distribution(self, v) -> tfd.Distribution:
        return DiagonalGaussianPosterior.distribution(self(v))


# --------------------------------------------------------------------- the shared model class
def resolve_latent_dims(latent_dims, latent_dim, depths, where: str):
    """(d1, ..., dL) and their sum, after checking the number of layers (`depths`, allowed
    values of L) and that `latent_dim`, when given, equals the sum."""
    dims = tuple(latent_dims)
    if len(dims) not in depths:
        allowed = " or ".join(str(d) for d in depths)
        raise ConfigError(f"{where}: latent_dims must list {allowed} layer sizes (bottom z1 first), got {list(dims)}")
    total = sum(dims)
    if latent_dim is not None and latent_dim != total:
        raise ConfigError(f"{where}: latent_dim is the size of z = [z1, z2], the sum of latent_dims "
                          f"{list(dims)} = {total}; got latent_dim={latent_dim} (leave it out)")
    return dims, total


class BoundPosteriorFamily:
    """A posterior family whose distribution depends on the model's networks as well as on
    the per-example parameters: `distribution(params)` = `model.posterior_from_params(params)`.
    What `refine_posterior` and `gap_report` use to rebuild q(z|x) from refined parameters."""

    def __init__(self, model):
        self.model = model

    def num_params(self, latent_dim=None) -> int:
        return self.model.posterior_param_count()

    def distribution(self, params) -> tfd.Distribution:
        return self.model.posterior_from_params(params)


LAYER_KL_NAMES = ("kl_z1", "kl_z2")


class TwoLayerVAE(BaseVAE):
    """Base of the VAEs with latent layers z1 (read by the decoder) and z2 above it:

        p(x, z1, z2) = p(x|z1) p(z1|z2) p(z2),   p(z2) = N(0, I),
        p(z1|z2) = N(mu_p(z2), diag(s_p(z2)^2))  (`self.top_down`, built by the subclass)

    over z = [z1, z2]. Subclasses store their arguments with `_set_hierarchy_config` before
    `super().__init__`, set the encoder body's width (`encoder_output_units`), create their
    extra networks in `build_variant`, and define `posterior_param_count`
    and `posterior_from_params` (q(z|x) from the per-example parameters that
    `posterior_params` returns). With a single layer (latent_dims = [d], where a subclass
    allows it) the model is the plain VAE: z = z1, p(z1) = N(0, I).

    The prior and the posterior are the model's own, not parts: a `prior` or `posterior` in
    its config is refused, and so is an objective that works with named posteriors only
    (`Objective.posteriors`, e.g. beta-TCVAE's diagonal Gaussian) when there are two layers.
    Any other objective applies (e.g. {type: iwae, k: 5}).
    """

    fixed_parts = ("prior", "posterior")

    def __init__(self, latent_dim: int, **base):
        where = f"model {base.get('name') or self.registered_name!r}"
        base = without_default_parts(base, self.fixed_parts)
        for kind in self.fixed_parts:
            if base.get(kind) is not None:
                raise ConfigError(f"{where} has its own {kind} over the stochastic layers, not a {kind} part: "
                                  f"it takes no {kind!r} (for another {kind}, use class 'vae' with {kind}: "
                                  f"{{type: ...}})")
        objective = build_part("objective", base.get("objective", "elbo"))
        if self.hierarchical and objective.posteriors:
            raise ConfigError(f"{where}: {objective!r} works with the posterior "
                              f"{' or '.join(map(repr, objective.posteriors))} only, and this model's posterior "
                              f"is its own chain over [z1, z2] ({objective.posteriors_reason})")
        super().__init__(latent_dim=latent_dim, **{k: v for k, v in base.items() if k not in self.fixed_parts})

    def _set_hierarchy_config(self, dims, **extra):
        """Stores the layer sizes and the subclass's own arguments (JSON-safe) before
        BaseVAE.__init__, whose network-size hooks and `build` read them."""
        self.latent_dims = tuple(int(d) for d in dims)
        self._hierarchy_config_json = json.dumps(dict(latent_dims=list(self.latent_dims), **extra))

    @property
    def hierarchical(self) -> bool:
        return len(self.latent_dims) > 1

    def decoder_input_dim(self) -> int:
        return self.latent_dims[0]

    def _hierarchy_config(self) -> dict:
        return json.loads(self._hierarchy_config_json)

    def get_config(self):
        return {**super().get_config(), **self._hierarchy_config()}

    # -------------------------------------------------------------- distributions
    @property
    def posterior_family(self):
        if not self.hierarchical:
            return DiagonalGaussianPosterior
        return BoundPosteriorFamily(self)

    def posterior_param_count(self) -> int:
        raise NotImplementedError

    def posterior_from_params(self, params) -> tfd.Distribution:
        raise NotImplementedError

    def prior(self) -> tfd.Distribution:
        """p(z) = p(z2) p(z1|z2) over z = [z1, z2]; N(0, I) for a single layer."""
        if not self.hierarchical:
            return super().prior()
        return TwoLevelChain(standard_normal(self.latent_dims[1]), self.top_down.distribution,
                             first_is_z1=False, sizes=self.latent_dims, name="prior")

    def analytic_kl(self, q):
        """None for two layers (no closed form: `kl_term` uses Monte Carlo); the Gaussian
        closed form of `BaseVAE` for a single layer."""
        if self.hierarchical:
            return None
        return super().analytic_kl(q)

    @property
    def extra_metrics(self) -> tuple[str, ...]:
        """With two layers, `fit` logs the KL of each (`kl_terms`)."""
        return LAYER_KL_NAMES if self.hierarchical else ()

    def kl_terms(self, q, z, log_qz) -> dict:
        """With two layers and q the model's chain, the KL and its parts per layer, each the
        Monte Carlo mean over the draws z [k, B, d1 + d2] of one factor's log-ratio:

            kl_z1 = mean_i [log q(z1_i | .) - log p(z1_i | z2_i)]
            kl_z2 = mean_i [log q(z2_i | .) - log p(z2_i)]

        where q(z1 | .) is q(z1|x) for hvae2 and q(z1|z2, x) for the ladder (q(z2 | .):
        q(z2|z1) and q(z2|x)); kl = kl_z1 + kl_z2. A layer whose KL stays near 0 is unused
        (posterior collapse). Otherwise `BaseVAE.kl_terms`."""
        if not (self.hierarchical and isinstance(q, TwoLevelChain)):
            return super().kl_terms(q, z, log_qz)
        prior = self.prior()
        log_pz = prior.log_prob(z)
        q_layers, p_layers = q.layer_log_probs(z, log_qz), prior.layer_log_probs(z, log_pz)
        parts = {name: tf.reduce_mean(log_q - log_p, axis=0)
                 for name, log_q, log_p in zip(LAYER_KL_NAMES, q_layers, p_layers)}
        return {"kl": tf.reduce_mean(log_qz - log_pz, axis=0), **parts}

    def decoder_inputs(self, z):
        """z1, the first d1 entries of z = [z1, z2]: p(x|z) = p(x|z1)."""
        return z[..., :self.latent_dims[0]]


def activation_fn(name: str):
    """The Keras activation function called `name` (ValueError naming valid ones otherwise)."""
    return keras.activations.get(check_activation(name))

