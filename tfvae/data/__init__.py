"""Data sets for tfvae: a registry of image data sets and ``tf.data`` pipelines.

``load`` gives batched pipelines; ``load_arrays`` gives whole splits as numpy
arrays; ``info`` and ``list_datasets`` describe what is available.
"""

from .arrays import load_arrays
from .errors import DataError
from .pipeline import load
from .registry import DatasetInfo, info, list_datasets

__all__ = ["DataError", "DatasetInfo", "info", "list_datasets", "load", "load_arrays"]
