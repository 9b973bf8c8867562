"""Semi-amortized inference: the encoder's q(z|x), refined by K gradient steps.

Kim et al. (2018) start from the encoder's parameters lambda_0 = enc(x) and take K steps of
gradient ascent on each example's ELBO,

    lambda_{t+1} = lambda_t + eta * clip(grad_lambda ELBO(x; lambda_t)),

where lambda are the unconstrained parameters of the model's posterior family (for the
diagonal Gaussian: mu and the raw scale) and clip bounds each example's gradient norm. The
steps are ordinary tensor code, so the result is differentiable: gradients of a loss at
lambda_K flow back through the K steps (second derivatives included) into the encoder and
the decoder. That is how the SA-VAE trains; at test time the same function refines any
model's encoder, shrinking its amortization gap.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.inputs import check_batch, check_condition, check_count

tfd = tfp.distributions


@dataclasses.dataclass
class Refinement:
    """distribution: the refined q(z|x) (batch [B]); params: its unconstrained parameters
    [B, P]; elbos: [K + 1, B] the single-batch ELBO estimates at lambda_0 .. lambda_K."""
    distribution: tfd.Distribution
    params: tf.Tensor
    elbos: tf.Tensor


def refine_posterior(model, x, steps: int = 10, learning_rate: float = 0.1, samples: int = 1,
                     max_grad_norm: float | None = 5.0, condition=None, seed=None, training: bool = False,
                     differentiable: bool = True, params=None) -> Refinement:
    """K = `steps` gradient-ascent steps on each example's ELBO from the encoder's output.

    Args:
      model: a model on the tfvae contract (uses `posterior_params` and `posterior_family`).
      x: batch [B, *data_shape]; condition: [B, C] for a conditional model.
      steps: K (0 returns the encoder's posterior).
      learning_rate: eta.
      samples: draws of z per step for the ELBO gradient.
      max_grad_norm: clip each example's gradient to this norm (None: no clipping).
      seed: int, stateless pair or None (the model's seed stream); step t draws from
        stateless_fold_in(seed, t).
      training: passed to the networks (dropout, batch norm).
      differentiable: keep the graph of the steps for backpropagation through them; False
        stops gradients at each step's gradient (first-order, cheaper: the encoder then
        gets gradients only through lambda_0's direct path).
      params: start from these unconstrained parameters instead of the encoder's.
    """
    check_count("steps", steps, minimum=0)
    check_count("samples", samples)
    x = check_batch(x, model.data_shape, "x", model.likelihood.support)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    family = model.posterior_family
    if params is None:
        params = model.posterior_params(x, condition, training=training)
    seed = model._seed(seed)
    elbos = []
    for t in range(steps + 1):
        with tf.GradientTape() as tape:
            tape.watch(params)
            elbo = model.elbo_terms(x, samples, condition, seed=tf.random.experimental.stateless_fold_in(seed, t),
                                    posterior=family.distribution(params), training=training)["elbo"]
            total = tf.reduce_sum(elbo)
        elbos.append(elbo)
        if t == steps:
            break
        gradient = tape.gradient(total, params)       # rows are per-example gradients
        if not differentiable:
            gradient = tf.stop_gradient(gradient)
        if max_grad_norm is not None:
            norm = tf.norm(gradient, axis=-1, keepdims=True)
            gradient = gradient * tf.minimum(1.0, max_grad_norm / tf.maximum(norm, 1e-12))
        params = params + learning_rate * gradient
    return Refinement(distribution=family.distribution(params), params=params, elbos=tf.stack(elbos))
