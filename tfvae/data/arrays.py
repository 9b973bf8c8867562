"""Loading a whole split into memory as numpy arrays."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .files import resolve_files
from .registry import get_spec


def load_arrays(name: str, split: str, data_dir=None, download: bool = True,
                verify: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one split: images float32 ``[N, H, W, C]`` in [0, 1], labels int64 ``[N]`` or None.

    Files come from ``data_dir`` if given, else the cache, else a download
    (when ``download``); ``verify`` also checksums local files.
    """
    spec = get_spec(name)
    meta = spec.info
    check_split(meta, split)
    paths = resolve_files(meta.name, meta.files[split], spec.urls, spec.checksums,
                          data_dir=data_dir, download=download, verify=verify)
    images, labels = spec.read(split, paths)
    origin = ", ".join(map(str, paths)) or "generator"
    if images.shape[1:] != meta.shape:
        raise DataError(f"{origin}: expected images of shape {meta.shape}, found "
                        f"{images.shape[1:]}")
    if labels is not None and labels.size and (labels.min() < 0
                                               or labels.max() >= meta.num_classes):
        raise DataError(f"{origin}: expected labels in 0..{meta.num_classes - 1}, found "
                        f"values from {labels.min()} to {labels.max()}")
    return images, labels


def check_split(meta, split) -> None:
    """Raise DataError unless ``split`` is one of the data set's splits."""
    if split not in meta.splits:
        raise DataError(f"dataset {meta.name!r} has no split {split!r}; expected one "
                        f"of {', '.join(meta.splits)}")
