"""The ladder VAE of Sønderby et al. (2016), with two stochastic layers.

Generative model (as `hvae2`), over z = [z1, z2]:

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1),  p(z2) = N(0, I),  p(z1|z2) = N(mu_p(z2), s_p(z2)^2)

Inference runs a deterministic bottom-up pass and then a stochastic top-down pass that
shares p(z1|z2)'s network with the generative model:

    d1 = f(encoder(x)),  d2 = MLP(d1)                              (bottom-up)
    mu_hat_i = Linear(d_i),  s_hat_i = softplus(Linear(d_i)) + eps  (i = 1, 2)
    q(z2|x)     = N(mu_hat_2, s_hat_2^2)
    q(z1|z2, x) = N(mu, sigma^2),  the precision-weighted merge of N(mu_hat_1, s_hat_1^2)
                  and the top-down prior N(mu_p(z2), s_p(z2)^2):
                  sigma^2 = 1 / (s_hat^-2 + s_p^-2),  mu = (mu_hat s_hat^-2 + mu_p s_p^-2) sigma^2

so q(z|x) = q(z2|x) q(z1|z2, x) and the ELBO is
E_q[log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z2|x) - log q(z1|z2, x)].

Left out of Sønderby et al.'s recipe: batch normalisation (the bodies have none) and their
5 stochastic layers (this model has 2). KL warm-up is the training recipe's
`kl_warmup_epochs`. Scales use the package's softplus(.) + eps on the standard deviation
(Sønderby et al. apply softplus to the variance).
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import ConfigError, PositiveInt, Sizes, validate
from tfvae.distributions import DiagonalGaussianPosterior, DiagonalNormal, positive_scale
from tfvae.models.hierarchy import GaussianMLP, TwoLayerVAE, TwoLevelChain, activation_fn, resolve_latent_dims
from tfvae.nets.mlp import dense_stack
from tfvae.registry import register

tfd = tfp.distributions


def precision_weighted_merge(loc_a, scale_a, loc_b, scale_b):
    """(loc, scale) of the normalised product of N(loc_a, scale_a^2) and N(loc_b, scale_b^2):

        sigma^2 = 1 / (1/scale_a^2 + 1/scale_b^2),   mu = (loc_a/scale_a^2 + loc_b/scale_b^2) sigma^2

    (elementwise; the arguments broadcast). N(z; a) N(z; b) = N(loc_a; loc_b, scale_a^2 +
    scale_b^2) N(z; mu, sigma^2), so this is the Gaussian proportional to the product.
    """
    precision_a, precision_b = tf.math.reciprocal(tf.square(scale_a)), tf.math.reciprocal(tf.square(scale_b))
    variance = tf.math.reciprocal(precision_a + precision_b)
    return (loc_a * precision_a + loc_b * precision_b) * variance, tf.sqrt(variance)


@register("ladder")
class LadderVAE(TwoLayerVAE):
    """Ladder VAE with stochastic layers z1 (bottom) and z2, trained on the ELBO.

    Args (others as `BaseVAE`):
      latent_dims: [d1, d2] (z1 first).
      latent_dim: optional; must equal d1 + d2.
      encoder: body of the first bottom-up features, d1 = activation(encoder(x)), with
        bottom_up[0] outputs. decoder: body of p(x|z1) (None mirrors the encoder).
      bottom_up: widths of the deterministic bottom-up features: bottom_up[0] is the width of
        d1, bottom_up[1:] the layers of the MLP d1 -> d2 (d2 the last; at least one).
      top_down: hidden widths of the MLP z2 -> p(z1|z2), shared by p and q.
      activation: activation of d1, of the bottom-up MLP and of the top-down MLP.
    """

    def __init__(self, latent_dims: Sizes = (64, 32), latent_dim: PositiveInt | None = None,
                 bottom_up: Sizes = (512, 256, 256), top_down: Sizes = (256, 256), activation: str = "leaky_relu",
                 **base):
        where = f"model {base.get('name') or 'ladder'!r}"
        args = validate(LadderVAE, dict(latent_dims=latent_dims, latent_dim=latent_dim, bottom_up=bottom_up,
                                        top_down=top_down, activation=activation), where)
        dims, total = resolve_latent_dims(args["latent_dims"], args["latent_dim"], (2,), where)
        if len(args["bottom_up"]) < 2:
            raise ConfigError(f"{where}: bottom_up lists the width of d1 and then at least one layer of the "
                              f"MLP d1 -> d2, e.g. [512, 256, 256]; got {list(args['bottom_up'])}")
        self.feature_activation = activation_fn(args["activation"])
        self._set_hierarchy_config(dims, bottom_up=list(args["bottom_up"]), top_down=list(args["top_down"]),
                                   activation=args["activation"])
        super().__init__(latent_dim=total, **base)

    def build_variant(self):
        """The bottom-up MLP d1 -> d2, the heads of the bottom-up Gaussians, and p(z1|z2)."""
        config = self._hierarchy_config()
        d1, d2 = self.latent_dims
        features = config["bottom_up"][0]
        self.bottom_up_mlp = dense_stack(config["bottom_up"][1:], config["activation"], "bottom_up")
        self.bottom_up_head1 = keras.layers.Dense(DiagonalGaussianPosterior.num_params(d1), name="bottom_up_params1")
        self.bottom_up_head2 = keras.layers.Dense(DiagonalGaussianPosterior.num_params(d2), name="bottom_up_params2")
        self.top_down = GaussianMLP(d2, d1, config["top_down"], config["activation"], name="p_z1_given_z2")
        width = features
        for layer in self.bottom_up_mlp:
            layer.build((None, width))
            width = layer.units
        self.bottom_up_head1.build((None, features))
        self.bottom_up_head2.build((None, width))
        self.top_down.build()

    def encoder_output_units(self) -> int:
        """The encoder body gives the first bottom-up features d1 (before the activation)."""
        return self._hierarchy_config()["bottom_up"][0]

    # -------------------------------------------------------------- inference
    def posterior_param_count(self) -> int:
        return sum(DiagonalGaussianPosterior.num_params(d) for d in self.latent_dims)

    def posterior_params(self, x, condition=None, training=False):
        """The bottom-up Gaussians' raw parameters [B, 2 d1 + 2 d2]: (mu_hat_1, raw s_hat_1)
        from d1 and (mu_hat_2, raw s_hat_2) from d2. Everything in q(z|x) that depends on x."""
        d1 = self.feature_activation(super().posterior_params(x, condition, training))
        d2 = d1
        for layer in self.bottom_up_mlp:
            d2 = layer(d2)
        return tf.concat([self.bottom_up_head1(d1), self.bottom_up_head2(d2)], axis=-1)

    def posterior_from_params(self, params):
        """q(z|x) = q(z2|x) q(z1|z2, x) over [z1, z2] from the bottom-up parameters."""
        d1, d2 = self.latent_dims
        params = tf.cast(params, tf.float32)
        params1, params2 = tf.split(params, [2 * d1, 2 * d2], axis=-1)
        loc_hat, raw_scale_hat = tf.split(params1, 2, axis=-1)
        scale_hat = positive_scale(raw_scale_hat)

        def q_z1_given_z2(z2):
            top_down = self.top_down.distribution(z2)
            loc, scale = precision_weighted_merge(loc_hat, scale_hat, top_down.mean(), top_down.stddev())
            return DiagonalNormal(loc=loc, scale_diag=scale)

        return TwoLevelChain(DiagonalGaussianPosterior.distribution(params2), q_z1_given_z2,
                             first_is_z1=False, sizes=self.latent_dims, name="posterior")
