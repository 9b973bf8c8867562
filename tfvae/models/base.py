"""The VAE contract every variant of the zoo implements.

A model defines a prior p(z), a decoder p(x|z) and an amortized posterior q(z|x):

    log p(x) >= ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

`BaseVAE` builds the networks from config, returns TFP distributions from `prior`,
`encode` and `decode`, computes the ELBO's terms, and trains with Keras `fit` through
`train_step`/`test_step`. A variant overrides what differs: its one training hook is `training_loss`
(returning a `TrainingLoss`), with `training_scope` / `after_train_step` for a schedule or a
second update; sometimes `prior` or the posterior family.

Conventions: every log-density is in nats per example, summed over data dimensions;
losses are means over the batch of per-example values; beta-like weights multiply the
per-example KL. Randomness comes from explicit stateless seeds (shape [2], int32) or,
when none is given, from the model's `keras.random.SeedGenerator`, so a seed makes a
run reproducible.

Under a `tf.distribute` strategy with N replicas, every `train_step` updates through
`apply_mean_gradients`: the optimizer sums the replicas' gradients, so each hands it the
gradient of its batch-mean loss divided by N, and the update is that of one device with the
global batch (`tfvae.training.distribute` has the details). On one replica it adds nothing.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import steps
from tfvae.config import ConfigError, NonNegativeInt, PositiveInt, Sizes, validate
from tfvae.distributions import LIKELIHOODS, build_likelihood, normalize_spec
from tfvae.inputs import (RefusedBatch, as_float_tensor, check_batch, check_condition, check_sample_count,
                          checked_in_pipeline)
from tfvae.nets import build_decoder, build_encoder, normalize_net_spec
from tfvae.parts import build_part, check_parts
from tfvae.parts.objectives import TrainingLoss
from tfvae.replicas import apply_mean_gradients, replica_seed, step_logs
from tfvae.seeds import as_seed

tfd = tfp.distributions

METRIC_NAMES = ("loss", "elbo", "log_px_z", "kl")
# Methods of BaseVAE computed from `training_loss`, which a variant must not override.
DERIVED_FROM_TRAINING_LOSS = ("objective_and_terms", "objective", "train_step", "test_step", "gradients", "_record")
DEFAULT_PARTS = {"prior": "standard_normal", "posterior": "diagonal", "objective": "elbo"}


DATA_BATCH = "a batch of the data set"     # names the checks `BaseVAE.checked_data` maps into a pipeline


@contextlib.contextmanager
def _data_errors_as_value_errors():
    """Turns the failure of a pipeline check of `BaseVAE.checked_data` (an InvalidArgumentError
    raised where the batch is read) into a ValueError with the check's own message."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        failed = [line.split("assertion failed:", 1)[1] for line in e.message.splitlines()
                  if "assertion failed:" in line and DATA_BATCH in line]
        if not failed:
            raise
        parts = failed[0].strip()[1:-1].split("] [")       # "[message] [value] [value]"
        raise RefusedBatch(" ".join(parts)) from None


def without_default_parts(base: dict, kinds) -> dict:
    """`base` (a model's arguments) without those of `kinds` that name the default part: a
    config written by `get_config` of an earlier version holds them, filled in."""
    return {key: value for key, value in base.items()
            if key not in kinds or value not in (DEFAULT_PARTS[key], {"type": DEFAULT_PARTS[key]})}


def with_fixed_parts(name: str, base: dict, **parts) -> dict:
    """`base` (a named variant's other arguments) with the parts the variant is made of: e.g.
    `iwae` is the model with the objective {type: iwae, k, estimator}. A part of those kinds
    given in `base` too is refused, naming the way to choose it."""
    base = without_default_parts(base, parts)
    for kind, spec in parts.items():
        if kind in base:
            raise ConfigError(f"model {name!r} is the {kind} {spec['type']!r} with its own settings, so it takes "
                              f"no {kind!r}; for another {kind}, use class 'vae' with {kind}: {{type: ...}}")
    return {**base, **parts}


class BaseVAE(keras.Model):
    """A VAE with a Gaussian posterior; variants subclass it and override what differs.

    Args:
      data_shape: shape of one example, e.g. (28, 28, 1) or (784,).
      latent_dim: size of z.
      encoder: network spec for q(z|x): a name ("mlp", "conv") or a mapping with "type".
      decoder: network spec for p(x|z); None mirrors the encoder's spec.
      likelihood: "bernoulli" or {"type": "gaussian", "scale": 0.1 | "learned" | "predicted"}.
      condition_dim: size of the condition vector c (0: unconditional). When > 0, every
        method takes `condition=` of shape [B, condition_dim] and `fit` takes (x, c) pairs;
        q(z|x, c) and p(x|z, c) see c concatenated to their inputs.
      kl: "analytic" (closed form where TFP has one, else Monte Carlo) or "monte_carlo".
      seed: seed of the sampling stream used inside `fit` and when no seed is passed.
      precision: "float32", or "mixed_bfloat16": the encoder and decoder bodies compute in
        bfloat16 (their weights stay float32), and their outputs are cast to float32 before
        any distribution is built, so every log-probability, KL and bound is float32. Pays
        on hardware with bfloat16 matmuls (recent x86 with AVX512-BF16 or AMX, TPUs,
        Ampere+ GPUs); see docs/performance.md.

    A variant's constructor declares its own arguments and hands the rest on as `**base`
    (`super().__init__(**base)`); `tfvae.config.validate` reads that `**base` as these
    arguments, so configs are checked against one list of them.
    """

    # The kinds of part ("prior", "posterior", "objective") a named variant fixes from its own
    # arguments (`with_fixed_parts`): its config holds those arguments, not the parts.
    fixed_parts: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        """A variant trains through `training_loss` only: overriding the methods derived from
        it (or the step that calls it) would be silently bypassed or break the generic step."""
        super().__init_subclass__(**kwargs)
        derived = [name for name in DERIVED_FROM_TRAINING_LOSS if name in cls.__dict__]
        if derived:
            raise TypeError(f"{cls.__qualname__} overrides {', '.join(derived)}: a variant's training hook is "
                            f"training_loss(x, condition, training, seed) -> TrainingLoss (its loss, per-example "
                            f"terms and optional surrogates); after_train_step and training_scope cover a "
                            f"second update and a mode (see docs/adding_a_part.md)")
    # Names of the per-example terms of `training_loss` that fit logs besides loss, elbo, log_px_z, kl
    # (a variant's own; the objective part's are added to them).
    extra_metrics: tuple[str, ...] = ()

    def __init__(self, data_shape: Sizes = (28, 28, 1), latent_dim: PositiveInt = 50,
                 encoder: str | Mapping = "mlp", decoder: str | Mapping | None = None,
                 likelihood: str | Mapping = "bernoulli", condition_dim: NonNegativeInt = 0,
                 kl: Literal["analytic", "monte_carlo"] = "analytic", seed: int = 0,
                 precision: Literal["float32", "mixed_bfloat16"] = "float32",
                 prior: str | Mapping = "standard_normal", posterior: str | Mapping = "diagonal",
                 objective: str | Mapping = "elbo", name: str | None = None):
        super().__init__(name=name or getattr(type(self), "registered_name", "vae"))
        args = validate(BaseVAE, dict(data_shape=data_shape, latent_dim=latent_dim, encoder=encoder,
                                      decoder=decoder, likelihood=likelihood, condition_dim=condition_dim,
                                      kl=kl, seed=seed, precision=precision, prior=prior, posterior=posterior,
                                      objective=objective, name=name), f"model {self.name!r}")
        self.data_shape = tuple(args["data_shape"])
        self.latent_dim = args["latent_dim"]
        self.condition_dim = args["condition_dim"]
        self.kl_mode = args["kl"]
        encoder_spec = normalize_net_spec(args["encoder"])
        decoder_spec = normalize_net_spec(args["decoder"] if args["decoder"] is not None else encoder_spec)
        likelihood_spec = normalize_spec(args["likelihood"], LIKELIHOODS, "likelihood")
        self.seed = args["seed"]
        self.precision = args["precision"]
        self.prior_part = build_part("prior", args["prior"])
        self.posterior_part = build_part("posterior", args["posterior"])
        self.objective_part = build_part("objective", args["objective"])
        # Keras' attribute: jit_compile="auto" (and tfvae's presets) leave XLA off unless every
        # part samples with ops XLA has kernels for (not the Power Spherical's gamma draws).
        self.supports_jit = all(getattr(part, "supports_jit", True)
                                for part in (self.prior_part, self.posterior_part, self.objective_part))
        # Kept as JSON text: Keras would wrap a dict attribute in a tracking container.
        self._base_config_json = json.dumps(dict(
            data_shape=list(self.data_shape), latent_dim=self.latent_dim, encoder=encoder_spec,
            decoder=decoder_spec, likelihood=likelihood_spec, condition_dim=self.condition_dim,
            kl=self.kl_mode, seed=self.seed, precision=self.precision, prior=self.prior_part.spec(),
            posterior=self.posterior_part.spec(), objective=self.objective_part.spec()))

        self.likelihood = build_likelihood(likelihood_spec, self.data_shape)
        self.encoder_net = build_encoder(encoder_spec, self.data_shape, self.condition_dim, self.encoder_output_units())
        self.decoder_net = build_decoder(decoder_spec, self.decoder_input_dim(), self.data_shape,
                                         self.likelihood.params_per_dim, self.condition_dim)
        if self.precision != "float32":
            for net in (self.encoder_net, self.decoder_net):
                for layer in net._flatten_layers(include_self=True):
                    layer.dtype_policy = self.precision
        self.seed_generator = keras.random.SeedGenerator(args["seed"], name="sampling_seed")
        # Multiplies the KL term of the training objective; the KL warm-up callback ramps it 0 -> 1.
        self.kl_weight = self.add_weight(shape=(), initializer="ones", trainable=False, name="kl_weight")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in (*METRIC_NAMES, *self.logged_terms)}
        self.build()

    @property
    def posterior_family(self):
        """What maps the encoder's raw output to q(z|x) (`num_params`, `distribution`): the
        posterior part; a model whose posterior is not a part (the hierarchical ones) gives its own."""
        return self.posterior_part

    @property
    def euclidean_latent(self) -> bool:
        """z ranges over R^latent_dim and p(z) has a density there, so the per-example Gaussian
        and flow posteriors and the point estimates of `tfvae.inference` apply: the posterior's
        latent space is "euclidean". False for latents on a sphere (the spherical parts), a
        simplex (the categorical ones) or a codebook (vector_quantized)."""
        return self.posterior_part.latent_space == "euclidean"

    # ----------------------------------------------------------------- network sizes
    # Hooks for variants whose networks do not map x -> q(z|x) and z -> p(x|z) over the whole
    # latent vector (e.g. hierarchical models: the encoder body feeds the first of several
    # stochastic layers, the decoder body sees only z_1). Called during __init__, after the
    # base attributes (latent_dim, condition_dim, likelihood) are set.
    def encoder_output_units(self) -> int:
        """Width of the encoder body's output: the raw parameters of q(z|x) by default."""
        return self.posterior_family.num_params(self.latent_dim)

    def decoder_input_dim(self) -> int:
        """Width of the decoder body's input: the whole z by default."""
        return self.latent_dim

    def decoder_inputs(self, z):
        """The part of z [..., latent_dim] that p(x|z) depends on, [..., decoder_input_dim()]:
        all of z by default (z_1 alone in a hierarchical model)."""
        return z

    # ----------------------------------------------------------------- Keras plumbing
    def build(self, input_shape=None):
        if self.built:
            return
        check_parts(self.prior_part, self.posterior_part, self.objective_part)
        for layer in (self.likelihood, self.encoder_net, self.decoder_net):
            layer.build()
        for part in (self.prior_part, self.posterior_part, self.objective_part):
            part.attach(self)
        self.build_variant()
        self.built = True

    def build_variant(self):
        """Creates and builds what a variant adds to the networks above (its own weights and
        sub-layers: pseudo-inputs, a learned prior, flow steps, a second stochastic layer).
        Called once, from `build`, which __init__ calls: Keras accepts new variables and
        sub-layers only until the model is built."""

    def get_config(self):
        # Plain Python containers only (JSON/YAML-safe); variants add their own keys. A named
        # variant that fixes parts (`fixed_parts`) stores its own arguments instead.
        config = {**json.loads(self._base_config_json), "name": self.name}
        for kind in self.fixed_parts:
            config.pop(kind)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ----------------------------------------------------------------- distributions
    def prior(self) -> tfd.Distribution:
        """p(z), event shape [latent_dim]: the prior part's (`prior:` in config; N(0, I) by
        default)."""
        return self.prior_part.distribution()

    def posterior_params(self, x, condition=None, training=False):
        """The encoder's raw output for x, [B, posterior_family.num_params(latent_dim)]:
        the unconstrained parameters that `posterior_family.distribution` maps to q(z|x).
        Semi-amortized inference refines these by gradient steps."""
        x = check_batch(x, self.data_shape, "x", self.likelihood.support)
        condition = check_condition(condition, self.condition_dim, x.shape[0])
        return tf.cast(self.encoder_net(x, condition, training=training), tf.float32)

    def encode(self, x, condition=None, training=False) -> tfd.Distribution:
        """q(z|x[, c]) with batch shape [B] and event shape [latent_dim]."""
        return self.posterior_family.distribution(self.posterior_params(x, condition, training))

    def decode(self, z, condition=None, training=False) -> tfd.Distribution:
        """p(x|z[, c]) for z of shape [..., latent_dim]; batch shape [...], event = data shape.

        A condition of shape [B, C] is broadcast against z's leading dims (e.g. [k, B]).
        """
        z = as_float_tensor(z, "z")
        if z.shape.rank is None or z.shape.rank < 1 or z.shape[-1] not in (None, self.latent_dim):
            raise ValueError(f"z must have shape (..., {self.latent_dim}), got {tuple(z.shape)}")
        z = self.decoder_inputs(z)
        leading = tf.shape(z)[:-1]
        flat_condition = None
        if self.condition_dim:
            if z.shape.rank < 2:
                raise ValueError(f"a conditional model decodes z of shape (..., batch, {self.latent_dim}), "
                                 f"one condition row per batch row; got z of shape {tuple(z.shape)}")
            condition = check_condition(condition, self.condition_dim, z.shape[-2], "z", allow_one=True)
            full = tf.concat([leading, [self.condition_dim]], axis=0)
            flat_condition = tf.reshape(tf.broadcast_to(condition, full), [-1, self.condition_dim])
        elif condition is not None:
            check_condition(condition, 0)
        params = tf.cast(self.decoder_net(tf.reshape(z, [-1, self.decoder_input_dim()]), flat_condition,
                                          training=training), tf.float32)
        params = tf.reshape(params, tf.concat(
            [leading, self.data_shape, [self.likelihood.params_per_dim]], axis=0))
        return self.likelihood.distribution(params)

    # ----------------------------------------------------------------- bounds
    def _seed(self, seed):
        """`seed` as a stateless seed [2]; None: the next seed of the model's stream. Under a
        tf.distribute strategy with several replicas that seed is folded with the replica's
        id (`replica_seed`): each replica's share of the global batch gets its own noise."""
        if seed is None:
            return replica_seed(tf.cast(self.seed_generator.next(), tf.int32))
        return as_seed(seed)

    def _sample_posterior(self, x, k, condition, seed, posterior, training):
        """(q, z [k, B, L], log q(z|x) [k, B], log p(x|z) [k, B]) for k samples of z ~ q per
        example. z and log q come from one call (`experimental_sample_and_log_prob`), so a
        flow posterior's log q is its base density minus the forward log-det, never the
        (sequential) inverse; for a Gaussian q the values equal q.log_prob(z)."""
        x = check_batch(x, self.data_shape, "x", self.likelihood.support)
        q = posterior if posterior is not None else self.encode(x, condition, training=training)
        z, log_qz = q.experimental_sample_and_log_prob(k, seed=self._seed(seed))
        return q, z, log_qz, self.decode(z, condition, training=training).log_prob(x)

    def analytic_kl(self, q):
        """KL(q || p(z)) per example in closed form, or None when kl="monte_carlo" or the
        posterior part has none (`Posterior.analytic_kl`: TFP's for the pair by default)."""
        if self.kl_mode != "analytic":
            return None
        return self.posterior_part.analytic_kl(q, self.prior())

    def kl_term(self, q, z, log_qz):
        """KL(q || p(z)) per example: `analytic_kl` when there is one, else the Monte Carlo
        mean over the samples z [k, B, L] (with log q(z) [k, B]) of log q(z) - log p(z)."""
        kl = self.analytic_kl(q)
        if kl is None:
            kl = tf.reduce_mean(log_qz - self.prior().log_prob(z), axis=0)
        return kl

    def kl_terms(self, q, z, log_qz) -> dict:
        """{"kl": `kl_term`} and, for a model whose KL splits into named parts (one per
        stochastic layer: `TwoLayerVAE`), those parts, each [B], summing to kl."""
        return {"kl": self.kl_term(q, z, log_qz)}

    def bound_terms(self, log_px_z, q, z, log_qz) -> dict:
        """The per-example ELBO terms of draws z [k, B, L] ~ q with log q(z) [k, B], given
        log_px_z [B] (their mean log p(x|z)): log_px_z, kl and its parts (`kl_terms`), and
        elbo = log_px_z - kl. What every objective reports."""
        kl_terms = self.kl_terms(q, z, log_qz)
        return {"log_px_z": log_px_z, **kl_terms, "elbo": log_px_z - kl_terms["kl"]}

    def elbo_terms(self, x, k: int = 1, condition=None, seed=None, posterior=None, training=False):
        """Per-example ELBO terms, in nats, each of shape [B]:

            log_px_z = (1/k) sum_i log p(x|z_i),  z_i ~ q(z|x)
            kl       = KL(q(z|x) || p(z))       (and its parts, if any: `kl_terms`)
            elbo     = log_px_z - kl

        posterior: use this distribution (batch shape [B]) instead of the encoder's q, e.g.
        an exact or per-example optimised posterior.
        """
        q, z, log_qz, log_px_z = self._sample_posterior(x, k, condition, seed, posterior, training)
        return self.bound_terms(tf.reduce_mean(log_px_z, axis=0), q, z, log_qz)

    def log_weights(self, x, k: int, condition=None, seed=None, posterior=None):
        """Importance weights of k samples z_i ~ q per example, each [k, B]:

            log_w = log p(x|z) + log p(z) - log q(z|x);  log p(x) = log E_q[w].
        Also returns the three terms (keys log_px_z, log_pz, log_qz) and the proposal q.
        """
        q, z, log_qz, log_px_z = self._sample_posterior(x, k, condition, seed, posterior, training=False)
        log_pz = self.prior().log_prob(z)
        return {"log_w": log_px_z + log_pz - log_qz, "log_px_z": log_px_z, "log_pz": log_pz,
                "log_qz": log_qz, "posterior": q}

    def training_loss(self, x, condition=None, training=False, seed=None) -> "TrainingLoss":
        """The one hook of a variant: what it trains on, for a batch x [B, ...].

        Returns a `TrainingLoss`: the scalar loss (a mean over the batch), the per-example
        terms (at least `elbo`, `log_px_z`, `kl`, and every name in `extra_metrics`), and,
        for an estimator that treats the encoder and the other variables differently, one
        surrogate per group. By default the objective part's (`objective:` in config; "elbo":
        the negative ELBO with the KL weighted by `kl_weight`, 1 after warm-up, from one
        z ~ q(z|x) per example). `seed`: a stateless seed [2]; None draws from the model's
        stream."""
        return self.objective_part.loss(self, x, condition, training=training, seed=seed)

    def objective_and_terms(self, x, condition=None, training=False, seed=None):
        """(scalar loss, per-example terms) of `training_loss`."""
        result = self.training_loss(x, condition, training=training, seed=seed)
        return result.value, result.terms

    def objective(self, x, condition=None, training=False, seed=None):
        """The scalar loss this variant trains on (of `training_loss`)."""
        return self.training_loss(x, condition, training=training, seed=seed).value

    # ----------------------------------------------------------------- fit
    def unpack(self, data):
        """(x, condition) from a dataset element: x, or (x, c) for a conditional model."""
        if isinstance(data, (tuple, list)):
            if self.condition_dim:
                if len(data) < 2:
                    raise ValueError("a conditional model trains on (x, condition) pairs")
                return data[0], data[1]
            return data[0], None
        if self.condition_dim:
            raise ValueError(f"this model is conditional (condition_dim={self.condition_dim}): "
                             f"its data must yield (x, condition) pairs, e.g. labels=True")
        return data, None

    @property
    def logged_terms(self) -> tuple[str, ...]:
        """The terms `fit` logs besides loss, elbo, log_px_z and kl: the variant's
        `extra_metrics`, then its objective part's."""
        return tuple(dict.fromkeys((*self.extra_metrics, *self.objective_part.extra_metrics)))

    def _record(self, loss, terms, updates=None):
        """Updates the trackers (loss; elbo, log_px_z, kl and `extra_metrics` from `terms`, or
        from `updates` where it has them) and returns the step's logs."""
        updates = updates or {}
        self.trackers["loss"].update_state(loss)
        for name in ("elbo", "log_px_z", "kl", *self.logged_terms):
            self.trackers[name].update_state(updates[name] if name in updates else terms[name])
        return step_logs({name: tracker.result() for name, tracker in self.trackers.items()})

    def split_gradients(self, tape, encoder_loss, generative_loss, variables=None):
        """Gradients aligned with `variables` (default `trainable_variables`): the encoder's
        variables take the gradient of `encoder_loss`, every other variable that of
        `generative_loss` (one backward pass when both are the same tensor; else the tape must
        be persistent). For estimators that treat the two networks differently (DReG, PIWAE,
        SA-VAE)."""
        variables = self.trainable_variables if variables is None else variables
        if encoder_loss is generative_loss:
            return tape.gradient(encoder_loss, variables)
        encoder = {id(v) for v in self.encoder_net.trainable_variables}
        is_encoder = [id(v) in encoder for v in variables]
        of_encoder = iter(tape.gradient(encoder_loss, [v for v, e in zip(variables, is_encoder) if e]))
        of_rest = iter(tape.gradient(generative_loss, [v for v, e in zip(variables, is_encoder) if not e]))
        return [next(of_encoder) if e else next(of_rest) for e in is_encoder]

    @property
    def optimized_variables(self) -> list:
        """The variables `self.optimizer` updates in `train_step`: all trainable ones but those
        a part trains with an optimizer of its own (`Objective.separate_variables`, e.g.
        FactorVAE's discriminator)."""
        separate = {id(v) for v in self.objective_part.separate_variables(self)}
        return [v for v in self.trainable_variables if id(v) not in separate]

    def gradients(self, x, condition=None, training=True, seed=None):
        """(result of `training_loss`, gradients aligned with `optimized_variables`): each variable's
        gradient is that of its group's surrogate (the loss itself unless the variant gives
        surrogates), plus that of any layer losses (regularizers)."""
        variables = self.optimized_variables
        with tf.GradientTape(persistent=True) as tape:
            result = self.training_loss(x, condition, training=training, seed=seed)
            inference = result.value if result.inference is None else result.inference
            generative = result.value if result.generative is None else result.generative
            if self.losses:
                extra = tf.add_n(self.losses)
                shared = inference is generative
                inference = inference + extra
                generative = inference if shared else generative + extra
        gradients = self.split_gradients(tape, inference, generative, variables)
        del tape
        return result, gradients

    @contextlib.contextmanager
    def training_scope(self):
        """A context manager entered around every training step, inside the compiled step: the
        parts' own (`Part.training_scope`), prior, posterior and objective in turn, which update
        a schedule on entry (e.g. the Gumbel-softmax temperature) or hold a mode while the loss
        is built (relaxed latents)."""
        with contextlib.ExitStack() as stack:
            for part in (self.prior_part, self.posterior_part, self.objective_part):
                stack.enter_context(part.training_scope(self))
            yield

    def after_train_step(self, result) -> dict:
        """Called after the update, inside the compiled step, with the step's `training_loss` result:
        a variant's second update (a discriminator's optimizer step, an EMA codebook) goes
        here. Returns metric values to record instead of those in `result.terms`. The
        objective part's by default."""
        return self.objective_part.after_train_step(self, result)

    def train_step(self, data):
        x, condition = self.unpack(data)
        with self.training_scope():
            result, gradients = self.gradients(x, condition, training=True)
            self.apply_gradients(gradients, self.optimized_variables)
            updates = self.after_train_step(result)
        return self._record(result.value, result.terms, updates)

    def apply_gradients(self, gradients, variables, optimizer=None):
        """One update of `variables` by `optimizer` (default: the compiled one) from their
        `gradients` (aligned with `variables`) of a loss that is a mean over this replica's
        batch; under a strategy with several replicas, the update one device makes with the
        global batch (`apply_mean_gradients`). Every `train_step` updates through here."""
        apply_mean_gradients(self.optimizer if optimizer is None else optimizer, gradients, variables)

    def test_step(self, data):
        x, condition = self.unpack(data)
        result = self.training_loss(x, condition, training=False)
        return self._record(result.value, result.terms)

    # ----------------------------------------------------------------- fit, checked
    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """Keras' `fit`, with the data checked as every other entry point checks it (shape,
        finite values, the likelihood's support; `checked_data`), and the optimizer built
        before the first step is traced, so that a refused call leaves the model exactly as
        it was. A bad array is refused before anything runs; a tf.data pipeline is checked
        batch by batch in the pipeline, outside the compiled step, and its first bad batch
        stops `fit` (`RefusedBatch`, a ValueError). Refusals leave every variable (weights,
        optimizer slots and step counter, seed stream) as it was before the call: a refused
        call is all or nothing, also because the step function that fails on a batch has
        already advanced the counters that do not depend on the data."""
        x = self.checked_data(x, "x")
        if validation_data is not None:
            validation_data = self.checked_data(validation_data, "validation_data")
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():        # its slots mirror the variables
                self.optimizer.build(self.trainable_variables)
        state = self._training_state()
        before = [v.numpy() for v in state]
        try:
            with _data_errors_as_value_errors():
                return super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        except RefusedBatch:
            for variable, value in zip(state, before):
                variable.assign(value)
            raise

    def _training_state(self) -> list:
        """Every variable `fit` changes: the model's own (weights, seed stream, metrics) and
        those of its optimizers (the compiled one and any a variant keeps, e.g. FactorVAE's)."""
        optimizers = [self.optimizer, *(v for v in vars(self).values() if isinstance(v, keras.optimizers.Optimizer))]
        unique = {id(o): o for o in optimizers if o is not None}
        return list(self.variables) + [v for o in unique.values() for v in o.variables]

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras' `evaluate` (the model's loss and metrics), with the data checked as by `fit`."""
        with _data_errors_as_value_errors():
            return super().evaluate(self.checked_data(x, "x"), y, *args, **kwargs)

    def checked_data(self, data, what: str = "x"):
        """`data` for `fit` or `evaluate`, checked: an array (or an (x, condition) pair of
        arrays for a conditional model) now, whole, by `check_batch`; a tf.data.Dataset by its
        element shapes now and, batch by batch as it is read, by asserts mapped into the
        pipeline (`checked_in_pipeline`: never inside the compiled step). Anything else (a Python
        generator, a PyDataset) passes unchecked."""
        support = getattr(self.likelihood, "support", "real")
        if isinstance(data, tf.data.Dataset):
            return self._checked_dataset(data, what, support)
        pair = isinstance(data, (tuple, list)) and len(data) == 2 and self.condition_dim
        if pair:
            x = check_batch(data[0], self.data_shape, f"{what}[0]", support)
            return x, check_condition(data[1], self.condition_dim, x.shape[0])
        if isinstance(data, (np.ndarray, tf.Tensor)) or (isinstance(data, (list, tuple)) and not self.condition_dim):
            return check_batch(data, self.data_shape, what, support)
        return data

    def _checked_dataset(self, data, what: str, support: str):
        spec = data.element_spec
        parts = spec if isinstance(spec, tuple) else (spec,)
        if not all(isinstance(p, tf.TensorSpec) for p in parts):
            return data                    # nested or ragged structures: left to the step's own errors
        x_spec = parts[0]
        expected = tf.TensorShape([None, *self.data_shape])
        if not x_spec.shape.is_compatible_with(expected):
            shape = tuple(x_spec.shape.as_list()) if x_spec.shape.rank is not None else "unknown rank"
            raise ValueError(f"{what}: the data set yields batches of shape {shape}; this model needs "
                             f"(batch, {', '.join(map(str, self.data_shape))})")
        if self.condition_dim and len(parts) < 2:
            raise ValueError(f"{what}: this model is conditional (condition_dim={self.condition_dim}): "
                             f"its data must yield (x, condition) pairs, e.g. labels=True")
        @tf.autograph.experimental.do_not_convert
        def check(*batch):
            checked = [checked_in_pipeline(tf.cast(batch[0], tf.float32), f"{what}: {DATA_BATCH}",
                                           [None, *self.data_shape], support)]
            if self.condition_dim:
                checked.append(checked_in_pipeline(tf.cast(batch[1], tf.float32),
                                                   f"{what}: the condition of {DATA_BATCH}", [None, self.condition_dim]))
            checked += list(batch[len(checked):])
            return tuple(checked) if isinstance(spec, tuple) else checked[0]

        return data.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def make_train_function(self, force=False):
        """Keras' train function; with jit_compile on one device, its `steps_per_execution`
        steps per call run as one XLA program (`tfvae.steps.fused`)."""
        if self.train_function is None or force:
            super().make_train_function(force)
            self.train_function = steps.fused(self, self.train_step, self.train_function)
        return self.train_function

    def make_test_function(self, force=False):
        """As `make_train_function`, for `evaluate` and the validation of `fit`."""
        if self.test_function is None or force:
            super().make_test_function(force)
            self.test_function = steps.fused(self, self.test_step, self.test_function)
        return self.test_function

    def call(self, inputs, training=False):
        """The reconstruction mean E[x | z = E_q[z]]; inputs are x or (x, condition)."""
        x, condition = self.unpack(inputs)
        return self.reconstruct(x, condition, training=training)

    # ----------------------------------------------------------------- conveniences
    def reconstruct(self, x, condition=None, training=False):
        """Mean of p(x | z = mean of q(z|x)), shape [B, *data_shape] (the mean estimated
        from fixed draws when q has no closed form, e.g. a flow; see `moments`), or the point
        the posterior part decodes instead (`decode_point`: the mean direction on a sphere)."""
        q = self.encode(x, condition, training=training)
        return self.decode(self.posterior_part.decode_point(q), condition, training=training).mean()

    def sample(self, n: int, seed=None, condition=None, mean: bool = True):
        """n draws x ~ p(x|z), z ~ p(z); the means of p(x|z) when `mean` (images without
        pixel noise), else samples. condition: [n, C] or [C] for a conditional model."""
        n = check_sample_count(n)
        if self.condition_dim and condition is not None:
            condition = as_float_tensor(condition, "condition")
            if condition.shape.rank == 1:
                condition = condition[None]        # one row for all n samples
            condition = check_condition(condition, self.condition_dim, n if isinstance(n, int) else None,
                                        "n (samples)", allow_one=True)
        seed = self._seed(seed)
        z = self.prior().sample(n, seed=seed)
        p = self.decode(z, condition)
        return p.mean() if mean else p.sample(seed=tf.random.experimental.stateless_fold_in(seed, 1))
