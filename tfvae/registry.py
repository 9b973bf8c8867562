"""Name -> model class registry, with "did you mean" errors.

    @tfvae.register("vae")
    class VAE(BaseVAE): ...

    tfvae.get_model_class("vae")   # -> VAE
    tfvae.list_models()            # -> ["linear_gaussian", "vae", ...]
"""
from __future__ import annotations

import difflib

import keras

_MODELS: dict[str, type] = {}


def close_matches_message(kind: str, name: str, known) -> str:
    """The message for an unknown `name` among `known`: close matches first, then all names."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}."


def register(name: str):
    """Class decorator: makes a model class available by `name` and Keras-serializable.

    The class is registered with `keras.saving.register_keras_serializable(package="tfvae")`
    so that `.keras` archives load with `safe_mode=True`, and its `registered_name`
    attribute is set to `name` (presets and run configs refer to models by that name).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model names are identifiers like 'beta_vae', got {name!r}")

    def decorate(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already taken by {_MODELS[name].__qualname__}")
        cls.registered_name = name
        _MODELS[name] = keras.saving.register_keras_serializable(package="tfvae", name=cls.__name__)(cls)
        return cls

    return decorate


def get_model_class(name: str) -> type:
    """The class registered as `name`; KeyError-free: raises ValueError with close matches."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(close_matches_message("model", name, _MODELS)) from None


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)
