"""Metrics on learned representations, in numpy.

- `mig`: Mutual Information Gap (Chen et al. 2018);
- `sap`: Separated Attribute Predictability (Kumar et al. 2018);
- `dci`: Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018);
- `factor_vae_score`: the FactorVAE majority-vote score (Kim & Mnih 2018);
- `beta_vae_score`: the beta-VAE linear-classifier score (Higgins et al. 2017);
- helpers: `mutual_information`, `entropy`, `discretize`, and `grid_sample_fn` (the sample_fn of a
  full factorial grid, from `tfvae.data.factors`, where the data sets with factors are).

See `tfvae.metrics.disentanglement` for the input conventions and the sample_fn / representation_fn interface.
"""
from tfvae.data.factors import grid_sample_fn
from tfvae.metrics.disentanglement import (beta_vae_score, dci, discretize, entropy, factor_vae_score, mig,
                                           mutual_information, sap)

__all__ = ["beta_vae_score", "dci", "discretize", "entropy", "factor_vae_score", "grid_sample_fn", "mig",
           "mutual_information", "sap"]
