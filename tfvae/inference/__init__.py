"""Inference tools on the model contract: importance-sampled log p(x) and evaluation."""
from tfvae.inference.evaluate import evaluate
from tfvae.inference.importance import importance_sampling, log_likelihood

__all__ = ["evaluate", "importance_sampling", "log_likelihood"]
