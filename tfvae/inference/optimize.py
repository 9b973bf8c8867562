"""Per-example posterior optimisation: the best q(z|x) of a family for each example.

For every example x_b of a batch, fit its own q*(z|x_b) from a variational family by
maximising its ELBO,

    q*_b = argmax_q  E_q[log p(x_b|z)] - KL(q || p(z)),

with Adam on reparameterized Monte Carlo gradients (`samples` draws of z per step; the KL
in closed form where TFP has one). No encoder is involved except, optionally, as the
starting point. Comparing ELBO[q*] with the encoder's ELBO[q] and with log p(x) splits the
gap of a trained VAE into its two causes (Cremer, Li & Duvenaud 2018):

    log p(x) - ELBO[q] = (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q])
                          approximation gap        amortization gap

The first is the price of the family, the second the price of predicting q from x with one
network pass instead of optimising it per example. All examples are optimised together
in one compiled loop (see `ascent`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.inference.ascent import CHECK_STEP, AscentSettings, adam_ascent, compiled, run_ascent
from tfvae.distributions import moments
from tfvae.inference.families import get_family
from tfvae.inputs import check_batch, check_condition, check_count
from tfvae.seeds import as_seed

tfd = tfp.distributions

INITS = ("encoder", "prior")


@dataclasses.dataclass
class PosteriorFit:
    """The result of `optimize_posterior`.

    distribution: the fitted q*, batch shape [B], event shape [latent_dim].
    params: its unconstrained parameters (dict of [B, ...] tensors).
    trace: [steps, B] single-batch ELBO estimates at each step (before its update).
    steps: steps run; converged: [B] bool, whether each example met the stopping rule.
    seconds, seconds_per_example: wall time of the optimisation loop.
    """
    family: str
    distribution: tfd.Distribution
    params: dict
    trace: np.ndarray
    steps: int
    converged: np.ndarray
    seconds: float
    seconds_per_example: float


def initial_moments(model, x, condition, init: str, seed):
    """(mean, stddev) [B, L] to start from: the encoder's q(z|x) or the prior N(0, I)."""
    if init == "encoder":
        return moments(model.encode(x, condition), seed)
    zeros = tf.zeros([tf.shape(x)[0], model.latent_dim])
    return zeros, tf.ones_like(zeros)


def check_euclidean_latent(model, what: str):
    """Per-example posteriors (Gaussian, full-covariance, flow) and point estimates search
    z in R^L; a model whose z lives on a sphere, a simplex or a codebook has no density there."""
    if not getattr(model, "euclidean_latent", True):
        raise ValueError(f"{what} fits Gaussian or flow posteriors over R^{model.latent_dim}, but the latent of "
                         f"model {model.name!r} is not Euclidean (its prior has no density off its support)")


def check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def optimize_posterior(model, x, family="diag", init: str = "encoder", steps: int = 2000,
                       learning_rate: float = 0.05, samples: int = 8, tolerance: float | None = 0.001,
                       window: int = 50, decay: float = 0.5, plateaus: int = 5, check_samples: int = 64,
                       condition=None, seed=0, initial_params: dict | None = None) -> PosteriorFit:
    """Fits a separate q*(z|x_b) of `family` to each example of x by maximising its ELBO.

    Args:
      model: any model on the tfvae contract (its decoder and prior are held fixed).
      x: batch [B, *data_shape]; condition: [B, C] for a conditional model.
      family: "diag", "full", "flow", or a family object (see `families`).
      init: "encoder" (start at the encoder's q(z|x)) or "prior" (start at N(0, I)).
      steps: step budget.
      learning_rate: Adam's initial step size on the unconstrained parameters.
      tolerance, window, decay, plateaus: every `window` steps, an example whose ELBO (on
        fixed draws) rose by less than `tolerance` nats has its learning rate multiplied by
        `decay`; at its `plateaus`-th such plateau it is frozen; the loop ends when all are
        (see `ascent`). tolerance=None: a constant rate for the whole budget.
      check_samples: fixed draws of z per example for those checks.
      samples: Monte Carlo draws of z per step and example.
      seed: int or stateless pair; step i draws from stateless_fold_in(seed, i).
      initial_params: start values for some of the family's parameters, overriding `init`
        for those (e.g. a flow's "loc" and "raw_tril" from a fitted full-covariance q*).
    """
    check_euclidean_latent(model, "optimize_posterior")
    settings = AscentSettings(steps, learning_rate, tolerance, window, decay, plateaus)
    family = get_family(family)
    check_init(init)
    for name, value in (("samples", samples), ("check_samples", check_samples)):
        check_count(name, value)
    x = check_batch(x, model.data_shape, "x", model.likelihood.support)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    seed = as_seed(seed)
    mean, stddev = initial_moments(model, x, condition, init, seed)
    params = family.initial_params(mean, stddev)
    unknown = set(initial_params or ()) - set(params)
    if unknown:
        raise ValueError(f"initial_params has keys {sorted(unknown)} that the {family.name} family does not "
                         f"have; its parameters are {sorted(params)}")
    params.update({key: tf.convert_to_tensor(value, tf.float32) for key, value in (initial_params or {}).items()})

    def make():
        def fit(x, condition, params, seed):
            def elbo(params, i):
                q = family.distribution(params)
                draws = tf.where(tf.equal(i, CHECK_STEP), check_samples, samples)
                step_seed = tf.random.experimental.stateless_fold_in(seed, i)
                return model.elbo_terms(x, draws, condition, seed=step_seed, posterior=q)["elbo"]
            return adam_ascent(elbo, params, settings)
        return fit

    family_key = (type(family).__name__, repr(sorted(vars(family).items())))
    fn = compiled(model, ("optimize_posterior", family_key, samples, check_samples, settings), make)
    run = run_ascent(fn, x, condition, params, seed, what=f"optimising the {family.name} posterior")
    return PosteriorFit(family=family.name, distribution=family.distribution(run.params), params=run.params,
                        trace=run.trace, steps=run.steps, converged=run.converged, seconds=run.seconds,
                        seconds_per_example=run.seconds / int(x.shape[0]))
