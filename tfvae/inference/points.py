"""Point estimates of the latent: what "forget q and optimise z directly" gives.

    maximum likelihood (ML)   z_ML  = argmax_z log p(x|z)
    maximum a posteriori      z_MAP = argmax_z log p(x|z) + log p(z)

Each is a single point, so neither gives a lower bound on log p(x): the ELBO of a point
mass is -inf (its entropy is -inf). What a point does give:

  * log p(x|z_ML) is an UPPER bound: p(x) = E_p(z)[p(x|z)] <= max_z p(x|z). Maximising
    the reconstruction term alone rewards latents the prior would never produce (large
    norm, low log p(z)), which is why training maximises the ELBO, not log p(x|z).
  * At z_MAP, Laplace's method turns the point and the curvature of log p(x, z) there into
    an estimate (not a bound) of log p(x):

        log p(x) ~= log p(x, z_MAP) + (L/2) log(2 pi) - (1/2) log det H,
        H = -d^2/dz^2 log p(x, z) at z_MAP (NaN where H is not positive definite).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfvae.inference.ascent import AscentSettings, adam_ascent, compiled, run_ascent
from tfvae.inference.optimize import check_euclidean_latent, check_init, initial_moments
from tfvae.inputs import as_float_tensor, check_batch, check_condition

KINDS = ("map", "ml")
HESSIAN_CHUNK = 100     # examples per batch_jacobian call (memory: chunk * L decoder passes)


@dataclasses.dataclass
class PointEstimate:
    """kind: "map" or "ml"; z: [B, L]; per-example [B] arrays log_px_z, log_pz, log_joint
    (= log_px_z + log_pz), norm (|z|); trace: [steps, B] of the objective; converged: [B]."""
    kind: str
    z: np.ndarray
    log_px_z: np.ndarray
    log_pz: np.ndarray
    log_joint: np.ndarray
    norm: np.ndarray
    trace: np.ndarray
    steps: int
    converged: np.ndarray
    seconds: float
    seconds_per_example: float


def _log_joint_terms(model, x, z, condition):
    return model.decode(z, condition).log_prob(x), model.prior().log_prob(z)


def point_estimate(model, x, kind: str = "map", init: str = "encoder", steps: int = 2000,
                   learning_rate: float = 0.05, tolerance: float | None = 1e-4, window: int = 50,
                   decay: float = 0.5, plateaus: int = 5, condition=None, seed=0) -> PointEstimate:
    """z_ML (kind="ml") or z_MAP (kind="map") per example of x, by Adam from the encoder's
    mean (init="encoder") or from z = 0 (init="prior"). Stopping as `optimize_posterior`
    (the objective is deterministic here, so the checks are exact)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_euclidean_latent(model, "point_estimate")
    check_init(init)
    settings = AscentSettings(steps, learning_rate, tolerance, window, decay, plateaus)
    x = check_batch(x, model.data_shape, "x", model.likelihood.support)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    z0 = initial_moments(model, x, condition, init, seed)[0]

    def make():
        def fit(x, condition, params):
            def objective(params, step):
                log_px_z, log_pz = _log_joint_terms(model, x, params["z"], condition)
                return log_px_z + log_pz if kind == "map" else log_px_z
            return adam_ascent(objective, params, settings)
        return fit

    run = run_ascent(compiled(model, ("point_estimate", kind, settings), make), x, condition, {"z": z0},
                     what=f"the {kind.upper()} latent search")
    z = run.params["z"]
    log_px_z, log_pz = (t.numpy() for t in _log_joint_terms(model, x, z, condition))
    return PointEstimate(kind=kind, z=z.numpy(), log_px_z=log_px_z, log_pz=log_pz, log_joint=log_px_z + log_pz,
                         norm=np.linalg.norm(z.numpy(), axis=-1), trace=run.trace, steps=run.steps,
                         converged=run.converged, seconds=run.seconds,
                         seconds_per_example=run.seconds / int(x.shape[0]))


def laplace_log_likelihood(model, x, z, condition=None) -> np.ndarray:
    """Laplace's estimate of log p(x) around z (normally z_MAP), per example [B]; NaN where
    the negative Hessian of log p(x, z) is not positive definite (z is no local maximum)."""
    x = check_batch(x, model.data_shape, "x", model.likelihood.support)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    z = as_float_tensor(z, "z")
    if tuple(z.shape) != (x.shape[0], model.latent_dim):
        raise ValueError(f"z must have shape ({x.shape[0]}, {model.latent_dim}), got {tuple(z.shape)}")

    def make():
        def laplace(x, z, condition):
            with tf.GradientTape() as outer:
                outer.watch(z)
                with tf.GradientTape() as inner:
                    inner.watch(z)
                    log_joint = tf.add_n(_log_joint_terms(model, x, z, condition))
                    total = tf.reduce_sum(log_joint)       # examples are independent: rows are their gradients
                gradient = inner.gradient(total, z)
            hessian = -outer.batch_jacobian(gradient, z)                    # [B, L, L]
            hessian = 0.5 * (hessian + tf.linalg.matrix_transpose(hessian))
            eigenvalues = tf.linalg.eigvalsh(hessian)
            log_det = tf.reduce_sum(tf.math.log(tf.maximum(eigenvalues, 1e-30)), -1)
            estimate = log_joint + 0.5 * model.latent_dim * math.log(2 * math.pi) - 0.5 * log_det
            return tf.where(tf.reduce_min(eigenvalues, -1) > 0, estimate, math.nan)
        return laplace

    fn = compiled(model, ("laplace",), make)
    out = []
    for start in range(0, int(x.shape[0]), HESSIAN_CHUNK):
        part = slice(start, start + HESSIAN_CHUNK)
        out.append(fn(x[part], z[part], None if condition is None else condition[part]).numpy())
    return np.concatenate(out)
