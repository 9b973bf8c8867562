__version__ = "0.1.0"


def versions() -> dict:
    """Versions of tfvae and the stack it ran on, for run metadata and export descriptions.

    Imports inside: setup.py executes this file to read __version__ without TensorFlow."""
    import platform

    import keras
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    return {"tfvae": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "tensorflow_probability": tfp.__version__, "numpy": np.__version__, "python": platform.python_version()}
