"""Encoder and decoder bodies, chosen by a spec such as ``{"type": "mlp", "hidden": [200, 200]}``.

An encoder maps x of shape [B, *data_shape] (and an optional condition [B, C]) to
``output_units`` raw posterior parameters. A decoder maps z of shape [N, latent_dim] (and an
optional condition [N, C]) to raw likelihood parameters [N, *data_shape, params_per_dim].
Every body works for any data shape the config names; conv bodies need (H, W, C) images.
"""
from __future__ import annotations

from tfvae.distributions import normalize_spec
from tfvae.nets.conv import ConvDecoder, ConvEncoder, ConvSpec
from tfvae.nets.mlp import MLPDecoder, MLPEncoder, MLPSpec

NETS = {
    "mlp": (MLPSpec, MLPEncoder, MLPDecoder),
    "conv": (ConvSpec, ConvEncoder, ConvDecoder),
}


def normalize_net_spec(spec) -> dict:
    """The validated spec dict (defaults filled in) for a network name or mapping."""
    return normalize_spec(spec, NETS, "network")


def build_encoder(spec, data_shape, condition_dim: int, output_units: int):
    spec = normalize_net_spec(spec)
    spec_cls, encoder_cls, _ = NETS[spec.pop("type")]
    return encoder_cls(spec_cls(**spec), tuple(data_shape), condition_dim, output_units, name="encoder")


def build_decoder(spec, latent_dim: int, data_shape, params_per_dim: int, condition_dim: int):
    spec = normalize_net_spec(spec)
    spec_cls, _, decoder_cls = NETS[spec.pop("type")]
    return decoder_cls(spec_cls(**spec), latent_dim, tuple(data_shape), params_per_dim, condition_dim,
                       name="decoder")
