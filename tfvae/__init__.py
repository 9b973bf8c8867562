"""tfvae: a model zoo of variational autoencoders on Keras 3 and TensorFlow Probability.

    import tfvae
    tfvae.list_presets()
    model = tfvae.from_preset("vae_bmnist")
    train, test = tfvae.data.load("binarized_mnist", split=("train", "test"), data_dir=...)
    model.fit(train, epochs=10, validation_data=test)
    tfvae.evaluate(model, test, k=5000)
    tfvae.export(model, "out/vae_bmnist")
    tfvae.gaps("runs/vae_bmnist_...", examples=100)    # log p(x) vs ELBO: the inference gaps
"""
from tfvae.version import __version__
from tfvae.registry import get_model_class, list_models, register
from tfvae import models  # noqa: F401  (registers the variants)
from tfvae import data
from tfvae.presets import from_preset, list_presets, load_preset
from tfvae.inference import evaluate, importance_sampling, log_likelihood
from tfvae.export import export
from tfvae.training import train
from tfvae.runs import gaps

__all__ = ["__version__", "data", "evaluate", "export", "from_preset", "gaps", "get_model_class", "importance_sampling",
           "list_models", "list_presets", "load_preset", "log_likelihood", "models", "register", "train"]
