"""PNG grids of images (originals, reconstructions, samples), written atomically.

Drawn with Pillow straight from the pixel arrays: a training run writes one grid per epoch,
and matplotlib's figure machinery took 0.28 s a grid, a tenth of a `vae_bmnist` epoch
(docs/performance.md); this takes a few milliseconds.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfvae.io import atomic_path

TEXT_SIZE = 13          # pixels
MARGIN = 8              # pixels around the grid and between panels
CELL = 56               # images are enlarged (nearest neighbour) by an integer factor to about this size


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """[N, H, W, C] -> one [rows*H, columns*W, C] mosaic with 1-pixel gaps."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, c), dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    return canvas


def _font():
    try:
        return ImageFont.load_default(size=TEXT_SIZE)     # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()                   # Pillow's small bitmap font


def _mosaic_image(images: np.ndarray, columns: int) -> Image.Image:
    """One panel's images, [N, H, W] or [N, H, W, C] in [0, 1] (values outside are clipped),
    as an RGB mosaic enlarged by an integer factor."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    scale = max(1, CELL // max(images.shape[1:3]))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    mosaic = tile(images, min(columns, len(images)))
    return Image.fromarray(np.round(mosaic * 255).astype(np.uint8), mode="RGB")


def save_image_grid(panels: dict[str, np.ndarray], path: str, columns: int = 16, title: str = ""):
    """Saves one PNG: the `title` on top, then per panel its name and a mosaic of its images
    ([N, H, W, C] or [N, H, W], values in [0, 1]), `columns` to a row, on white."""
    font = _font()
    mosaics = [(name, _mosaic_image(images, columns)) for name, images in panels.items()]
    line = TEXT_SIZE + 6
    width = 2 * MARGIN + max(m.width for _, m in mosaics)
    height = MARGIN + (line if title else 0) + sum(line + m.height + MARGIN for _, m in mosaics)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = MARGIN
    if title:
        draw.text((width // 2, top), title, fill="black", font=font, anchor="mt")
        top += line
    for name, mosaic in mosaics:
        draw.text((MARGIN, top), name, fill="black", font=font)
        top += line
        canvas.paste(mosaic, (MARGIN, top))
        top += mosaic.height + MARGIN
    with atomic_path(path, suffix=".png") as tmp:
        canvas.save(tmp, format="PNG")
