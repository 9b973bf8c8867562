"""The VAE with two stochastic layers of Burda, Grosse & Salakhutdinov (2016).

Generative model and bottom-up inference model, over z = [z1, z2]:

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1),   p(z2) = N(0, I)
    q(z1, z2|x)  = q(z1|x) q(z2|z1)

with diagonal Gaussian conditionals given by MLPs. The ELBO, estimated with samples
(z1, z2) ~ q (no closed-form KL):

    ELBO = E_q[log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)]

Burda et al.'s MNIST architecture: x -> 200-200 tanh -> q(z1|x) (100 units);
z1 -> 100-100 tanh -> q(z2|z1) (50 units); mirrored for p(z1|z2) and p(x|z1).
The encoder body (`encoder`) gives q(z1|x)'s parameters, the decoder body p(x|z1)'s;
`stochastic_hidden` are the hidden widths of the z1 <-> z2 networks.
"""
from __future__ import annotations

from tfvae.config import PositiveInt, Sizes, validate
from tfvae.distributions import DiagonalGaussianPosterior
from tfvae.models.hierarchy import GaussianMLP, TwoLayerVAE, TwoLevelChain, resolve_latent_dims
from tfvae.nets.mlp import check_activation
from tfvae.registry import register


@register("hvae2")
class HVAE2(TwoLayerVAE):
    """VAE with stochastic layers z1 (bottom) and z2, trained on the ELBO.

    Args (others as `BaseVAE`):
      latent_dims: [d1, d2] (z1 first); [d] gives the one-layer VAE (exactly `vae`).
      latent_dim: optional; must equal d1 + d2 (the size of z = [z1, z2]).
      encoder: body of q(z1|x); decoder: body of p(x|z1) (None mirrors the encoder).
      stochastic_hidden: hidden widths of the MLPs of q(z2|z1) and p(z1|z2).
      stochastic_activation: their activation.
    """

    def __init__(self, latent_dims: Sizes = (100, 50), latent_dim: PositiveInt | None = None,
                 stochastic_hidden: Sizes = (100, 100), stochastic_activation: str = "tanh", **base):
        where = f"model {base.get('name') or 'hvae2'!r}"
        args = validate(HVAE2, dict(latent_dims=latent_dims, latent_dim=latent_dim,
                                    stochastic_hidden=stochastic_hidden,
                                    stochastic_activation=stochastic_activation), where)
        dims, total = resolve_latent_dims(args["latent_dims"], args["latent_dim"], (1, 2), where)
        check_activation(args["stochastic_activation"])
        self._set_hierarchy_config(dims, stochastic_hidden=list(args["stochastic_hidden"]),
                                   stochastic_activation=args["stochastic_activation"])
        super().__init__(latent_dim=total, **base)

    def build_variant(self):
        """q(z2|z1) (`bottom_up`) and p(z1|z2) (`top_down`, mirrored widths); none for one layer."""
        if not self.hierarchical:
            return
        config = self._hierarchy_config()
        d1, d2 = self.latent_dims
        hidden, activation = config["stochastic_hidden"], config["stochastic_activation"]
        self.bottom_up = GaussianMLP(d1, d2, hidden, activation, name="q_z2_given_z1")
        self.top_down = GaussianMLP(d2, d1, hidden[::-1], activation, name="p_z1_given_z2")
        self.bottom_up.build()
        self.top_down.build()

    def encoder_output_units(self) -> int:
        """The encoder body gives q(z1|x)'s parameters (mean and raw scale)."""
        return DiagonalGaussianPosterior.num_params(self.latent_dims[0])

    def posterior_param_count(self) -> int:
        return DiagonalGaussianPosterior.num_params(self.latent_dims[0])

    def posterior_from_params(self, params):
        """q(z|x) = q(z1|x) q(z2|z1) over [z1, z2], with q(z1|x) = N(mu, diag(sigma^2)) from
        the raw parameters `params` [B, 2 * d1] (the encoder body's output)."""
        return TwoLevelChain(DiagonalGaussianPosterior.distribution(params), self.bottom_up.distribution,
                             first_is_z1=True, sizes=self.latent_dims, name="posterior")
