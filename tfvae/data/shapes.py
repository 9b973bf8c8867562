"""Procedural dSprites-style images of simple shapes with known generative factors.

Factors of every image (all drawn independently and uniformly):

- ``shape``: 0 square, 1 ellipse, 2 triangle (int64; these are the labels).
- ``scale``: in [0.5, 1]; the shape's circumscribed radius is
  ``scale * 0.25 * image_size`` pixels.
- ``orientation``: rotation in radians, in [0, 2*pi). The square repeats every
  pi/2, the ellipse every pi, the triangle every 2*pi/3.
- ``pos_x``, ``pos_y``: centre position in [0, 1], left to right and top to
  bottom, mapped to pixels so that even the largest shape keeps a blank
  one-pixel border.

A pixel is on (1.0) when its centre lies inside the shape.
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ("square", "ellipse", "triangle")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SCALE_RANGE = (0.5, 1.0)
MAX_RADIUS = 0.25  # largest circumscribed radius, as a fraction of image_size
ELLIPSE_MINOR = 0.5  # minor/major axis ratio of the ellipse
_CHUNK = 2048  # images rendered at a time, to bound memory


def generate(n: int, image_size: int = 28, seed: int = 0
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render ``n`` binary images ``float32 [n, image_size, image_size, 1]``.

    Returns the images and a dict factor name -> array of length ``n`` (see the
    module docstring). The same ``(n, image_size, seed)`` gives the same output.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    # From 12 pixels on, the smallest inscribed circle (radius image_size / 16)
    # is wider than half a pixel diagonal, so it always covers a pixel centre.
    if not isinstance(image_size, (int, np.integer)) or image_size < 12:
        raise ValueError(f"image_size must be an integer >= 12, got {image_size!r}")
    rng = np.random.default_rng(seed)
    factors = {
        "shape": rng.integers(0, len(SHAPE_NAMES), size=n).astype(np.int64),
        "scale": rng.uniform(*SCALE_RANGE, size=n).astype(np.float32),
        "orientation": rng.uniform(0.0, 2 * np.pi, size=n).astype(np.float32),
        "pos_x": rng.uniform(0.0, 1.0, size=n).astype(np.float32),
        "pos_y": rng.uniform(0.0, 1.0, size=n).astype(np.float32),
    }
    images = np.empty((n, image_size, image_size, 1), dtype=np.float32)
    for lo in range(0, n, _CHUNK):
        part = {k: v[lo:lo + _CHUNK] for k, v in factors.items()}
        images[lo:lo + _CHUNK, ..., 0] = _render(part, image_size)
    return images, factors


def _render(f: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Inside-test every pixel centre against every shape, in the shape's own frame."""
    max_r = MAX_RADIUS * size
    radius = (f["scale"] * max_r)[:, None, None]
    # Centres range over [1 + max_r, size - 1 - max_r]: the outermost point of
    # the largest shape stays at least one pixel away from the image edge.
    span = size - 2 - 2 * max_r
    cx = (1 + max_r + f["pos_x"] * span)[:, None, None]
    cy = (1 + max_r + f["pos_y"] * span)[:, None, None]
    centres = np.arange(size, dtype=np.float32) + 0.5
    dx = centres[None, None, :] - cx
    dy = centres[None, :, None] - cy
    cos = np.cos(f["orientation"])[:, None, None]
    sin = np.sin(f["orientation"])[:, None, None]
    # Rotate by -orientation and scale so that the circumscribed radius is 1.
    u = (cos * dx + sin * dy) / radius
    v = (cos * dy - sin * dx) / radius

    square = np.maximum(np.abs(u), np.abs(v)) <= 1 / np.sqrt(2)
    ellipse = u ** 2 + (v / ELLIPSE_MINOR) ** 2 <= 1
    # Equilateral triangle with vertices on the unit circle: inside when the
    # point lies within distance 1/2 (the inradius) along each edge normal.
    triangle = np.ones_like(square)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        triangle &= -(u * np.cos(angle) + v * np.sin(angle)) <= 0.5
    kind = f["shape"][:, None, None]
    inside = np.where(kind == 0, square, np.where(kind == 1, ellipse, triangle))
    return inside.astype(np.float32)
