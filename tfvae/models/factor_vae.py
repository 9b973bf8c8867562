"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising").

FactorVAE adds to the negative ELBO a penalty on the total correlation of the aggregate
posterior q(z) = E_p(x)[q(z|x)], the KL from q(z) to the product of its marginals q~(z):

    TC(z) = KL(q(z) || q~(z)),   q~(z) = prod_j q(z_j)
    loss  = mean_b[-E_q log p(x_b|z) + KL(q(z|x_b) || p(z))] + gamma * TC(z)

TC has no closed form; the density-ratio trick estimates it with a discriminator D(z), the
probability that z came from q(z) rather than from q~(z). The Bayes-optimal D is
q(z) / (q(z) + q~(z)), so its logit s(z) = log(D / (1 - D)) = log q(z) - log q~(z) and

    TC(z) = E_q(z)[log q(z) - log q~(z)] ~= mean_b s(z_b),   z_b ~ q(z|x_b).

(D has one output logit s; the paper's two-logit softmax is the same model with
s = logit_real - logit_fake.) The gradient of gamma * mean_b s(z_b) reaches the encoder
through the reparameterised z_b; D's own weights are not updated by the VAE loss.

D is trained at every step by its own optimizer on the binary cross-entropy between
samples of q(z) (label 1) and samples of q~(z) (label 0):

    disc_loss = 0.5 * mean_b softplus(-s(z_b)) + 0.5 * mean_b softplus(s(z~_b))

where z~ is the batch z with every latent dimension permuted independently across the batch
(`permute_dims`): its rows are draws from the product of the batch's marginals. Both
samples are `stop_gradient`-ed, so the encoder gets no gradient from the discriminator.

One batch per step (a choice; Kim & Mnih draw a second batch for z~): the VAE term, D's
"real" samples and the permuted "fake" samples all come from the same z ~ q(z|x) of the
batch, as in disentanglement_lib's FactorVAE. Halving the batch instead would halve the
VAE's batch as well; with the same batch every example serves both losses.

The bounds the model reports, evaluates and exports (`elbo_terms`, `log_weights`) are the
VAE's; `fit` also reports `tc` (mean_b s(z_b)), `disc_loss` and `disc_accuracy`.
`kl_weight` (the KL warm-up ramp, 1 otherwise) multiplies the KL only, not the TC penalty.
"""
from __future__ import annotations

from typing import Annotated

import keras
import tensorflow as tf

from tfvae import seeds
from tfvae.config import ALL_POSITIVE, Check, NonNegativeFloat, validate
from tfvae.models.base import BaseVAE, TrainingLoss
from tfvae.optimizers import FusedAdam
from tfvae.registry import register
from tfvae.replicas import apply_mean_gradients
from tfvae.seeds import as_seed

# Kim & Mnih train D with Adam(beta_1=0.5, beta_2=0.9).
DISCRIMINATOR_BETAS = (0.5, 0.9)
LEAKY_RELU_SLOPE = 0.2
DISCRIMINATOR_METRICS = ("tc", "disc_loss", "disc_accuracy")

HiddenSizes = Annotated[tuple[int, ...], ALL_POSITIVE, Check(lambda v: len(v) > 0, "at least one layer")]


def permute_dims(z, seed):
    """z [B, L] with each column permuted independently across the batch, [B, L]: rows of
    the result are draws from the product of the batch's marginals. Column l is ordered by
    argsort of stateless uniform noise [B, L] from `seed` (an int or a [2] int tensor), so
    the permutation is reproducible and stays on the device."""
    z = tf.convert_to_tensor(z)
    noise = seeds.uniform(tf.shape(z), as_seed(seed))
    order = tf.argsort(noise, axis=0)                                  # [B, L]: one permutation per column
    # Gather along the batch axis, one column at a time: [L, B] with batch_dims over L.
    permuted = tf.gather(tf.transpose(z), tf.transpose(order), axis=1, batch_dims=1)
    return tf.transpose(permuted)


def make_discriminator(latent_dim: int, hidden=(256, 256), name: str = "discriminator") -> keras.Sequential:
    """The MLP D: z [B, latent_dim] -> logit s(z) [B, 1], LeakyReLU(0.2) hidden layers.
    Always float32 (it is small, and its logit is a log density ratio)."""
    layers = [keras.Input((latent_dim,), dtype="float32")]
    for i, units in enumerate(hidden):
        layers += [keras.layers.Dense(units, dtype="float32", name=f"dense_{i}"),
                   keras.layers.LeakyReLU(LEAKY_RELU_SLOPE, dtype="float32", name=f"leaky_relu_{i}")]
    layers.append(keras.layers.Dense(1, dtype="float32", name="logit"))
    return keras.Sequential(layers, name=name)


def discriminator_terms(discriminator, z, seed) -> dict:
    """D's loss on a batch of samples z [B, L] of q(z): scalars `disc_loss` (the binary
    cross-entropy, real z labelled 1, `permute_dims(z, seed)` labelled 0, halves weighted
    1/2 each), `disc_accuracy` (the fraction of the 2B samples D classifies right) and
    `tc` (mean_b s(z_b) on the real samples). z is stop_gradient-ed: the loss reaches D only."""
    z = tf.stop_gradient(tf.cast(z, tf.float32))
    real = tf.squeeze(discriminator(z), -1)
    fake = tf.squeeze(discriminator(permute_dims(z, seed)), -1)
    loss = 0.5 * (tf.reduce_mean(tf.nn.softplus(-real)) + tf.reduce_mean(tf.nn.softplus(fake)))
    correct = tf.concat([tf.cast(real > 0, tf.float32), tf.cast(fake < 0, tf.float32)], axis=0)
    return {"disc_loss": loss, "disc_accuracy": tf.reduce_mean(correct), "tc": tf.reduce_mean(real)}


def discriminator_step(discriminator, optimizer, z, seed) -> dict:
    """One update of D by `optimizer` on `discriminator_terms(discriminator, z, seed)`;
    returns those terms (computed before the update). Under a distribution strategy the
    update is that of the replicas' mean loss (`apply_mean_gradients`); each replica's z~
    permutes its own share of the batch."""
    variables = discriminator.trainable_variables
    with tf.GradientTape() as tape:
        terms = discriminator_terms(discriminator, z, seed)
    apply_mean_gradients(optimizer, tape.gradient(terms["disc_loss"], variables), variables)
    return terms


def make_discriminator_optimizer(learning_rate: float, name: str = "discriminator_optimizer"):
    """Adam(learning_rate, beta_1=0.5, beta_2=0.9), Kim & Mnih's optimizer for D."""
    return FusedAdam(learning_rate=learning_rate, beta_1=DISCRIMINATOR_BETAS[0],
                     beta_2=DISCRIMINATOR_BETAS[1], name=name)


@register("factor_vae")
class FactorVAE(BaseVAE):
    """FactorVAE: the negative ELBO plus gamma times a discriminator's estimate of the total
    correlation of q(z) (see the module docstring for the math and the one-batch choice).

        loss = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + gamma * mean_b s(z_b)

    Two optimizers in one `train_step`: the compiled optimizer (`model.compile`) updates the
    VAE's variables (`optimized_variables`: encoder, decoder, likelihood) on the loss above; the
    model's own `discriminator_optimizer`, created and built with the model (so that it
    exists before any compiled step and is saved with the weights), updates D on its
    cross-entropy. D is excluded from the VAE's update and z is cut from D's loss.

    Args:
      gamma: weight of the TC estimate. Kim & Mnih sweep gamma from 10 to 100 on dSprites
        and their disentangled models use values near 35-40; 35 is the default.
      discriminator_hidden: hidden layer sizes of D. Default (256, 256): a CPU-friendly
        size; the paper uses six layers of 1000 units.
      discriminator_learning_rate: learning rate of D's Adam (betas 0.5, 0.9), 1e-4 as in
        the paper.
      Other args as `BaseVAE`.
    """

    extra_metrics = DISCRIMINATOR_METRICS

    def __init__(self, gamma: NonNegativeFloat = 35.0, discriminator_hidden: HiddenSizes = (256, 256),
                 discriminator_learning_rate: NonNegativeFloat = 1e-4, **base):
        args = validate(FactorVAE, dict(gamma=gamma, discriminator_hidden=discriminator_hidden,
                                        discriminator_learning_rate=discriminator_learning_rate),
                        "model 'factor_vae'", fill_defaults=False)
        self.gamma = args["gamma"]
        self.discriminator_learning_rate = args["discriminator_learning_rate"]
        self._discriminator_hidden = list(args["discriminator_hidden"])
        super().__init__(**base)

    def build_variant(self):
        """D, its optimizer (built on D's variables now: a Keras optimizer creates its slots on
        first use, which a compiled multi-step loop does not allow) and the extra metrics."""
        self.discriminator = make_discriminator(self.latent_dim, self._discriminator_hidden)
        self.discriminator_optimizer = make_discriminator_optimizer(self.discriminator_learning_rate)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma,
                "discriminator_hidden": list(self._discriminator_hidden),
                "discriminator_learning_rate": self.discriminator_learning_rate}

    @property
    def optimized_variables(self) -> list:
        """The trainable variables the VAE loss updates: all but the discriminator's."""
        excluded = {id(v) for v in self.discriminator.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in excluded]

    def tc_logits(self, z):
        """D's logits s(z) = log D(z) / (1 - D(z)) ~= log q(z) - log prod_j q(z_j), [B] for z [B, L]."""
        return tf.squeeze(self.discriminator(tf.cast(z, tf.float32)), -1)

    def training_loss(self, x, condition=None, training=False, seed=None) -> TrainingLoss:
        """The VAE loss plus gamma times the TC estimate, from one z ~ q(z|x) per example.

        terms: `log_px_z`, `kl`, `elbo` (as `elbo_terms(x, 1, seed=seed)`), `tc` = s(z_b), [B],
        and outside training D's `disc_loss` and `disc_accuracy` on the batch (in training
        they come from D's update, `after_train_step`). The permutation of z~ is seeded by
        `seed` folded with 1: one draw of the sampling stream per step, as the VAE's step, so
        a twin VAE sees the same z."""
        seed = self._seed(seed)
        q, z, log_qz, log_px_z = self._sample_posterior(x, 1, condition, seed, None, training)
        kl = self.kl_term(q, z, log_qz)
        log_px_z = tf.reduce_mean(log_px_z, axis=0)
        z = z[0]
        tc = self.tc_logits(z)
        weight = tf.cast(self.kl_weight, tf.float32)
        loss = -tf.reduce_mean(log_px_z - weight * kl) + self.gamma * tf.reduce_mean(tc)
        terms = {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl, "tc": tc}
        permutation_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        if not training:
            disc = discriminator_terms(self.discriminator, z, permutation_seed)
            terms.update(disc_loss=disc["disc_loss"], disc_accuracy=disc["disc_accuracy"])
        return TrainingLoss(loss, terms, aux={"z": z, "permutation_seed": permutation_seed})

    def after_train_step(self, result) -> dict:
        """D's update with its own optimizer on the step's z; D's loss and accuracy before it."""
        disc = discriminator_step(self.discriminator, self.discriminator_optimizer, result.aux["z"],
                                  result.aux["permutation_seed"])
        return {"disc_loss": disc["disc_loss"], "disc_accuracy": disc["disc_accuracy"]}


__all__ = ["FactorVAE", "discriminator_step", "discriminator_terms", "make_discriminator",
           "make_discriminator_optimizer", "permute_dims"]
