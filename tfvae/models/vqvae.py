"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning").

The model `vqvae` is the VAE made of three parts of `tfvae.parts.codebook`, which holds the math:
the posterior `vector_quantized` (each of the encoder's L output vectors of D numbers snapped to
the nearest of K learned codes, straight-through gradients, the codebook learned by gradients or
as exponential moving averages with dead-code restarts), the prior `uniform_codebook` (uniform
over the codes of each latent: KL = L log K, a constant, and log p(x) = ELBO) and the objective
`vq` (reconstruction + codebook + commitment losses). This class keeps the paper's arguments
(L, D, K) and gives the codebook's variables and EMA step the model's own names.
"""
from __future__ import annotations

from tfvae.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, validate
from tfvae.models.base import BaseVAE, with_fixed_parts
from tfvae.parts.codebook import DecayRate
from tfvae.registry import register


@register("vqvae")
class VQVAE(BaseVAE):
    """VQ-VAE: L encoder vectors of size D, each replaced by the nearest of K codes; a
    uniform prior over codes and a point-mass q (`tfvae.parts.codebook` has the math).

    Args:
      num_latents: L, the number of discrete latents per example.
      embedding_dim: D, the size of each code vector.
      codebook_size: K, the number of codes.
      commitment_cost: beta, the weight of the commitment loss ||z_e - sg(e)||^2.
      ema: update the codebook by exponential moving averages (no codebook loss; the codes
        are not trainable) instead of by gradients of the codebook loss.
      decay: gamma of the moving averages (with ema).
      epsilon: Laplace smoothing of the cluster sizes (with ema).
      restart_threshold: with ema, restart the codes whose EMA cluster size falls below this
        at random encoder outputs of the batch (0: never, the paper's algorithm).
      latent_dim: L * D; may be given (e.g. by `get_config`) but must equal it.
      kl: either value gives the same KL, L log K.
      Other args as `BaseVAE` (but `prior`, `posterior` and `objective`).

    The default sizes are those of the zoo preset `vqvae_bmnist` (which also turns on ema and
    restarts).
    """

    fixed_parts = ("prior", "posterior", "objective")

    def __init__(self, num_latents: PositiveInt = 4, embedding_dim: PositiveInt = 16,
                 codebook_size: PositiveInt = 256, commitment_cost: NonNegativeFloat = 0.25, ema: bool = False,
                 decay: DecayRate = 0.99, epsilon: PositiveFloat = 1e-5, restart_threshold: NonNegativeFloat = 0.0,
                 latent_dim: PositiveInt | None = None, **base):
        where = f"model {base.get('name') or 'vqvae'!r}"
        args = validate(VQVAE, dict(num_latents=num_latents, embedding_dim=embedding_dim,
                                    codebook_size=codebook_size, commitment_cost=commitment_cost, ema=ema,
                                    decay=decay, epsilon=epsilon, restart_threshold=restart_threshold,
                                    latent_dim=latent_dim), where, fill_defaults=False)
        total = args["num_latents"] * args["embedding_dim"]
        if args["latent_dim"] is not None and args["latent_dim"] != total:
            raise ConfigError(f"{where}: latent_dim must be num_latents * embedding_dim = "
                              f"{args['num_latents']} * {args['embedding_dim']} = {total}, got {latent_dim} "
                              f"(leave latent_dim out)")
        self.embedding_dim = args["embedding_dim"]
        posterior = {"type": "vector_quantized",
                     **{key: args[key] for key in ("num_latents", "codebook_size", "ema", "decay", "epsilon",
                                                   "restart_threshold")}}
        objective = {"type": "vq", "commitment_cost": args["commitment_cost"]}
        super().__init__(latent_dim=total, **with_fixed_parts("vqvae", base, prior={"type": "uniform_codebook"},
                                                               posterior=posterior, objective=objective))

    def get_config(self):
        posterior = self.posterior_part.get_config()
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "commitment_cost": self.objective_part.commitment_cost, **posterior}

    # The posterior part's codebook, its moving averages and their EMA step, as the model's own.
    @property
    def codebook(self):
        return self.posterior_part.codebook

    @property
    def cluster_size(self):
        return self.posterior_part.cluster_size

    @property
    def embed_sum(self):
        return self.posterior_part.embed_sum

    def update_codebook(self, z_e, indices, seed=(0, 0)):
        """The posterior's EMA step (`VectorQuantizedPosterior.update_codebook`)."""
        self.posterior_part.update_codebook(z_e, indices, seed)


__all__ = ["VQVAE"]
