"""tfvae: a model zoo of variational autoencoders on Keras 3 and TensorFlow Probability."""
from tfvae.version import __version__
from tfvae.registry import get_model_class, list_models, register
from tfvae import models  # noqa: F401  (registers the variants)
