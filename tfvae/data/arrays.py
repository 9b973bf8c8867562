"""Loading a whole split into memory as numpy arrays."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .files import resolve_files
from .registry import get_spec
from .splits import SplitSpec, parse_split


def load_arrays(name: str, split: str, data_dir=None, download: bool = True,
                verify: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one split: images float32 ``[N, H, W, C]`` in [0, 1], labels int64 ``[N]`` or None.

    ``split`` is a split name, or a slice of one in file order: ``"test[:8000]"``,
    ``"test[8000:]"``, ``"train[-10000:]"``, or a union of them, ``"train+valid"``, whose
    parts are concatenated in order (see `tfvae.data.splits`).
    Files come from ``data_dir`` if given, else the cache, else a download
    (when ``download``); ``verify`` also checksums local files.
    """
    spec = get_spec(name)
    meta = spec.info
    parsed = check_split(meta, split)
    if parsed.parts:
        loaded = [load_arrays(name, part.text, data_dir, download, verify) for part in parsed.parts]
        images = np.concatenate([images for images, _ in loaded])
        labels = None if loaded[0][1] is None else np.concatenate([labels for _, labels in loaded])
        return images, labels
    paths = resolve_files(meta.name, meta.files[parsed.base], spec.urls, spec.checksums,
                          data_dir=data_dir, download=download, verify=verify)
    images, labels = spec.read(parsed.base, paths)
    origin = ", ".join(map(str, paths)) or "generator"
    if images.shape[1:] != meta.shape:
        raise DataError(f"{origin}: expected images of shape {meta.shape}, found "
                        f"{images.shape[1:]}")
    if labels is not None and labels.size and (labels.min() < 0
                                               or labels.max() >= meta.num_classes):
        raise DataError(f"{origin}: expected labels in 0..{meta.num_classes - 1}, found "
                        f"values from {labels.min()} to {labels.max()}")
    if parsed.sliced:
        selected = parsed.indices(len(images))
        images = images[selected]
        labels = None if labels is None else labels[selected]
    return images, labels


def check_split(meta, split) -> SplitSpec:
    """The parsed ``split`` (a split of the data set, optionally sliced); DataError
    listing the valid splits otherwise."""
    return parse_split(meta, split)
