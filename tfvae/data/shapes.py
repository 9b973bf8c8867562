"""Procedural dSprites-style images of simple shapes on the dSprites factor grid.

Every image is described by five integer factor classes ``[shape, scale,
orientation, pos_x, pos_y]`` on the grid of dSprites (Matthey et al. 2017),
and rendered from the factor values those classes stand for:

==============  =====  ====================================================
factor          size   value of class ``c``
==============  =====  ====================================================
``shape``       3      ``c``: 0 square, 1 ellipse, 2 triangle (the labels)
``scale``       6      ``linspace(0.5, 1, 6)[c]``
``orientation`` 40     ``linspace(0, 2*pi, 40)[c]`` radians (as in dSprites,
                       both ends are on the grid: classes 0 and 39 draw the
                       same image)
``pos_x``       32     ``linspace(0, 1, 32)[c]``, left to right
``pos_y``       32     ``linspace(0, 1, 32)[c]``, top to bottom
==============  =====  ====================================================

Geometry, for an image of ``S`` pixels a side: the shape's circumscribed
radius is ``r = scale * S / 4`` pixels and its centre is
``1 + S/4 + pos * (S - 2 - S/2)`` pixels from the left (top) edge, so even the
largest shape keeps a blank one-pixel border. With ``(dx, dy)`` a pixel centre
(pixel ``(i, j)`` has centre ``(j + 0.5, i + 0.5)``) minus the shape's centre,
the shape's own frame is

    u = ( cos(t) dx + sin(t) dy) / r,     v = (-sin(t) dx + cos(t) dy) / r,

with ``t`` the orientation (y points down, so a positive ``t`` turns the
shape clockwise on screen). A pixel is on (1.0) when its centre is inside:

- square: ``max(|u|, |v|) <= 1/sqrt(2)`` (side ``sqrt(2) r``; period pi/2);
- ellipse: ``u^2 + (v / 0.5)^2 <= 1`` (major axis ``2r`` along u; period pi);
- triangle: equilateral with vertices on the unit circle at angles pi/2,
  pi/2 + 2pi/3, pi/2 + 4pi/3 of the (u, v) plane, i.e. inside when
  ``-(u cos a + v sin a) <= 1/2`` for each vertex angle ``a`` (period 2pi/3,
  which is 13 orientation classes).
"""

from __future__ import annotations

import numbers

import numpy as np

SHAPE_NAMES = ("square", "ellipse", "triangle")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)


def _frozen(values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)
    return values


# GRID[k][c]: the value of class c of factor k.
GRID = (
    _frozen(np.arange(3, dtype=np.float64)),
    _frozen(np.linspace(0.5, 1.0, 6)),
    _frozen(np.linspace(0.0, 2 * np.pi, 40)),
    _frozen(np.linspace(0.0, 1.0, 32)),
    _frozen(np.linspace(0.0, 1.0, 32)),
)
MAX_RADIUS = 0.25  # largest circumscribed radius, as a fraction of image_size
ELLIPSE_MINOR = 0.5  # minor/major axis ratio of the ellipse
MIN_IMAGE_SIZE = 12
_CHUNK_PIXELS = 1 << 22  # pixels rendered at a time (about 32 MB per float64 array)


def generate(n: int, image_size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random images on the grid: ``(images, classes)``.

    ``images``: float32 ``[n, image_size, image_size, 1]`` in {0, 1};
    ``classes``: int64 ``[n, 5]``, each factor drawn independently and
    uniformly over its classes (the draws of
    ``tfvae.metrics.grid_sample_fn(FACTOR_SIZES)(None, None, n, rng)`` with
    ``rng = numpy.random.default_rng(seed)``). The same arguments give the
    same output.
    """
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    check_image_size(image_size)
    rng = np.random.default_rng(seed)
    classes = np.stack([rng.integers(0, s, size=n) for s in FACTOR_SIZES], axis=1)
    return render(classes, image_size), classes.astype(np.int64)


def factor_values(classes) -> np.ndarray:
    """The factor values ``float64 [n, 5]`` of integer classes ``[n, 5]`` (see the module docstring)."""
    classes = check_classes(classes)
    return np.stack([GRID[k][classes[:, k]] for k in range(len(FACTOR_SIZES))], axis=1)


def render(classes, image_size: int = 28) -> np.ndarray:
    """Images ``float32 [n, image_size, image_size, 1]`` of factor classes ``int [n, 5]``."""
    return render_values(factor_values(classes), image_size)


def render_values(values, image_size: int = 28) -> np.ndarray:
    """Images ``float32 [n, S, S, 1]`` of factor values ``[n, 5]``, on the grid or off it.

    Columns as in the module docstring: shape id (0, 1 or 2), scale (> 0),
    orientation (radians), pos_x, pos_y (0..1 keeps the shape inside the
    frame). Rendered in chunks to bound memory.
    """
    check_image_size(image_size)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"values must have shape [n, {len(FACTOR_NAMES)}] "
                         f"({', '.join(FACTOR_NAMES)}), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    if not np.all(np.isin(values[:, 0], (0, 1, 2))):
        raise ValueError("the shape column of values must hold 0 (square), 1 (ellipse) "
                         "or 2 (triangle)")
    if not np.all(values[:, 1] > 0):
        raise ValueError("the scale column of values must be positive")
    images = np.zeros((len(values), image_size, image_size, 1), dtype=np.float32)
    chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for lo in range(0, len(values), chunk):
        images[lo:lo + chunk, ..., 0] = _render(values[lo:lo + chunk], image_size)
    return images


def check_classes(classes) -> np.ndarray:
    """``classes`` as int64 ``[n, 5]``; ValueError unless every entry is a class of its factor."""
    arr = np.asarray(classes)
    if arr.ndim != 2 or arr.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"classes must have shape [n, {len(FACTOR_SIZES)}] "
                         f"({', '.join(FACTOR_NAMES)}), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"classes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    for k, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        column = arr[:, k]
        if column.size and (column.min() < 0 or column.max() >= size):
            raise ValueError(f"classes of factor {name!r} must be in 0..{size - 1}, found "
                             f"values from {column.min()} to {column.max()}")
    return arr


def check_image_size(image_size) -> None:
    """ValueError unless ``image_size`` is an integer >= MIN_IMAGE_SIZE."""
    # From 12 pixels on, the smallest inscribed circle (radius image_size / 16)
    # is wider than half a pixel diagonal, so every shape covers a pixel centre.
    if (not isinstance(image_size, numbers.Integral) or isinstance(image_size, bool)
            or image_size < MIN_IMAGE_SIZE):
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, "
                         f"got {image_size!r}")


def _inside_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 1 / np.sqrt(2)


def _inside_ellipse(u, v):
    return u ** 2 + (v / ELLIPSE_MINOR) ** 2 <= 1


def _inside_triangle(u, v):
    inside = np.ones(u.shape, dtype=bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        inside &= -(u * np.cos(angle) + v * np.sin(angle)) <= 0.5
    return inside


_INSIDE = (_inside_square, _inside_ellipse, _inside_triangle)


def _render(values: np.ndarray, size: int) -> np.ndarray:
    """Boolean ``[n, size, size]``: every pixel centre tested against its image's shape."""
    out = np.zeros((len(values), size, size), dtype=bool)
    max_r = MAX_RADIUS * size
    span = size - 2 - 2 * max_r
    centres = np.arange(size, dtype=np.float64) + 0.5
    for kind, inside in enumerate(_INSIDE):
        rows = np.flatnonzero(values[:, 0] == kind)
        if not rows.size:
            continue
        scale, angle, pos_x, pos_y = (col[:, None] for col in values[rows, 1:].T)
        radius = scale * max_r
        dx = (centres - (1 + max_r + pos_x * span)) / radius  # [n, size], along a row
        dy = (centres - (1 + max_r + pos_y * span)) / radius  # [n, size], down a column
        cos, sin = np.cos(angle), np.sin(angle)
        # u and v are sums of a term in x and a term in y: form them per axis first.
        u = (sin * dy)[:, :, None] + (cos * dx)[:, None, :]
        v = (cos * dy)[:, :, None] - (sin * dx)[:, None, :]
        out[rows] = inside(u, v)
    return out
