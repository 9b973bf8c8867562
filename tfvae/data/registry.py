"""The registered data sets: what they are, where their files come from, how to read them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from . import shapes
from .amat import read_amat
from .dsprites import DSPRITES_FILE, dsprites_split_rows, read_dsprites
from .errors import DataError
from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

Reader = Callable[[str, tuple[Path, ...]], tuple[np.ndarray, "np.ndarray | None"]]


@dataclass(frozen=True)
class DatasetInfo:
    """Public description of a data set.

    ``binary``: values are already in {0, 1}. ``num_classes``: 0 when there are
    no labels. ``files``: split -> file names read for it (empty for generated
    data). ``default_binarize``: what ``load(binarize=None)`` does.
    ``factor_names`` / ``factor_sizes``: the known generative factors and their
    number of classes (empty when there are none); see `tfvae.data.factors`.
    """
    name: str
    description: str
    shape: tuple[int, ...]
    splits: tuple[str, ...]
    binary: bool
    num_classes: int
    files: Mapping[str, tuple[str, ...]]
    default_binarize: str | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: the public info plus download mirrors, checksums and reader.

    ``urls`` are base URLs tried in order (file name appended); ``checksums``
    maps a file name to its accepted ``"algo:hex"`` digests; ``read(split,
    paths)`` returns float32 images in [0, 1] and int64 labels or None.
    """
    info: DatasetInfo
    read: Reader
    urls: tuple[str, ...] = ()
    checksums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _read_amat_images(split: str, paths: tuple[Path, ...]):
    """One ``.amat`` file of 28x28 binary images, no labels."""
    values = read_amat(paths[0], num_values=28 * 28)
    return values.reshape(-1, 28, 28, 1).astype(np.float32), None


def _read_idx_pair(split: str, paths: tuple[Path, ...]):
    """An IDX images file and its IDX labels file; pixels scaled by 1/255."""
    images_path, labels_path = paths
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"expected as many labels as images, found {images.shape[0]} "
                        f"images in {images_path} and {labels.shape[0]} labels in "
                        f"{labels_path}")
    scaled = images.astype(np.float32)[..., None] * np.float32(1 / 255)
    return scaled, labels.astype(np.int64)


# size, seed of each split of the generated data sets. "valid" is drawn apart from "test", so
# that choosing the best epoch or stopping early never looks at the test images.
SHAPES_SPLITS = {"train": (20000, 1_000_003), "valid": (2000, 5_000_003), "test": (2000, 2_000_003)}
SHAPES64_SPLITS = {"train": (20000, 3_000_003), "valid": (5000, 6_000_003), "test": (5000, 4_000_003)}
# name -> (image_size, splits) of the data sets drawn by `shapes.generate`.
GENERATED = {"shapes": (28, SHAPES_SPLITS), "shapes64": (64, SHAPES64_SPLITS)}


def generated_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split of a generated data set: ``(images, classes [n, 5])``."""
    image_size, splits = GENERATED[name]
    size, seed = splits[split]
    return shapes.generate(size, image_size=image_size, seed=seed)


def _generated_reader(name: str) -> Reader:
    def read(split: str, paths: tuple[Path, ...]):
        images, classes = generated_split(name, split)
        return images, classes[:, 0]  # the labels: the shape
    read.__doc__ = f"The fixed {name!r} split: its own size and generation seed."
    return read


def _generated_spec(name: str, description: str) -> DatasetSpec:
    """The spec of a data set of `GENERATED`: its image size and splits come from there."""
    size, splits = GENERATED[name]
    return DatasetSpec(
        info=DatasetInfo(name=name, description=description, shape=(size, size, 1), splits=tuple(splits),
                         binary=True, num_classes=len(shapes.SHAPE_NAMES), files={s: () for s in splits},
                         factor_names=shapes.FACTOR_NAMES, factor_sizes=shapes.FACTOR_SIZES),
        read=_generated_reader(name))




def _read_dsprites(split: str, paths: tuple[Path, ...]):
    """dSprites: every image for "train", the fixed seeded subset for "test"."""
    grid = read_dsprites(paths[0])
    rows = dsprites_split_rows(len(grid.imgs), split)
    images = grid.imgs if rows is None else grid.imgs[rows]
    labels = grid.classes[:, 0] if rows is None else grid.classes[rows, 0]
    return images.astype(np.float32)[..., None], labels


def _idx_files(split: str) -> tuple[str, str]:
    prefix = {"train": "train", "test": "t10k"}[split]
    return (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")


_IDX_FILES = {s: _idx_files(s) for s in ("train", "test")}
_AMAT_FILES = {s: (f"binarized_mnist_{s}.amat",) for s in ("train", "valid", "test")}

REGISTRY: dict[str, DatasetSpec] = {
    "binarized_mnist": DatasetSpec(
        info=DatasetInfo(
            name="binarized_mnist",
            description="MNIST binarized once (Larochelle & Murray 2011 split): "
                        "50000 train / 10000 valid / 10000 test, no labels. The test "
                        "file is ordered by class.",
            shape=(28, 28, 1), splits=("train", "valid", "test"), binary=True,
            num_classes=0, files=_AMAT_FILES),
        read=_read_amat_images,
        urls=("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
        checksums={
            "binarized_mnist_train.amat": (
                "sha256:ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",),
            "binarized_mnist_valid.amat": (
                "sha256:1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",),
            "binarized_mnist_test.amat": (
                "sha256:e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",),
        }),
    "mnist": DatasetSpec(
        info=DatasetInfo(
            name="mnist",
            description="Grayscale MNIST digits (LeCun & Cortes), 60000 train / 10000 "
                        "test, 10 classes; dynamically binarized by default.",
            shape=(28, 28, 1), splits=("train", "test"), binary=False, num_classes=10,
            files=_IDX_FILES, default_binarize="dynamic"),
        read=_read_idx_pair,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
        # md5: the files as served by the mirrors; sha256: the same data
        # recompressed (the copy used for the project's tests).
        checksums={
            "train-images-idx3-ubyte.gz": ("md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",),
            "train-labels-idx1-ubyte.gz": ("md5:d53e105ee54ea40749a09fcbcd1e9432",),
            "t10k-images-idx3-ubyte.gz": (
                "md5:9fb629c4189551a2d022fa330f9573f3",
                "sha256:167310007f03058885c7e95e6c0b19c20de5c7fd3031f4cbdadc9014a523d80b"),
            "t10k-labels-idx1-ubyte.gz": (
                "md5:ec29112dd5afa0611ce80d1b7f02629c",
                "sha256:fc607395669ec21321ea83e4b82c0544b7e8e63ff5b34337c06bc0a17cc0da3c"),
        }),
    "fashion_mnist": DatasetSpec(
        info=DatasetInfo(
            name="fashion_mnist",
            description="Fashion-MNIST (Zalando) grayscale clothing images, 60000 train "
                        "/ 10000 test, 10 classes.",
            shape=(28, 28, 1), splits=("train", "test"), binary=False, num_classes=10,
            files=_IDX_FILES),
        read=_read_idx_pair,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        checksums={
            "train-images-idx3-ubyte.gz": ("md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",),
            "train-labels-idx1-ubyte.gz": ("md5:25c81989df183df01b3e8a0aad5dffbe",),
            "t10k-images-idx3-ubyte.gz": ("md5:bef4ecab320f06d8554ea6380940ec79",),
            "t10k-labels-idx1-ubyte.gz": ("md5:bb300cfdad3c16e7a12a480ee83cd310",),
        }),
    "shapes": _generated_spec(
        "shapes", "Generated binary 28x28 images of a square, ellipse or triangle (the 3 labels) on the "
                  "dSprites factor grid (scale, orientation, x, y); 20000 train / 2000 test; no files, "
                  "no network."),
    "shapes64": _generated_spec(
        "shapes64", "The shapes generator at 64x64 (the size of dSprites): square, ellipse or triangle "
                    "(the 3 labels) on the dSprites factor grid; 20000 train / 5000 test (330 + 80 MB as "
                    "float32; generated in about 2-6 s on 2 CPU cores); no files, no network."),
    "dsprites": DatasetSpec(
        info=DatasetInfo(
            name="dsprites",
            description="dSprites (Matthey et al. 2017): 737280 binary 64x64 images, "
                        "every combination of shape (square, ellipse, heart: the 3 "
                        "labels), scale, orientation, x and y. It has no split: \"train\" "
                        "is every image, \"test\" a fixed random subset of 10000 of them "
                        "(not held out). \"train\" takes 12 GB as float32; for metrics "
                        "use tfvae.data.load_factors(..., max_examples=...). The file "
                        "has no published checksum, so none is checked.",
            shape=(64, 64, 1), splits=("train", "test"), binary=True, num_classes=3,
            files={"train": (DSPRITES_FILE,), "test": (DSPRITES_FILE,)},
            factor_names=shapes.FACTOR_NAMES, factor_sizes=shapes.FACTOR_SIZES),
        read=_read_dsprites,
        urls=("https://github.com/deepmind/dsprites-dataset/raw/master/",)),
}


def list_datasets() -> list[str]:
    """Names of the registered data sets, sorted."""
    return sorted(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; DataError with close matches if unknown."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise DataError(f"unknown dataset {name!r}.{hint} "
                    f"Available: {', '.join(list_datasets())}")


def info(name: str) -> DatasetInfo:
    """The DatasetInfo of a registered data set."""
    return get_spec(name).info
