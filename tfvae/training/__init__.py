"""Training: callbacks (KL warm-up, checkpoints, image grids) and `train` (preset -> run
directory). What reads a run directory back is `tfvae.runs`."""
from tfvae.training.callbacks import Checkpoints, ImageGrid, KLWarmup, StopOnNonFinite, TrainingDiverged
from tfvae.training.run import train

__all__ = ["Checkpoints", "ImageGrid", "KLWarmup", "StopOnNonFinite", "TrainingDiverged", "train"]
