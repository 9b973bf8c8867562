"""The parts a VAE is made of, chosen in config: its prior, its posterior family, its objective.

Every model of the zoo is a prior p(z), a posterior family q(z|x), a likelihood p(x|z), two
networks and a training objective. The likelihood and the networks are chosen in config
(`likelihood:`, `encoder:`, `decoder:`); so are these three parts:

    model:
      class: vae
      prior: {type: vamp, pseudo_inputs: 500}
      posterior: diagonal                      # a name, or {type: ..., settings}
      objective: {type: iwae, k: 5, estimator: dreg}

A part is a small object (`Part`) registered by kind and name (`register_part`); its
settings are its constructor's arguments, validated like every config. When the model is
built, each part is attached to it (`Part.attach`): a part that has weights creates them on the
model (so a trained model's weight file keeps one layout whatever the parts), and keeps a
reference to the model it belongs to. A model refuses, when it is built, parts that do not fit
together (`check_parts`): every refusal says why.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping

from tfvae.config import ConfigError, validate
from tfvae.registry import close_matches_message

KINDS = ("prior", "posterior", "objective")
_PARTS: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}


class Part:
    """Base of priors, posteriors and objectives. Its constructor's arguments are its settings
    (`get_config` returns them); `attach` binds it to the model it is part of."""

    kind = ""
    registered_name = ""

    def __init__(self):
        self.model = None

    def attach(self, model):
        """Binds the part to `model` (called once, while the model is built: Keras accepts new
        weights only then). A part with weights creates them here, on the model."""
        self.model = model

    def get_config(self) -> dict:
        return {}

    def training_scope(self, model):
        """Entered around every training step, inside the compiled step (a schedule, a mode:
        the categorical posterior's temperature and relaxed latents); nothing by default."""
        return contextlib.nullcontext()

    def spec(self) -> dict:
        """{"type": name, **settings}: what the model's config holds for this part."""
        return {"type": self.registered_name, **self.get_config()}

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.kind} {self.registered_name!r}" + (f" ({settings})" if settings else "")


def register_part(kind: str, name: str):
    """Class decorator: makes a `Part` subclass available as `kind` `name` in model configs."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def decorate(cls):
        if name in _PARTS[kind] and _PARTS[kind][name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already taken by {_PARTS[kind][name].__qualname__}")
        cls.kind, cls.registered_name = kind, name
        _PARTS[kind][name] = cls
        return cls

    return decorate


def list_parts(kind: str) -> list[str]:
    """The registered names of a kind of part, sorted."""
    return sorted(_PARTS[kind])


def normalize_part_spec(kind: str, spec) -> dict:
    """{"type": name, **validated settings} from a name or a mapping with a 'type' key."""
    if isinstance(spec, Part):
        return spec.spec()
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"a {kind} is a name or a mapping with a 'type' key, got {spec!r}")
    name = spec["type"]
    if name not in _PARTS[kind]:
        raise ConfigError(close_matches_message(kind, name, _PARTS[kind]))
    settings = {key: value for key, value in spec.items() if key != "type"}
    return {"type": name, **validate(_PARTS[kind][name], settings, f"{kind} {name!r}")}


def build_part(kind: str, spec) -> Part:
    """A fresh part from a name, a mapping with a 'type' key, or a part (copied by its spec)."""
    spec = normalize_part_spec(kind, spec)
    name = spec.pop("type")
    return _PARTS[kind][name](**spec)


__all__ = ["KINDS", "Part", "build_part", "list_parts", "normalize_part_spec", "register_part"]
