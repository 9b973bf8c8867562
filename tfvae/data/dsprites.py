"""Reader for the dSprites file: the full factorial grid of 64x64 sprites and their factors.

``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` holds ``imgs`` uint8 ``[N, 64, 64]`` in
{0, 1}, ``latents_classes`` int ``[N, 6]`` and ``latents_values`` float ``[N, 6]``. Column 0
(colour) is constant and dropped: the factors are shape, scale, orientation, pos_x, pos_y,
and row ``c @ strides`` shows the classes ``c`` (row-major order, checked when read). It is
read with ``allow_pickle=False``; its pickled ``metadata`` entry is never touched.
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import DataError

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_TEST = (10000, 5_000_003)  # size, seed of the test subset
DSPRITES_KEYS = ("imgs", "latents_classes", "latents_values")


@dataclass(frozen=True, eq=False)
class FileGrid:
    """A factor grid read from a file.

    ``imgs``: uint8 ``[N, H, W]`` in {0, 1}, row ``index(c)`` showing classes
    ``c``; ``classes``: int64 ``[N, K]``; ``sizes``: classes per factor;
    ``grid_values[k][c]``: the value of class ``c`` of factor ``k``.
    """
    imgs: np.ndarray
    classes: np.ndarray
    sizes: tuple[int, ...]
    grid_values: tuple[np.ndarray, ...]


def read_dsprites(path) -> FileGrid:
    """Read and check a dSprites ``.npz``; DataError naming the file if anything is off.

    Checks: the three arrays exist and agree in length; the colour column is
    constant; the remaining classes enumerate the full grid (sizes = largest
    class + 1) in row-major order; each class has one value; pixels are 0 or 1.
    """
    where = str(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: not a readable .npz file (truncated or corrupt?): {e}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: expected an .npz archive, found a single array")
    with loaded as npz:
        missing = [k for k in DSPRITES_KEYS if k not in npz.files]
        if missing:
            raise DataError(f"{where}: expected the arrays {', '.join(DSPRITES_KEYS)}; "
                            f"missing {', '.join(missing)} (found {', '.join(npz.files)})")
        try:
            imgs, classes, values = (npz[k] for k in DSPRITES_KEYS)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{where}: cannot read the arrays (truncated or corrupt?): {e}") from e
    n = len(imgs)
    if imgs.ndim != 3 or imgs.dtype != np.uint8:
        raise DataError(f"{where}: expected imgs uint8 [N, H, W], found {imgs.dtype} "
                        f"{imgs.shape}")
    for key, arr in (("latents_classes", classes), ("latents_values", values)):
        if arr.ndim != 2 or arr.shape != (n, 6):
            raise DataError(f"{where}: expected {key} of shape [{n}, 6] (colour, shape, scale, "
                            f"orientation, x, y), found {arr.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"{where}: expected integer latents_classes, found {classes.dtype}")
    if n == 0:
        raise DataError(f"{where}: the file holds no images")
    if np.any(classes[:, 0] != classes[0, 0]):
        raise DataError(f"{where}: expected a single colour (column 0 of latents_classes)")
    classes = classes[:, 1:].astype(np.int64)
    values = values[:, 1:].astype(np.float64)
    if classes.min() < 0:
        raise DataError(f"{where}: latents_classes has negative entries")
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    if n != int(np.prod(sizes)) or np.any(classes @ grid_strides(sizes) != np.arange(n)):
        raise DataError(f"{where}: latents_classes does not list the full grid of sizes {sizes} "
                        "in row-major order")
    grid_values = []
    for k, size in enumerate(sizes):
        table = np.zeros(size)
        table[classes[:, k]] = values[:, k]
        if np.any(table[classes[:, k]] != values[:, k]):
            raise DataError(f"{where}: a class in column {k + 1} of latents_classes has "
                            "several latents_values")
        table.setflags(write=False)
        grid_values.append(table)
    if imgs.max() > 1:
        raise DataError(f"{where}: expected pixels in {{0, 1}}, found values up to {imgs.max()}")
    return FileGrid(imgs, classes, sizes, tuple(grid_values))


def dsprites_split_rows(num_rows: int, split: str) -> np.ndarray | None:
    """Rows of a dSprites split: None (all) for "train"; for "test" the first
    ``min(num_rows, 10000)`` of a permutation seeded by ``DSPRITES_TEST``."""
    if split == "train":
        return None
    size, seed = DSPRITES_TEST
    return np.random.default_rng(seed).permutation(num_rows)[:min(size, num_rows)]


def grid_strides(sizes) -> np.ndarray:
    """Row-major strides of a grid: ``strides[k] = prod(sizes[k+1:])``."""
    sizes = tuple(sizes)
    return np.array([int(np.prod(sizes[k + 1:])) for k in range(len(sizes))], dtype=np.int64)
