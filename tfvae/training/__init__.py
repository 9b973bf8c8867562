"""Training: callbacks (KL warm-up, checkpoints, image grids) `train` (preset -> run dir) and
`gaps` (the inference-gap report of a run)."""
from tfvae.training.callbacks import Checkpoints, ImageGrid, KLWarmup, StopOnNonFinite, TrainingDiverged
from tfvae.training.run import gaps, train

__all__ = ["Checkpoints", "ImageGrid", "KLWarmup", "StopOnNonFinite", "TrainingDiverged", "gaps", "train"]
