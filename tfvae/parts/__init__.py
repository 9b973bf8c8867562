"""The parts a VAE is made of, chosen in config: its prior, its posterior family, its objective
(`tfvae.parts.base` has the mechanism; importing this package registers every part)."""
from tfvae.parts import (adversarial, categorical, codebook, disentangling, flows, mmd,  # noqa: F401
                         reconstruction, semi_amortized, spherical)
from tfvae.parts.base import KINDS, Part, build_part, list_parts, normalize_part_spec, register_part
from tfvae.parts.objectives import Objective, TrainingLoss
from tfvae.parts.posteriors import Posterior
from tfvae.parts.priors import Prior
from tfvae.parts.rules import check_parts

__all__ = ["KINDS", "Objective", "Part", "Posterior", "Prior", "TrainingLoss", "build_part", "check_parts",
           "list_parts", "normalize_part_spec", "register_part"]
