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

The dSprites file and its reader are in `tfvae.data.dsprites`.
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from . import shapes
from .dsprites import FileGrid, dsprites_split_rows, grid_strides, read_dsprites
from .errors import DataError
from .files import resolve_files
from .registry import (GENERATED, REGISTRY, DatasetInfo, generated_split,
                       get_spec)
from .splits import parse_split

_FILE_GRIDS = ("dsprites",)  # data sets whose grid is read from a file, not rendered


# ------------------------------------------------------------------------------------ the source

def grid_sample_fn(factor_sizes):
    """A ``sample_fn(factor_index, value, n, rng) -> int [n, K]`` for a full factorial grid: factor k takes
    values 0..factor_sizes[k]-1, all factors independent and uniform (as in dSprites). With
    ``factor_index=None`` it draws unconditionally; otherwise column ``factor_index`` is set to ``value``."""
    sizes = list(factor_sizes)
    for s in sizes:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 2:
            raise ValueError(f"factor size must be an integer >= 2, got {s!r}")
    if not sizes:
        raise ValueError("factor_sizes must be non-empty")

    def sample_fn(factor_index, value, n, rng):
        out = np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)
        if factor_index is not None:
            if not 0 <= factor_index < len(sizes):
                raise ValueError(f"factor_index {factor_index} out of range for {len(sizes)} factors")
            if not 0 <= value < sizes[factor_index]:
                raise ValueError(f"value {value} out of range for factor {factor_index} of size {sizes[factor_index]}")
            out[:, factor_index] = value
        return out
    return sample_fn


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
        self.strides = grid_strides(self.sizes)
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
    strides = grid_strides(grid.sizes)

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
    if parsed.parts:
        raise DataError(f"dataset {name!r}: the factors are read from one split at a time, not the union {split!r}")
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
