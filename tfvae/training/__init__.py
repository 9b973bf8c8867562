"""Training: callbacks (KL warm-up, checkpoints, image grids) and `train` (preset -> run dir)."""
from tfvae.training.callbacks import Checkpoints, ImageGrid, KLWarmup
from tfvae.training.run import train

__all__ = ["Checkpoints", "ImageGrid", "KLWarmup", "train"]
