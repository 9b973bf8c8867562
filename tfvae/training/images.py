"""PNG grids of images (originals, reconstructions, samples), written atomically."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfvae.io import atomic_path  # noqa: E402


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """[N, H, W, C] -> one [rows*H, columns*W, C] mosaic with 1-pixel gaps."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, c), dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    return canvas


def save_image_grid(panels: dict[str, np.ndarray], path: str, columns: int = 16, title: str = ""):
    """Saves one PNG with a titled mosaic per panel; each panel is [N, H, W, C] in [0, 1]."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(columns * 0.6, 0.6 * sum(
        -(-len(v) // columns) for v in panels.values()) + 0.5 * len(panels) + 0.3), squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], panels.items()):
        images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
        if images.ndim == 3:
            images = images[..., None]
        mosaic = tile(images, min(columns, len(images)))
        ax.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(name, fontsize=9, loc="left")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
