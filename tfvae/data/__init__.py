"""Data sets for tfvae: a registry of image data sets and ``tf.data`` pipelines.

``load`` gives batched pipelines; ``load_arrays`` gives whole splits as numpy
arrays; ``info`` and ``list_datasets`` describe what is available. For data
sets with known generative factors (``shapes``, ``shapes64``, ``dsprites``),
``factor_source`` samples and draws factor combinations for disentanglement
metrics and ``load_factors`` gives a split with its factor classes.
"""

from .arrays import load_arrays
from .errors import DataError
from .factors import FactorSource, factor_source, load_factors
from .pipeline import load
from .registry import DatasetInfo, info, list_datasets

__all__ = ["DataError", "DatasetInfo", "FactorSource", "factor_source", "info", "list_datasets",
           "load", "load_arrays", "load_factors"]
