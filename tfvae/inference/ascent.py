"""Batched Adam ascent of per-example objectives, as one compiled graph.

Every optimiser of the inference toolkit (per-example posteriors, MAP and maximum-
likelihood latents) maximises a vector of independent per-example objectives f_b(theta_b),
b = 1..B, where example b's objective depends only on its own parameters theta_b. Ascending
sum_b f_b then gives each theta_b the gradient of its own f_b, and Adam's update is
elementwise, so the batch runs B separate Adam optimisations at the cost of one: the
result for an example does not depend on which other examples share its batch.

Stopping, per example: every `window` steps the objective of each example is evaluated at
its current parameters with the same random draws each time (a fixed seed: common random
numbers). Differences between these checks are nearly free of Monte Carlo noise, since the
noise cancels, so they measure progress even for a stochastic objective such as a sampled
ELBO. When an example's check rose by less than `tolerance` nats since its last check (a
plateau), its learning rate is multiplied by `decay`: a constant step size leaves
parameters jittering around the optimum of a stochastic objective, a shrinking one lets
them settle. At its `plateaus`-th plateau an example has converged and is frozen; the loop
ends when every example has converged, or after `steps` steps.
"""
from __future__ import annotations

import dataclasses
import time
import weakref

import numpy as np
import tensorflow as tf

from tfvae.inputs import check_count

BETA_1, BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-8


@dataclasses.dataclass(frozen=True)
class AscentSettings:
    """steps: budget; learning_rate: Adam's initial step size; tolerance: a rise of an
    example's check smaller than this (nats) is a plateau (None: no checks, run the whole
    budget at a constant rate); window: steps between checks; decay: learning-rate factor at
    each plateau; plateaus: how many plateaus make an example converged."""
    steps: int = 2000
    learning_rate: float = 0.05
    tolerance: float | None = 0.001
    window: int = 50
    decay: float = 0.5
    plateaus: int = 5

    def __post_init__(self):
        if not (isinstance(self.decay, (int, float)) and 0 < self.decay <= 1):
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")
        for name in ("steps", "window", "plateaus"):
            check_count(name, getattr(self, name))
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.tolerance is not None and not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise ValueError(f"tolerance must be a non-negative number or None, got {self.tolerance!r}")


CHECK_STEP = -1   # the `step` passed to values_fn for convergence checks: always the same draws


def _per_example(rate, like):
    """Broadcasts a per-example [B] vector against a parameter tensor [B, ...]."""
    return tf.reshape(rate, tf.concat([tf.shape(rate), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def adam_ascent(values_fn, params: dict, settings: AscentSettings):
    """Graph code: maximises each example's values_fn(params, step)[b] over its slice of the
    tensors in `params` (all [B, ...]).

    values_fn(params, step) returns the per-example objectives, shape [B]; a stochastic one
    draws its randomness from `step`, and `CHECK_STEP` must always give the same draws.
    Returns (params, trace [steps_run, B] of the objectives before each update, steps_run,
    converged [B] bool, finite); the loop stops at the first non-finite objective.
    """
    checking = settings.tolerance is not None
    tolerance = settings.tolerance if checking else 0.0
    window = settings.window

    def body(i, params, m, v, trace, learning_rate, previous, plateaus, finite):
        with tf.GradientTape(watch_accessed_variables=False) as tape:   # the model's weights are fixed
            tape.watch(params)
            values = values_fn(params, i)
            total = tf.reduce_sum(values)
        gradients = tape.gradient(total, params)
        t = tf.cast(i + 1, tf.float32)
        # Bias-corrected Adam, with the rate ramped up over the first window: Adam's first
        # steps have size ~learning_rate whatever the gradient, which would throw
        # parameters that start at a good point (the encoder's q) far off it.
        warmup = tf.minimum(1.0, t / window)
        step_size = warmup * learning_rate * tf.sqrt(1.0 - BETA_2**t) / (1.0 - BETA_1**t)
        m = {n: BETA_1 * m[n] + (1 - BETA_1) * gradients[n] for n in params}
        v = {n: BETA_2 * v[n] + (1 - BETA_2) * tf.square(gradients[n]) for n in params}
        params = {n: params[n] + _per_example(step_size, params[n]) * m[n] / (tf.sqrt(v[n]) + ADAM_EPSILON)
                  for n in params}
        finite = tf.reduce_all(tf.math.is_finite(values))
        trace = trace.write(i, values)
        if checking:
            def check():
                current = values_fn(params, CHECK_STEP)
                plateau = (current - previous < tolerance) & (plateaus < settings.plateaus)
                new_plateaus = plateaus + tf.cast(plateau, tf.int32)
                rate = tf.where(plateau, learning_rate * settings.decay, learning_rate)
                rate = tf.where(new_plateaus >= settings.plateaus, 0.0, rate)     # converged: frozen
                return current, new_plateaus, rate
            previous, plateaus, learning_rate = tf.cond(
                tf.equal((i + 1) % window, 0), check, lambda: (previous, plateaus, learning_rate))
        return i + 1, params, m, v, trace, learning_rate, previous, plateaus, finite

    def keep_going(i, params, m, v, trace, learning_rate, previous, plateaus, finite):
        return (i < settings.steps) & tf.reduce_any(plateaus < settings.plateaus) & finite

    batch = tf.shape(next(iter(params.values())))[0]
    zeros = {n: tf.zeros_like(p) for n, p in params.items()}
    state = (tf.constant(0), dict(params), zeros, dict(zeros),
             tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=None),
             tf.fill([batch], tf.constant(settings.learning_rate, tf.float32)),
             values_fn(params, CHECK_STEP) if checking else tf.zeros([batch]),
             tf.zeros([batch], tf.int32), tf.constant(True))
    i, params, _, _, trace, _, _, plateaus, finite = tf.while_loop(keep_going, body, state)
    return params, trace.stack(), i, plateaus >= settings.plateaus, finite


_COMPILED = weakref.WeakKeyDictionary()


def compiled(model, key, make_fn):
    """A `tf.function` of make_fn(), cached per model and key (the key names the procedure
    and every Python setting baked into the graph)."""
    per_model = _COMPILED.setdefault(model, {})
    if key not in per_model:
        per_model[key] = tf.function(make_fn(), autograph=False)   # explicit while_loops: no conversion
    return per_model[key]


@dataclasses.dataclass
class AscentRun:
    """params: the final parameters; trace: [steps, B] objectives per step; converged: [B]
    bool per example; seconds: wall time of the compiled loop (with tracing the first time)."""
    params: dict
    trace: np.ndarray
    steps: int
    converged: np.ndarray
    seconds: float


def run_ascent(fn, *args, what: str) -> AscentRun:
    """Runs a compiled ascent `fn(*args)` and turns a non-finite objective into a ValueError."""
    start = time.perf_counter()
    params, trace, steps, converged, finite = fn(*args)
    trace = trace.numpy()
    seconds = time.perf_counter() - start
    if not bool(finite):
        raise ValueError(f"{what} diverged: the objective became NaN or infinite at step {int(steps)}; "
                         f"lower the learning rate")
    return AscentRun(params=params, trace=trace, steps=int(steps), converged=converged.numpy(), seconds=seconds)
