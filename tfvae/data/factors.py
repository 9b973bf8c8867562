"""Data sets with known generative factors, for disentanglement metrics.

A data set with factors (``info(name).factor_names`` non-empty) is a full
factorial grid: factor ``k`` takes the classes ``0..sizes[k]-1`` and every
combination is one image. A combination is an int row ``c`` of length ``K``;
its index in the row-major enumeration of the grid is

    index(c) = c @ strides,   strides[k] = prod(sizes[k+1:]),

which is also its row in the dSprites file, since that file lists the whole
grid in this order (checked when it is read).

- `factor_source` gives a `FactorSource`: ``sample`` draws factor classes
  uniformly over the grid, optionally with one factor fixed (the ``sample_fn``
  of `tfvae.metrics`), and ``images`` renders them (``shapes``, ``shapes64``)
  or looks them up in the file (``dsprites``). Use both to build a metric's
  ``representation_fn``: ``lambda c: encode(source.images(c))``.
- `load_factors` gives a fixed split as ``(images, classes)``.

The dSprites file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` has the
arrays ``imgs`` uint8 ``[N, 64, 64]`` in {0, 1}, ``latents_classes`` int
``[N, 6]`` and ``latents_values`` float ``[N, 6]``, whose column 0 (colour)
is constant and dropped here: the factors are shape, scale, orientation,
pos_x, pos_y. It is read with ``allow_pickle=False``; its pickled
``metadata`` entry is never touched.
"""

from __future__ import annotations

import numbers
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tfvae.metrics import grid_sample_fn

from . import shapes
from .errors import DataError
from .files import resolve_files
from .registry import (DSPRITES_TEST, GENERATED, REGISTRY, DatasetInfo, generated_split,
                       get_spec)
from .splits import parse_split

DSPRITES_KEYS = ("imgs", "latents_classes", "latents_values")
_FILE_GRIDS = ("dsprites",)  # data sets whose grid is read from a file, not rendered


# ------------------------------------------------------------------------------ the dSprites file

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
    if n != int(np.prod(sizes)) or np.any(classes @ _strides(sizes) != np.arange(n)):
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


def _strides(sizes) -> np.ndarray:
    """Row-major strides of a grid: ``strides[k] = prod(sizes[k+1:])``."""
    sizes = tuple(sizes)
    return np.array([int(np.prod(sizes[k + 1:])) for k in range(len(sizes))], dtype=np.int64)


# ------------------------------------------------------------------------------------ the source

class FactorSource:
    """Factor classes and their images for one data set's full grid.

    ``names``, ``sizes``: the factors and their number of classes;
    ``image_shape``: ``(H, W, 1)``; ``strides``: see the module docstring.
    """

    def __init__(self, name: str, names: tuple[str, ...], sizes: tuple[int, ...],
                 image_shape: tuple[int, ...], images: Callable[[np.ndarray], np.ndarray],
                 grid_values: tuple[np.ndarray, ...]):
        self.name = name
        self.names = tuple(names)
        self.sizes = tuple(int(s) for s in sizes)
        self.image_shape = tuple(image_shape)
        self.strides = _strides(self.sizes)
        self._images = images
        self._grid_values = grid_values
        self._sample = grid_sample_fn(self.sizes)

    def __repr__(self) -> str:
        return (f"FactorSource({self.name!r}, names={self.names}, sizes={self.sizes}, "
                f"image_shape={self.image_shape})")

    def sample(self, factor_index: int | None, value: int | None, n: int, rng) -> np.ndarray:
        """``n`` draws int64 ``[n, K]``, uniform over the grid; with ``factor_index``
        not None, that factor's column is fixed to class ``value``.

        The ``sample_fn`` of `tfvae.metrics` (``rng``: a numpy Generator or a seed).
        """
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if factor_index is not None:
            for arg, label in ((factor_index, "factor_index"), (value, "value")):
                if not isinstance(arg, numbers.Integral) or isinstance(arg, bool):
                    raise ValueError(f"{label} must be an integer when factor_index is given, "
                                     f"got {arg!r}")
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        return self._sample(factor_index, value, int(n), rng).astype(np.int64)

    def check(self, classes) -> np.ndarray:
        """``classes`` as int64 ``[n, K]``; ValueError unless each entry is a class of its factor."""
        arr = np.asarray(classes)
        k = len(self.sizes)
        if arr.ndim != 2 or arr.shape[1] != k:
            raise ValueError(f"classes must have shape [n, {k}] ({', '.join(self.names)}), "
                             f"got {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"classes must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and (np.any(arr < 0) or np.any(arr >= np.array(self.sizes))):
            raise ValueError(f"classes out of range: factor k takes 0..sizes[k]-1 with sizes "
                             f"{self.sizes}")
        return arr

    def index(self, classes) -> np.ndarray:
        """Row of each combination in the grid enumeration, int64 ``[n]`` (``classes @ strides``)."""
        return self.check(classes) @ self.strides

    def values(self, classes) -> np.ndarray:
        """The factor values float64 ``[n, K]`` of ``classes`` (e.g. scale 0.5..1)."""
        arr = self.check(classes)
        return np.stack([self._grid_values[k][arr[:, k]] for k in range(len(self.sizes))],
                        axis=1)

    def images(self, classes) -> np.ndarray:
        """The images float32 ``[n, H, W, 1]`` in {0, 1} of ``classes`` int ``[n, K]``."""
        return self._images(self.check(classes))


def _file_images(grid: FileGrid):
    strides = _strides(grid.sizes)

    def images(classes: np.ndarray) -> np.ndarray:
        return grid.imgs[classes @ strides].astype(np.float32)[..., None]
    return images


def _require_factors(meta: DatasetInfo) -> None:
    if not meta.factor_names:
        raise DataError(f"dataset {meta.name!r} has no known generative factors; "
                        f"data sets with factors: {', '.join(_with_factors())}")


def _with_factors() -> list[str]:
    return sorted(n for n, s in REGISTRY.items() if s.info.factor_names)


def _file_grid(name: str, data_dir, download: bool, verify: bool) -> FileGrid:
    spec = get_spec(name)
    (filename,) = spec.info.files["train"]
    (path,) = resolve_files(name, (filename,), spec.urls, spec.checksums, data_dir=data_dir,
                            download=download, verify=verify)
    return read_dsprites(path)


def factor_source(name: str, data_dir=None, image_size: int | None = None,
                  download: bool = True, verify: bool = False) -> FactorSource:
    """The `FactorSource` of a data set with known factors.

    ``image_size``: render size for the generated sets (default: the data set's
    own); must be None or the file's size for file-backed sets. ``data_dir``,
    ``download``, ``verify``: where the file comes from, as in
    `tfvae.data.load_arrays`. A file-backed source keeps the file's uint8
    images in memory (3 GB for dSprites) and reports the grid sizes found in
    the file. DataError for a data set without factors.
    """
    meta = get_spec(name).info
    _require_factors(meta)
    if name in GENERATED:
        size = GENERATED[name][0] if image_size is None else image_size
        shapes.check_image_size(size)
        return FactorSource(name, meta.factor_names, shapes.FACTOR_SIZES, (size, size, 1),
                            lambda c: shapes.render(c, size), shapes.GRID)
    if name in _FILE_GRIDS:
        grid = _file_grid(name, data_dir, download, verify)
        shape = grid.imgs.shape[1:] + (1,)
        if image_size is not None and (image_size, image_size, 1) != shape:
            raise ValueError(f"dataset {name!r} has images of shape {shape}; image_size must be "
                             f"None or {shape[0]}, got {image_size!r}")
        return FactorSource(name, meta.factor_names, grid.sizes, shape, _file_images(grid),
                            grid.grid_values)
    raise DataError(f"dataset {name!r} lists factors but has no factor source")


def load_factors(name: str, split: str, data_dir=None, max_examples: int | None = None,
                 seed: int = 0, download: bool = True, verify: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split with its factors: images float32 ``[n, H, W, 1]``, classes int64 ``[n, K]``.

    The rows are those of ``load_arrays(name, split)`` (``split`` may be sliced,
    e.g. ``"test[:1000]"``); ``max_examples`` keeps a random subset in split
    order, chosen by ``seed`` exactly as ``load(..., max_examples=, seed=)``
    does. For dSprites only the kept rows are converted to float32.
    """
    meta = get_spec(name).info
    _require_factors(meta)
    parsed = parse_split(meta, split)
    if max_examples is not None and (not isinstance(max_examples, numbers.Integral)
                                     or isinstance(max_examples, bool) or max_examples <= 0):
        raise ValueError(f"max_examples must be None or a positive integer, got {max_examples!r}")
    if name in GENERATED:
        images, classes = generated_split(name, parsed.base)
        rows = np.arange(len(images))
    elif name in _FILE_GRIDS:
        grid = _file_grid(name, data_dir, download, verify)
        images, classes = grid.imgs, grid.classes  # uint8 [N, H, W]: converted below
        rows = dsprites_split_rows(len(images), parsed.base)
        rows = np.arange(len(images)) if rows is None else rows
    else:
        raise DataError(f"dataset {name!r} lists factors but has no factor source")
    if parsed.sliced:
        rows = rows[parsed.indices(len(rows))]
    if max_examples is not None and max_examples < len(rows):
        rows = rows[np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_examples])]
    images = images[rows]
    if images.ndim == 3:  # a file grid's uint8 pixels: only the kept rows become float32
        images = images.astype(np.float32)[..., None]
    return images, classes[rows]
