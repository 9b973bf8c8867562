"""A lean reference: the training step of an MLP VAE written by hand in TensorFlow.

Why it exists: `tfvae bench` times tfvae's public path (a zoo model, Keras `fit`, TFP
distributions, the metrics). This module trains the same network with nothing but
TensorFlow ops, plain variables and Keras' Adam, so the ratio of the two (tfvae / lean)
is what the library itself costs on this machine, measured in the same run. It imports
nothing from tfvae, so no change to the library can make the reference faster or slower.

The model (D = 784 pixels, L latents, widths h_1..h_n, activation a on hidden layers only):

    encoder   x [B, D] -> h_1 -> ... -> h_n -> 2L outputs (mu, r);  s = softplus(r) + 1e-4
    sample    z = mu + s * eps,  eps ~ N(0, I) from `tf.random.stateless_normal` (Philox), its seed
              the base seed with the step index folded in (a fresh, reproducible draw per step)
    decoder   z [B, L] -> h_n -> ... -> h_1 -> D logits l   (other widths: `decoder_hidden`)
    loss      (1/B) sum_b [ sum_d BCE(x_bd, l_bd) + KL(N(mu_b, s_b^2) || N(0, I)) ]
              BCE(x, l) = softplus(l) - x l = -log Bernoulli(x | sigmoid(l))
              KL = 1/2 sum_j (s_j^2 + mu_j^2 - 1 - 2 log s_j)

which is tfvae's negative ELBO of a `vae` with an `mlp` encoder and a Bernoulli likelihood
(tests/test_performance.py checks the loss and its gradients against one). Weights are plain
`tf.Variable`s, Glorot-uniform kernels and zero biases drawn from `seed`; the optimizer is
`keras.optimizers.Adam(learning_rate)`.

One compiled call (`tf.function(jit_compile=True)`: XLA, by default) runs the steps of a
stack of batches [S, B, D] passed as its argument, `for i in tf.range(S)`. The data go in as
an argument on purpose: a data set captured as a constant and sliced at a start index inside
an XLA function makes XLA treat the start as a compile-time constant and recompile for every
new value, which costs seconds per call.
"""
from __future__ import annotations

import math
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

SCALE_EPS = 1e-4          # s = softplus(r) + SCALE_EPS: positive and bounded away from 0


def glorot_uniform(fan_in: int, fan_out: int, seed) -> tf.Tensor:
    """A [fan_in, fan_out] kernel drawn from U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform([fan_in, fan_out], seed=seed, minval=-limit, maxval=limit)


def dense_variables(widths, seed: int, first_layer: int = 0) -> list[tuple[tf.Variable, tf.Variable]]:
    """(kernel, bias) of each layer of an MLP with layer widths `widths` (input first)."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        kernel = tf.Variable(glorot_uniform(fan_in, fan_out, [seed, first_layer + i]), name=f"kernel_{first_layer + i}")
        layers.append((kernel, tf.Variable(tf.zeros([fan_out]), name=f"bias_{first_layer + i}")))
    return layers


def mlp(h, layers, activation):
    """h W_1 + b_1 -> activation -> ... -> h W_n + b_n (no activation after the last layer)."""
    for i, (kernel, bias) in enumerate(layers):
        h = tf.matmul(h, kernel) + bias
        if i < len(layers) - 1:
            h = activation(h)
    return h


class LeanVAEStep:
    """The compiled training step of an MLP VAE in plain TensorFlow (see the module doc).

    `step(batches)` with batches [S, B, data_dim] runs S Adam steps in one compiled call and
    returns the loss of the last one. S is `steps_per_call` in a benchmark; every new S (or
    B) traces and compiles once more.

    Args: hidden: the encoder's hidden widths; decoder_hidden: the decoder's (None: `hidden`
    reversed); latent: L; activation: a `tf.nn` function's name; data_dim: D; seed: of the
    initial weights and of the noise.
    """

    def __init__(self, hidden=(200, 200), latent: int = 50, activation: str = "tanh",
                 learning_rate: float = 1e-3, jit_compile: bool = True, steps_per_call: int = 10,
                 seed: int = 0, data_dim: int = 784, decoder_hidden=None):
        self.hidden = tuple(int(w) for w in hidden)
        self.decoder_hidden = self.hidden[::-1] if decoder_hidden is None else tuple(int(w) for w in decoder_hidden)
        self.latent, self.data_dim = int(latent), int(data_dim)
        if min((self.latent, self.data_dim, steps_per_call, *self.hidden, *self.decoder_hidden)) < 1:
            raise ValueError("widths, latent, data_dim and steps_per_call must be at least 1")
        self.activation_name = activation
        self.activation = getattr(tf.nn, activation, None)
        if self.activation is None:
            raise ValueError(f"unknown activation {activation!r}: give the name of a tf.nn function, "
                             f"e.g. 'tanh' or 'relu'")
        self.steps_per_call, self.jit_compile = int(steps_per_call), bool(jit_compile)
        encoder_widths = [self.data_dim, *self.hidden, 2 * self.latent]
        self.encoder = dense_variables(encoder_widths, seed)
        self.decoder = dense_variables([self.latent, *self.decoder_hidden, self.data_dim], seed,
                                       first_layer=len(encoder_widths) - 1)
        self.variables = [v for layer in self.encoder + self.decoder for v in layer]
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.variables)          # its slots exist before any tracing
        self.base_seed = tf.constant([seed, 1], tf.int64)
        self.steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_done")
        self._compiled = tf.function(self._steps, jit_compile=self.jit_compile)

    # ----------------------------------------------------------------- the math
    def encode(self, x):
        """(mu, s) of q(z|x) = N(mu, diag(s^2)), each [B, L]: s = softplus(r) + 1e-4."""
        mean, raw_scale = tf.split(mlp(x, self.encoder, self.activation), 2, axis=-1)
        return mean, tf.nn.softplus(raw_scale) + SCALE_EPS

    def decode(self, z):
        """The Bernoulli logits of p(x|z), [B, data_dim]."""
        return mlp(z, self.decoder, self.activation)

    def loss(self, x, eps):
        """The negative ELBO, averaged over the batch, with the noise `eps` [B, L] given:
        mean_b [sum_d BCE(x, logits(mu + s eps)) + 1/2 sum_j (s^2 + mu^2 - 1 - 2 log s)]."""
        mean, scale = self.encode(x)
        logits = self.decode(mean + scale * eps)
        reconstruction = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=-1)
        kl = 0.5 * tf.reduce_sum(tf.square(scale) + tf.square(mean) - 1.0 - 2.0 * tf.math.log(scale), axis=-1)
        return tf.reduce_mean(reconstruction + kl)

    def noise(self, step, batch_size: int):
        """eps [B, L] ~ N(0, I) of training step `step`: the base seed with `step` folded in.
        (XLA draws other numbers than TensorFlow's kernels from one seed: the compiled step's
        noise is this function's under the step's `jit_compile`.)"""
        seed = tf.random.experimental.stateless_fold_in(self.base_seed, tf.cast(step, tf.int64))
        # Philox named: the default algorithm ("auto_select") scrambles the seed in ops that XLA
        # recomputes for every element drawn, 10x the cost of the draw (tfvae/seeds.py).
        return tf.random.stateless_normal([batch_size, self.latent], seed=seed, alg="philox")

    # ----------------------------------------------------------------- training
    def _train_step(self, x):
        eps = self.noise(self.steps_done, tf.shape(x)[0])
        with tf.GradientTape() as tape:
            loss = self.loss(x, eps)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.variables), self.variables))
        self.steps_done.assign_add(1)
        return loss

    def _steps(self, batches):
        loss = tf.constant(0.0)
        for i in tf.range(tf.shape(batches)[0]):
            loss = self._train_step(batches[i])
        return loss

    def __call__(self, batches):
        """Runs one Adam step per batch of `batches` [S, B, data_dim] in one compiled call;
        returns the loss of the last step (before its update)."""
        return self._compiled(tf.convert_to_tensor(batches, tf.float32))


# --------------------------------------------------------------------- timing
class BatchFeeder:
    """The input pipeline of the lean benchmark: the images shuffled once (numpy), then
    served as contiguous stacks [S, B, D] of the next S*B examples, wrapping around at the
    end. A stack is a view of the shuffled array; its copy into a tensor is part of each
    call's cost, as in a real input pipeline."""

    def __init__(self, images, batch_size: int, seed: int = 0):
        x = np.asarray(images, np.float32).reshape(len(images), -1)
        if len(x) == 0 or batch_size < 1:
            raise ValueError("the lean benchmark needs at least one image and a batch of at least 1")
        self.x = x[np.random.default_rng(seed).permutation(len(x))]
        self.batch_size, self.position = int(batch_size), 0

    def next(self, steps: int) -> np.ndarray:
        need = steps * self.batch_size
        if len(self.x) < need:           # fewer images than one call takes: repeat them
            self.x = np.concatenate([self.x] * math.ceil(need / len(self.x)))
        if self.position + need > len(self.x):
            self.position = 0
        chunk = self.x[self.position:self.position + need]
        self.position += need
        return chunk.reshape(steps, self.batch_size, -1)


def call_sizes(steps: int, steps_per_call: int) -> list[int]:
    """Steps of each compiled call of a round of `steps` steps: full calls, then the rest."""
    full, rest = divmod(steps, steps_per_call)
    return [steps_per_call] * full + ([rest] if rest else [])


class LeanBenchmark:
    """Rounds of `steps` lean training steps on shuffled batches of `images`; `warm_up`
    traces and compiles every call shape a round uses, so that no round pays for it."""

    def __init__(self, images, batch_size: int, step: LeanVAEStep | None = None, seed: int = 0, **options):
        self.feeder = BatchFeeder(images, batch_size, seed)
        if step is None:
            step = LeanVAEStep(seed=seed, **{"data_dim": self.feeder.x.shape[1], **options})
        self.step = step
        self.batch_size = int(batch_size)
        self.last_loss = None

    def warm_up(self, steps: int) -> float:
        """Untimed calls, one per distinct call size of a round; returns their seconds."""
        start = time.perf_counter()
        for size in sorted(set(call_sizes(steps, self.step.steps_per_call))):
            self.last_loss = float(self.step(self.feeder.next(size)))
        return time.perf_counter() - start

    def round(self, steps: int) -> float:
        """Examples/s of `steps` training steps (host copies of the batches included)."""
        start = time.perf_counter()
        loss = None
        for size in call_sizes(steps, self.step.steps_per_call):
            loss = self.step(self.feeder.next(size))
        self.last_loss = float(loss)          # waits for the last call
        return steps * self.batch_size / (time.perf_counter() - start)


def examples_per_second(images, batch_size: int, steps: int, rounds: int = 1, step: LeanVAEStep | None = None,
                        **options) -> float:
    """Training examples/s of the lean step: the median over `rounds` rounds of `steps`
    steps at `batch_size`, after untimed calls that trace and compile (XLA). `options` are
    `LeanVAEStep`'s (hidden, latent, activation, ...) when no `step` is given."""
    bench = LeanBenchmark(images, batch_size, step, **options)
    bench.warm_up(steps)
    return statistics.median(bench.round(steps) for _ in range(rounds))
