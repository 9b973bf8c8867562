"""Time and peak memory of one training step of vamp_bmnist's network with a given posterior.

    python scripts/bench_vamp_posterior.py --objective elbo --posterior full
    python scripts/bench_vamp_posterior.py --objective iwae --posterior full --tfp-mixture

Builds a `VAE` from the vamp_bmnist preset's model section (batch 100, K = 500 pseudo-inputs,
40 latents) with the given posterior and objective (`iwae`: k = 5), runs `train_on_batch` on
random binary images once (tracing) and then `--steps` times, and prints the median step time
and the process's peak resident memory. `--tfp-mixture` makes the VampPrior use TFP's
`MixtureSameFamily` for the full posterior instead of `FullCovarianceMixture`: the comparison
of README's "Parts" section. Run one configuration per process: the peak is the process's.
"""
import argparse
import time

import keras
import numpy as np

import tfvae
import tfvae.parts.priors
from tfvae.bench import peak_rss_gib
from tfvae.models import VAE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=["elbo", "iwae"], default="elbo")
    parser.add_argument("--posterior", choices=["diagonal", "full"], default="full")
    parser.add_argument("--tfp-mixture", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.tfp_mixture:
        tfvae.parts.priors.FullCovarianceMixture = tfvae.parts.priors.tfd.MixtureSameFamily

    config = dict(tfvae.load_preset("vamp_bmnist").model)
    config.pop("class")
    config["prior"] = {"type": "vamp", "pseudo_inputs": config.pop("pseudo_inputs")}
    objective = {"type": "iwae", "k": 5} if args.objective == "iwae" else "elbo"
    model = VAE(**config, posterior=args.posterior, objective=objective)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = (np.random.default_rng(0).random((100, *model.data_shape)) > 0.5).astype("float32")
    before = peak_rss_gib()
    model.train_on_batch(x)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x)
        times.append(time.perf_counter() - start)
    mixture = "TFP MixtureSameFamily" if args.tfp_mixture else "tfvae"
    print(f"{args.objective}, posterior {args.posterior}, {mixture} mixture: median step "
          f"{1000 * np.median(times):.0f} ms, peak memory {peak_rss_gib():.2f} GiB ({before:.2f} before the first step)")


if __name__ == "__main__":
    main()
