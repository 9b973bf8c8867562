"""The FactorVAE objective (Kim & Mnih 2018): the negative ELBO plus gamma times a
discriminator's estimate of the total correlation of q(z), the discriminator trained in the same
step by its own optimizer (`tfvae.models.factor_vae` has the math and the one-batch choice).
"""
from __future__ import annotations

from typing import Annotated

import keras
import tensorflow as tf

from tfvae import seeds
from tfvae.config import ALL_POSITIVE, Check, NonNegativeFloat
from tfvae.optimizers import FusedAdam
from tfvae.parts.base import register_part
from tfvae.parts.objectives import Objective, TrainingLoss
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


@register_part("objective", "factor")
class FactorObjective(Objective):
    """loss = -mean_B [E_q log p(x|z) - w KL] + gamma mean_B s(z_b), s the discriminator D's
    logit (log q(z) - log prod_j q(z_j) at the optimum), one z ~ q(z|x) per example, w the KL
    warm-up weight (the KL only). D (`model.discriminator`) and its optimizer
    (`model.discriminator_optimizer`, Adam with betas 0.5, 0.9) are created with the model, so
    they are saved with it; D is updated after each step (`after_train_step`) on the step's z
    and z with each dimension permuted across the batch, and the model's optimizer leaves D's
    variables alone (`separate_variables`). Terms: the ELBO terms, `tc` = s(z_b) [B], and D's
    `disc_loss` and `disc_accuracy`.

    Args:
      gamma: weight of the TC estimate.
      discriminator_hidden: hidden layer sizes of D.
      discriminator_learning_rate: learning rate of D's Adam.
    """

    extra_metrics = DISCRIMINATOR_METRICS

    def __init__(self, gamma: NonNegativeFloat = 35.0, discriminator_hidden: HiddenSizes = (256, 256),
                 discriminator_learning_rate: NonNegativeFloat = 1e-4):
        super().__init__()
        self.gamma, self.discriminator_hidden = gamma, list(discriminator_hidden)
        self.discriminator_learning_rate = discriminator_learning_rate

    def get_config(self):
        return {"gamma": self.gamma, "discriminator_hidden": list(self.discriminator_hidden),
                "discriminator_learning_rate": self.discriminator_learning_rate}

    def attach(self, model):
        """D and its optimizer, on the model (built on D's variables now: a Keras optimizer
        creates its slots on first use, which a compiled multi-step loop does not allow)."""
        super().attach(model)
        model.discriminator = make_discriminator(model.latent_dim, self.discriminator_hidden)
        model.discriminator_optimizer = make_discriminator_optimizer(self.discriminator_learning_rate)
        model.discriminator_optimizer.build(model.discriminator.trainable_variables)

    def separate_variables(self, model) -> list:
        """D's variables: trained by D's optimizer, not the model's."""
        return model.discriminator.trainable_variables

    def tc_logits(self, model, z):
        """D's logits s(z), [B] for z [B, L]."""
        return tf.squeeze(model.discriminator(tf.cast(z, tf.float32)), -1)

    def loss(self, model, x, condition=None, training=False, seed=None) -> TrainingLoss:
        seed = model._seed(seed)
        q, z, log_qz, log_px_z = model._sample_posterior(x, 1, condition, seed, None, training)
        terms = model.bound_terms(tf.reduce_mean(log_px_z, axis=0), q, z, log_qz)
        z = z[0]
        tc = self.tc_logits(model, z)
        weight = tf.cast(model.kl_weight, tf.float32)
        loss = -tf.reduce_mean(terms["log_px_z"] - weight * terms["kl"]) + self.gamma * tf.reduce_mean(tc)
        terms["tc"] = tc
        permutation_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        if not training:
            disc = discriminator_terms(model.discriminator, z, permutation_seed)
            terms.update(disc_loss=disc["disc_loss"], disc_accuracy=disc["disc_accuracy"])
        return TrainingLoss(loss, terms, aux={"z": z, "permutation_seed": permutation_seed})

    def after_train_step(self, model, result) -> dict:
        """D's update with its own optimizer on the step's z; D's loss and accuracy before it."""
        disc = discriminator_step(model.discriminator, model.discriminator_optimizer, result.aux["z"],
                                  result.aux["permutation_seed"])
        return {"disc_loss": disc["disc_loss"], "disc_accuracy": disc["disc_accuracy"]}


__all__ = ["DISCRIMINATOR_METRICS", "FactorObjective", "discriminator_step", "discriminator_terms",
           "make_discriminator", "make_discriminator_optimizer", "permute_dims"]
