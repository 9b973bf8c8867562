"""Helpers shared by the variant tests: small data sets, and a model's twin of another class."""
import numpy as np


def binary_data(n, shape, seed=0):
    """n examples of `shape`, every pixel 0 or 1 with probability 1/2."""
    return (np.random.default_rng(seed).random((n, *shape)) > 0.5).astype("float32")


def structured_data(n, shape, seed=0):
    """Three random binary prototypes of `shape` with 10% of the pixels flipped: data that a
    2- or 3-dimensional latent fits."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(123).random((3, *shape)) > 0.5
    x = prototypes[rng.integers(0, 3, n)]
    return np.where(rng.random(x.shape) < 0.1, ~x, x).astype("float32")


def twin(cls, reference, config, **kwargs):
    """A `cls` model built from `config` (and kwargs) with `reference`'s weights and
    sampling-stream seed."""
    model = cls(**config, seed=reference.seed, **kwargs)
    model.set_weights(reference.get_weights())
    return model
