"""Latent traversals: what the decoder draws as one latent coordinate moves and the others stay.

For a base code z0 in R^L, a latent dimension d and values v_1..v_S, row d of a traversal is

    x_{d,j} = E[x | z = z0 with its d-th coordinate replaced by v_j],   j = 1..S,

the mean of p(x|z) (pixel probabilities for a Bernoulli likelihood, the loc for a Gaussian).

Base code z0 (`plan_traversal`):
  - with x: the posterior mean E_q[z|x] of the example x[example] (`moments(model.encode(x))`:
    exact for a Gaussian q, estimated from 256 seeded draws for a flow or a two-layer q);
  - without x: the prior's mean where TFP has it (N(0, I): z0 = 0; a mixture prior: the
    mixture's mean), else one draw z0 ~ p(z) with `seed` (e.g. the hierarchical prior
    p(z2) p(z1|z2) of `hvae2`/`ladder`, whose mean has no closed form).

Values, one rule for every model and every example: unless `values` is given,

    v_{d,j} = m_d + span * s_d * t_j,   t = linspace(-1, 1, S),   span = 2.5 by default,

with m_d, s_d the mean and standard deviation of the prior's d-th coordinate (exact where TFP
has them, else estimated from 256 draws). For p(z) = N(0, I) this is linspace(-2.5, 2.5, S)
in every row. The range is the part of z the decoder was trained to read, and it does not
depend on the example, so the traversals of different examples line up column by column.
`values` (1-D) replaces it in every row by the given absolute values of z_d.

Ranking (`rank_dims`), over a batch x of N examples with q(z|x_n) of per-coordinate mean
mu_{n,d} and standard deviation s_{n,d}, and prior moments (m_d, sigma_d):

    KL_d = (1/N) sum_n [ log(sigma_d / s_{n,d}) + (s_{n,d}^2 + (mu_{n,d} - m_d)^2) / (2 sigma_d^2) - 1/2 ]

which is 0.5 (mu^2 + s^2 - 1 - log s^2) for p = N(0, 1), and sums over d to the batch mean of
KL(q || p) when q and p are diagonal Gaussians (for other families it is the KL between their
per-coordinate Gaussian moment matches: a guide for ordering, not a bound). Activity is
Var_n(mu_{n,d}) and a unit is active when it exceeds 0.01 (Burda et al., 2016). Order: active
units first, each group by decreasing KL_d (ties by index). With a batch x the default `dims`
are the first `max_dims` of this order; without x, dimensions 0 .. max_dims - 1.

Two-layer models (`hvae2`, `ladder`: z = [z1, z2]) decode from z1 alone, so moving a z2
coordinate with z1 fixed leaves the images unchanged: their rows are flat by construction.

Pictures (`save_traversal_grid`, `save_traversal_gifs`) need image-shaped data: [H, W, C]
with C in {1, 3}, [H, W], or a flat [n] with n a perfect square (shown as sqrt(n) x sqrt(n),
e.g. 784 -> 28 x 28). Values are clipped to [0, 1]. Files are written atomically.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from tfvae.distributions import moments
from tfvae.images import tile
from tfvae.inputs import check_batch, check_condition, check_count
from tfvae.io import atomic_path
from tfvae.seeds import as_seed

DEFAULT_STEPS = 9
DEFAULT_SPAN = 2.5
DEFAULT_MAX_DIMS = 10
ACTIVITY_THRESHOLD = 0.01      # Var_x(E_q[z_d]) above which a unit counts as active (Burda et al., 2016)
MOMENT_SAMPLES = 256           # draws that estimate moments without a closed form

# Grid layout (inches at GRID_DPI): a label column, a header for the title and the values, and
# one square cell per image, at least CELL_INCHES wide and never smaller than the image itself.
GRID_DPI = 100
CELL_INCHES = 0.8
LABEL_INCHES = 1.3
HEADER_INCHES = 0.55
MARGIN_INCHES = 0.1

# GIF frames: images scaled up by an integer factor (nearest neighbour) until the shorter side
# has at least GIF_MIN_SIZE pixels, above a SLIDER_PIXELS-high strip whose marker shows where
# the frame's value lies in the range (it also keeps consecutive frames distinct: Pillow merges
# identical ones, which would hide the frame count of a dimension the decoder ignores).
GIF_MIN_SIZE = 128
SLIDER_PIXELS = 6


@dataclasses.dataclass(frozen=True)
class Ranking:
    """Latent dimensions ranked by how much information q(z|x) puts in them.

    order: int [L], dimension indices, active units first, then by decreasing `kl`.
    kl: float [L], KL_d averaged over the batch (nats).
    activity: float [L], Var_x(E_q[z_d | x]).
    """

    order: np.ndarray
    kl: np.ndarray
    activity: np.ndarray

    @property
    def active(self) -> np.ndarray:
        """bool [L]: activity > ACTIVITY_THRESHOLD."""
        return self.activity > ACTIVITY_THRESHOLD


@dataclasses.dataclass(frozen=True)
class TraversalPlan:
    """The codes of a traversal, before decoding.

    codes: float32 [D, S, L]; codes[i, j] is `base` with coordinate dims[i] set to values[i, j].
    dims: the D latent dimensions traversed (rows).
    values: float32 [D, S], the values of z_{dims[i]} along row i.
    base: float32 [L], the base code z0.
    base_source: how z0 was chosen, for titles ("posterior mean of example 0", "prior mean",
      "prior sample, seed 0").
    condition: float32 [C] for a conditional model (decoded with every code), else None.
    ranking: the `Ranking` of the batch x when one was given, else None.
    span: the half-width of the default range in prior standard deviations; None when the
      values were given.
    """

    codes: np.ndarray
    dims: tuple[int, ...]
    values: np.ndarray
    base: np.ndarray
    base_source: str
    condition: np.ndarray | None = None
    ranking: Ranking | None = None
    span: float | None = None


# --------------------------------------------------------------------- checks
def _check_x(model, x):
    """x as a float32 batch [B, *data_shape]; one example of shape data_shape gets a batch axis."""
    if np.shape(x) == tuple(model.data_shape):
        x = np.asarray(x)[None]
    return check_batch(x, model.data_shape, "x", model.likelihood.support)


def _check_dims(dims, latent_dim: int) -> tuple[int, ...]:
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = [dims]
    try:
        dims = list(dims)
    except TypeError:
        raise ValueError(f"dims must be a latent dimension or a list of them, got {dims!r}") from None
    if not dims:
        raise ValueError("dims is empty: pass at least one latent dimension")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise ValueError(f"dims must be integers, got {d!r}")
        if not 0 <= d < latent_dim:
            raise ValueError(f"latent dimension {d} is out of range: this model has latent_dim={latent_dim} "
                             f"(dimensions 0..{latent_dim - 1})")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims has repeated entries: {dims}")
    return tuple(int(d) for d in dims)


def _check_values(values, num_steps, span) -> np.ndarray | None:
    """The user's values as float64 [S], or None; checks num_steps and span either way."""
    if span is not None and values is not None:
        raise ValueError("pass either values (the values of z_d themselves) or span (a range in prior "
                         "standard deviations), not both")
    if span is not None and (isinstance(span, bool) or not isinstance(span, (int, float))
                             or not math.isfinite(span) or span <= 0):
        raise ValueError(f"span must be a positive number (prior standard deviations), got {span!r}")
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
                                  or num_steps < 2):
        raise ValueError(f"num_steps must be an integer >= 2 (a traversal needs two ends), got {num_steps!r}")
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"values must be a 1-D list of numbers, got {values!r}") from None
    if array.ndim != 1 or len(array) < 2:
        raise ValueError(f"values must be a 1-D list of at least 2 numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values must be finite")
    if num_steps is not None and num_steps != len(array):
        raise ValueError(f"num_steps={num_steps} but {len(array)} values were given; leave num_steps out")
    return array


def image_shape(data_shape) -> tuple[int, int, int]:
    """(H, W, C) under which data of `data_shape` is shown; ValueError when it is no image.

    [H, W, C] with C in {1, 3} as is; [H, W] as one channel; a flat [n] with n = s^2 as
    [s, s, 1] (e.g. 784 -> 28 x 28 x 1).
    """
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 3 and shape[-1] in (1, 3):
        return shape
    if len(shape) == 2:
        return (*shape, 1)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side == shape[0]:
            return side, side, 1
        raise ValueError(f"cannot show data of shape {shape} as images: a flat data shape must have a "
                         f"perfect-square size (e.g. 784 = 28 x 28); use traverse() for the raw arrays")
    raise ValueError(f"cannot show data of shape {shape} as images: expected (H, W), (H, W, 1), (H, W, 3) "
                     f"or a flat perfect square; use traverse() for the raw arrays")


# --------------------------------------------------------------------- ranking and codes
def _prior_moments(model, seed: int):
    """(mean, std) of the prior's coordinates, each float64 [L]."""
    mean, std = moments(model.prior(), seed=(seed, 0), samples=MOMENT_SAMPLES)
    return (np.asarray(mean, np.float64).reshape(model.latent_dim),
            np.asarray(std, np.float64).reshape(model.latent_dim))


def _posterior_moments(model, x, condition, seed: int):
    """(mean, std) of q(z|x), each float64 [B, L]."""
    mean, std = moments(model.encode(x, condition), seed=(seed, 0), samples=MOMENT_SAMPLES)
    return np.asarray(mean, np.float64), np.asarray(std, np.float64)


def _ranking(mu, s, prior_mean, prior_std) -> Ranking:
    """The `Ranking` of posterior moments mu, s [B, L] against prior moments [L]."""
    kl = (np.log(prior_std / s) + (s ** 2 + (mu - prior_mean) ** 2) / (2 * prior_std ** 2) - 0.5).mean(0)
    activity = mu.var(0)
    order = np.lexsort((np.arange(len(kl)), -kl, ~(activity > ACTIVITY_THRESHOLD)))
    return Ranking(order=order, kl=kl, activity=activity)


def rank_dims(model, x, condition=None, seed: int = 0) -> Ranking:
    """Ranks the latent dimensions by their KL averaged over the batch x [B, *data_shape]
    (formula in the module docstring): `Ranking(order [L], kl [L], activity [L])`, with the
    active units (Var_x(E_q[z_d]) > 0.01) first. condition: [B, C] for a conditional model."""
    x = _check_x(model, x)
    condition = check_condition(condition, model.condition_dim, x.shape[0])
    mu, s = _posterior_moments(model, x, condition, seed)
    return _ranking(mu, s, *_prior_moments(model, seed))


def _prior_base(model, seed: int) -> tuple[np.ndarray, str]:
    prior = model.prior()
    try:
        base = prior.mean()
        source = "prior mean"
    except NotImplementedError:
        base = prior.sample(seed=as_seed(seed))
        source = f"prior sample, seed {seed}"
    return np.asarray(base, np.float64).reshape(model.latent_dim), source


def plan_traversal(model, x=None, dims=None, values=None, num_steps: int | None = None,
                   span: float | None = None, condition=None, seed: int = 0, example: int = 0,
                   max_dims: int = DEFAULT_MAX_DIMS) -> TraversalPlan:
    """The codes of a traversal (see the module docstring for the rules).

    Args:
      model: a tfvae model (BaseVAE contract).
      x: None (start from the prior), one example [*data_shape], or a batch [B, *data_shape]:
        the base code is the posterior mean of x[example], the default dims rank the batch.
      dims: latent dimensions to traverse, in row order; default: the `max_dims` highest
        ranked by `rank_dims(x)`, or 0..max_dims-1 without x.
      values: 1-D values of z_d used in every row; default: prior mean +- span prior stddevs.
      num_steps: number of values S >= 2 (default 9; len(values) when values are given).
      span: half-width of the default range in prior standard deviations (default 2.5).
      condition: conditional models only: [B, C] with x, else [C] (or [1, C]).
      seed: seeds the prior draw (when the prior has no mean) and moment estimates.
      example: which example of x gives the base code.
      max_dims: how many dimensions `dims` defaults to.
    """
    latent_dim = model.latent_dim
    user_values = _check_values(values, num_steps, span)
    check_count("max_dims", max_dims)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    dims = None if dims is None else _check_dims(dims, latent_dim)
    prior_mean, prior_std = _prior_moments(model, seed)

    ranking = None
    if x is not None:
        x = _check_x(model, x)
        batch = x.shape[0]
        if isinstance(example, bool) or not isinstance(example, (int, np.integer)) or not 0 <= example < batch:
            raise ValueError(f"example must be an index into x's {batch} examples (0..{batch - 1}), got {example!r}")
        condition = check_condition(condition, model.condition_dim, batch)
        mu, s = _posterior_moments(model, x, condition, seed)
        ranking = _ranking(mu, s, prior_mean, prior_std)
        base, source = mu[example], f"posterior mean of example {example}"
        row_condition = None if condition is None else np.asarray(condition)[example]
    else:
        if model.condition_dim and condition is not None:
            condition = np.reshape(np.asarray(condition, np.float32), (1, -1))
        row_condition = check_condition(condition, model.condition_dim, 1)
        row_condition = None if row_condition is None else row_condition.numpy()[0]
        base, source = _prior_base(model, seed)

    if dims is None:
        dims = tuple(int(d) for d in (ranking.order if ranking is not None else range(latent_dim))[:max_dims])
    if user_values is not None:
        grid = np.broadcast_to(user_values, (len(dims), len(user_values)))
    else:
        t = np.linspace(-1.0, 1.0, num_steps or DEFAULT_STEPS)
        index = list(dims)
        grid = prior_mean[index, None] + (span or DEFAULT_SPAN) * prior_std[index, None] * t
    codes = np.repeat(np.repeat(base[None, None, :], len(dims), 0), grid.shape[1], 1)
    for row, d in enumerate(dims):
        codes[row, :, d] = grid[row]
    return TraversalPlan(codes=codes.astype(np.float32), dims=dims, values=grid.astype(np.float32),
                         base=base.astype(np.float32), base_source=source,
                         condition=None if row_condition is None else np.asarray(row_condition, np.float32),
                         ranking=ranking, span=None if user_values is not None else float(span or DEFAULT_SPAN))


def decode_plan(model, plan: TraversalPlan) -> np.ndarray:
    """The decoder's means at the plan's codes: float32 [D, S, *data_shape]."""
    rows, steps, latent_dim = plan.codes.shape
    z = tf.constant(plan.codes.reshape(rows * steps, latent_dim))
    condition = None if plan.condition is None else np.repeat(plan.condition[None], rows * steps, 0)
    means = model.decode(z, condition).mean()
    return np.asarray(means, np.float32).reshape(rows, steps, *model.data_shape)


def traverse(model, x=None, dims=None, values=None, num_steps: int | None = None, span: float | None = None,
             condition=None, seed: int = 0, example: int = 0, max_dims: int = DEFAULT_MAX_DIMS) -> np.ndarray:
    """Decoded means along each latent dimension: float32 [len(dims), num_steps, *data_shape].

    Row i, column j is the mean of p(x|z) at the base code with z_{dims[i]} = values[i, j];
    arguments as `plan_traversal` (which returns the codes, dims and values themselves).
    """
    return decode_plan(model, plan_traversal(model, x, dims, values, num_steps, span, condition, seed,
                                             example, max_dims))


# --------------------------------------------------------------------- pictures
def _to_images(decoded: np.ndarray, data_shape) -> np.ndarray:
    """[D, S, *data_shape] -> [D, S, H, W, C] in [0, 1]."""
    h, w, c = image_shape(data_shape)
    rows, steps = decoded.shape[:2]
    return np.clip(decoded.reshape(rows, steps, h, w, c), 0.0, 1.0)


def _row_labels(plan: TraversalPlan, shared_values: bool) -> list[str]:
    labels = []
    for row, d in enumerate(plan.dims):
        label = f"z{d}" if plan.ranking is None else f"z{d} KL={plan.ranking.kl[d]:.1f}"
        if not shared_values:
            label += f"\n[{plan.values[row, 0]:.2g}, {plan.values[row, -1]:.2g}]"
        labels.append(label)
    return labels


def grid_figure_inches(rows: int, steps: int, image_hw) -> tuple[float, float]:
    """(width, height) in inches of a traversal grid; times GRID_DPI = the PNG's pixel size."""
    h, w = image_hw
    cell = max(CELL_INCHES, (max(h, w) + 1) / GRID_DPI)
    return LABEL_INCHES + steps * cell + MARGIN_INCHES, HEADER_INCHES + rows * cell + MARGIN_INCHES


def _write_grid(plan: TraversalPlan, images: np.ndarray, path: str, title: str | None) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, steps, h, w, c = images.shape
    mosaic = tile(images.reshape(rows * steps, h, w, c), steps)
    width, height = grid_figure_inches(rows, steps, (h, w))
    fig = plt.figure(figsize=(width, height), dpi=GRID_DPI)
    ax = fig.add_axes((LABEL_INCHES / width, MARGIN_INCHES / height, (width - LABEL_INCHES - MARGIN_INCHES) / width,
                       (height - HEADER_INCHES - MARGIN_INCHES) / height))
    ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              aspect="auto", extent=(0, steps, rows, 0))
    shared = bool(np.all(plan.values == plan.values[:1]))
    ax.xaxis.tick_top()
    ax.set_xticks(np.arange(steps) + 0.5)
    if shared:
        ax.set_xticklabels([f"{v:.3g}" for v in plan.values[0]], fontsize=7)
    else:  # per-row ranges (a non-standard prior): columns in prior standard deviations
        ax.set_xticklabels([f"{t:+.3g}σ" for t in np.linspace(-1, 1, steps) * plan.span], fontsize=7)
    ax.set_yticks(np.arange(rows) + 0.5)
    ax.set_yticklabels(_row_labels(plan, shared), fontsize=7)
    ax.tick_params(length=0, pad=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.text(0.5, 1 - 0.12 / height, title if title is not None else f"latent traversals from the {plan.base_source}",
             ha="center", va="top", fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=GRID_DPI)
    plt.close(fig)
    return path


def _gif_frames(row: np.ndarray, min_size: int) -> list:
    """Pillow frames of one row [S, H, W, C] in [0, 1], played forward then back."""
    from PIL import Image

    steps, h, w, c = row.shape
    factor = max(1, -(-min_size // min(h, w)))
    pixels = np.round(row * 255).astype(np.uint8).repeat(factor, axis=1).repeat(factor, axis=2)
    width = w * factor
    marker = max(2, width // steps)
    frames = []
    for j in list(range(steps)) + list(range(steps - 2, 0, -1)):
        slider = np.full((SLIDER_PIXELS, width, c), 64, np.uint8)
        start = round(j * (width - marker) / (steps - 1))
        slider[1:-1, start:start + marker] = 255
        frame = np.concatenate([pixels[j], slider], axis=0)
        frames.append(Image.fromarray(frame[..., 0], "L") if c == 1 else Image.fromarray(frame, "RGB"))
    return frames


def _write_gifs(plan: TraversalPlan, images: np.ndarray, directory: str, duration_ms: int,
                min_size: int) -> list[str]:
    paths = []
    for row, d in enumerate(plan.dims):
        frames = _gif_frames(images[row], min_size)
        path = os.path.join(directory, f"z{d}.gif")
        with atomic_path(path, suffix=".gif") as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms,
                           loop=0)
        paths.append(path)
    return paths


def _images_for(model, x, dims, values, num_steps, span, condition, seed, example, max_dims):
    image_shape(model.data_shape)          # fail before any work when the data are no images
    plan = plan_traversal(model, x, dims, values, num_steps, span, condition, seed, example, max_dims)
    return plan, _to_images(decode_plan(model, plan), model.data_shape)


def save_traversal_grid(model, path: str, x=None, dims=None, values=None, num_steps: int | None = None,
                        span: float | None = None, condition=None, seed: int = 0, example: int = 0,
                        max_dims: int = DEFAULT_MAX_DIMS, title: str | None = None) -> str:
    """Writes one PNG: a row per latent dimension (labelled "z3 KL=1.2" when x gives a
    ranking, else "z3"), a column per value (labelled with it; in prior standard deviations
    when the rows' ranges differ, each row then giving its range). Arguments as
    `plan_traversal`; the size in inches is `grid_figure_inches`. Returns `path`."""
    plan, images = _images_for(model, x, dims, values, num_steps, span, condition, seed, example, max_dims)
    return _write_grid(plan, images, path, title)


def save_traversal_gifs(model, directory: str, x=None, dims=None, values=None, num_steps: int | None = None,
                        span: float | None = None, condition=None, seed: int = 0, example: int = 0,
                        max_dims: int = DEFAULT_MAX_DIMS, duration_ms: int = 120,
                        min_size: int = GIF_MIN_SIZE) -> list[str]:
    """Writes one looping GIF per latent dimension, `directory`/z{d}.gif, and returns the paths.

    Frames play the S values forward then back (2S - 2 frames: the ends once each), each
    `duration_ms` long: the image scaled up by an integer factor (nearest neighbour) so that
    its shorter side is >= `min_size` pixels, above a SLIDER_PIXELS-high strip whose white
    marker shows the value's place in the range. Grayscale ("L") for one channel, RGB for
    three. Arguments as `plan_traversal`.
    """
    check_count("duration_ms", duration_ms)
    check_count("min_size", min_size)
    plan, images = _images_for(model, x, dims, values, num_steps, span, condition, seed, example, max_dims)
    return _write_gifs(plan, images, directory, duration_ms, min_size)


def save_traversals(model, x, out_dir: str, title: str, condition=None, dims=None, num_steps: int | None = None,
                    span: float | None = None, max_dims: int = DEFAULT_MAX_DIMS, example: int = 0, seed: int = 0,
                    gifs: bool = True, duration_ms: int = 120) -> dict:
    """The traversals `tfvae traverse` writes for a model and examples x: ranks the latent
    dimensions on x and traverses around the posterior mean of x[example]; writes
    `out_dir`/traversals.png (titled `title`) and, when `gifs`, z{d}.gif per dimension (frames
    at least GIF_MIN_SIZE pixels). Returns {"grid": path, "gifs": [paths], "dims": [...],
    "kl": {d: KL_d}}."""
    plan, images = _images_for(model, x, dims, None, num_steps, span, condition, seed, example, max_dims)
    grid = _write_grid(plan, images, os.path.join(out_dir, "traversals.png"),
                       f"{title}: traversals from the {plan.base_source}")
    gif_paths = _write_gifs(plan, images, out_dir, duration_ms, GIF_MIN_SIZE) if gifs else []
    return {"grid": grid, "gifs": gif_paths, "dims": list(plan.dims),
            "kl": {int(d): float(plan.ranking.kl[d]) for d in plan.dims}}
