"""Inference tools on the model contract, so every variant gets them:

- `importance_sampling` / `log_likelihood`: IWAE estimates of log p(x), any proposal;
- `evaluate`: ELBO and log p(x) over a data set, with standard errors;
- `optimize_posterior`: a separate q*(z|x) per example (diag, full, flow);
- `point_estimate` / `laplace_log_likelihood`: ML and MAP latents, Laplace's log p(x);
- `refine_posterior`: semi-amortized, differentiable refinement of the encoder's q (it lives
  in `tfvae.parts.refine`, below the models, because the SA-VAE trains through it);
- `active_units`: how many latent dimensions the encoder uses;
- `gap_report`: the approximation / amortization decomposition (`tfvae gaps`).
"""
from tfvae.inference.evaluate import evaluate
from tfvae.inference.gaps import format_gap_table, gap_report, plot_gaps
from tfvae.inference.importance import importance_sampling, log_likelihood
from tfvae.inference.optimize import PosteriorFit, optimize_posterior
from tfvae.inference.points import PointEstimate, laplace_log_likelihood, point_estimate
from tfvae.inference.units import active_units
from tfvae.parts.refine import Refinement, refine_posterior

__all__ = ["PointEstimate", "PosteriorFit", "Refinement", "active_units", "evaluate", "format_gap_table",
           "gap_report", "importance_sampling", "laplace_log_likelihood", "log_likelihood", "optimize_posterior",
           "plot_gaps", "point_estimate", "refine_posterior"]
