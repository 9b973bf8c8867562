"""VAE with an inverse autoregressive flow posterior (Kingma et al. 2016).

The encoder outputs a diagonal Gaussian and a context vector h(x); T IAF steps then
transform its sample:

    z_0 = mu(x) + sigma(x) * eps,                 eps ~ N(0, I)
    [m_t, s_t] = MADE_t(z_{t-1}, h(x))            (autoregressive in z_{t-1})
    z_t = a_t * z_{t-1} + b_t                      (elementwise)
    log q(z_T|x) = log N(z_0; mu, sigma^2) - sum_t sum_i log a_{t,i}

Two updates, chosen by `update`:

* "gated" (default; the numerically stable update the paper recommends and uses):
      sigma_t = sigmoid(s_t + gate_bias),  z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t,
  i.e. a = sigma_t, b = (1 - sigma_t) * m_t and log a = log_sigmoid(s_t + gate_bias);
  gate_bias > 0 starts each step near the identity (the paper uses +1 or +2).
* "affine" (the shift-and-log-scale form): z_t = exp(l_t) * z_{t-1} + m_t with
  l_t = 5 tanh(s_t / 5), a log-scale bounded in (-5, 5) and equal to s_t near 0.

Because m_t and s_t of dimension i depend on z_{t-1, <i} only, each Jacobian is triangular
with diagonal a_t, and sampling is one pass per step. The variable order is reversed
between steps (a `Permute`, |det| = 1), so each dimension can depend on all others after
two steps; after the last step the encoder's order is restored (one more reversal when T
is even). The MADEs' output layers start at zero: a fresh "affine" flow is the identity
(q equals the encoder's Gaussian exactly), a fresh "gated" flow scales z by the constant
sigmoid(gate_bias)^T.

In TFP terms each step is `Invert(MaskedAutoregressiveFlow(bijector_fn))`: the MAF's
one-pass inverse is the IAF's forward (sampling), its sequential forward (L network
evaluations) is the IAF's inverse, needed only for log q of a z that was not drawn from q.
The KL has no closed form, so `analytic_kl` returns None and the KL is the Monte Carlo mean
of log q(z) - log p(z).

Cost of log q on the samples: `BaseVAE`'s `log_weights` and `elbo_terms` draw z and log q(z)
together with `experimental_sample_and_log_prob` (base log-density minus the forward
log-det), which never runs the sequential inverse; the one-entry memo in `_memoized` makes the value and the
log-det of a step share one MADE evaluation. (`q.sample` then `q.log_prob` on the very same
tensor also avoids the inverse, through TFP's bijector cache, but only while the tensor
object is the same one.) Measured on the shared 2-core CPU (latent 50, MADE [320, 320],
context 50, T=2, B=100, k=50, inside a tf.function, medians of 7): encode + sample with
log q 52 ms; encode + sample, then log_prob of the same tensor (cache hit) 56 ms; log_prob
of a copy of z (the sequential inverse: L + 1 MADE passes per step) 2.3 s. The MADE runs
T times per draw on this path; the inverse runs it T (L + 1) times.
"""
from __future__ import annotations

import math
from typing import Literal

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import NonNegativeInt, Sizes, validate
from tfvae.distributions import DiagonalNormal, positive_scale
from tfvae.models.base import BaseVAE
from tfvae.nets.mlp import check_activation
from tfvae.registry import register

tfd, tfb = tfp.distributions, tfp.bijectors

LOG_SCALE_BOUND = 5.0   # the "affine" update's log-scale lies in (-5, 5)


# --------------------------------------------------------------------- MADE
def made_degrees(event_size: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """Degrees of the units of each layer of a MADE (Germain et al. 2015): inputs 1..L,
    hidden units cycling over 1..L-1 (all 0 when L = 1: such units see no input)."""
    degrees = [np.arange(1, event_size + 1)]
    for width in hidden:
        if event_size == 1:
            degrees.append(np.zeros(width, dtype=int))
        else:
            degrees.append(np.arange(width) % (event_size - 1) + 1)
    return degrees


def made_masks(event_size: int, hidden: tuple[int, ...], params: int) -> list[np.ndarray]:
    """0/1 kernel masks [fan_in, fan_out]: hidden unit k sees input i iff deg(k) >= i;
    output i sees unit k iff i > deg(k). So output i depends on inputs < i only.
    The output layer has `params` columns per dimension, column c = i * params + p."""
    degrees = made_degrees(event_size, hidden)
    masks = [(d_out[None, :] >= d_in[:, None]).astype("float32")
             for d_in, d_out in zip(degrees[:-1], degrees[1:])]
    out_degrees = np.repeat(np.arange(1, event_size + 1), params)
    masks.append((out_degrees[None, :] > degrees[-1][:, None]).astype("float32"))
    return masks


class MADE(keras.layers.Layer):
    """Autoregressive network: z [..., L] (and a context [B, H]) -> [..., L, params], where
    output [..., i, :] depends on z[..., :i] and the context only.

    The context enters the first hidden layer and the output layer through unmasked
    kernels (it does not depend on z, so it cannot break the autoregressive property; the
    output kernel lets output 1, which sees no z, depend on x). A context [B, H]
    broadcasts against z [k, B, L]. The output layer and its context kernel start at zero.
    """

    def __init__(self, event_size: int, hidden, activation: str = "elu", context_size: int = 0,
                 params: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.event_size, self.hidden = event_size, tuple(hidden)
        self.activation = keras.activations.get(activation)
        self.context_size, self.params = context_size, params
        self.masks = [tf.constant(m) for m in made_masks(event_size, self.hidden, params)]

    def build(self, input_shape=None):
        widths = (self.event_size, *self.hidden, self.event_size * self.params)
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            init = "zeros" if last else "glorot_uniform"
            self.kernels.append(self.add_weight(shape=(fan_in, fan_out), initializer=init, name=f"kernel{i}"))
            self.biases.append(self.add_weight(shape=(fan_out,), initializer="zeros", name=f"bias{i}"))
        self.context_kernel = self.output_context_kernel = None
        if self.context_size:
            self.context_kernel = self.add_weight(shape=(self.context_size, widths[1]), initializer="glorot_uniform",
                                                  name="context_kernel")
            self.output_context_kernel = self.add_weight(shape=(self.context_size, widths[-1]), initializer="zeros",
                                                         name="output_context_kernel")
        self.built = True

    def output_layer_weights(self) -> list:
        """The weights that start at zero: with them at zero the MADE outputs 0."""
        out = [self.kernels[-1], self.biases[-1]]
        return out + ([self.output_context_kernel] if self.output_context_kernel is not None else [])

    def call(self, z, context=None):
        h = z
        last = len(self.kernels) - 1
        for i, (kernel, bias, mask) in enumerate(zip(self.kernels, self.biases, self.masks)):
            h = tf.linalg.matmul(h, tf.cast(kernel, h.dtype) * tf.cast(mask, h.dtype)) + tf.cast(bias, h.dtype)
            if self.context_size and i in (0, last):
                context_kernel = self.context_kernel if i == 0 else self.output_context_kernel
                h = h + tf.linalg.matmul(tf.cast(context, h.dtype), tf.cast(context_kernel, h.dtype))
            if i < last:
                h = self.activation(h)
        return tf.reshape(h, tf.concat([tf.shape(h)[:-1], [self.event_size, self.params]], 0))


# --------------------------------------------------------------------- the posterior
def _memoized(fn):
    """fn, remembering its last (input tensor -> result): MAF asks for the same step's
    bijector twice on one input (its value and its log-det), which would run the MADE twice.
    One entry only, so nothing outlives the next call."""
    last = []

    def call(z, **kwargs):
        if last and last[0] is z:
            return last[1]
        result = fn(z)
        last[:] = [z, result]
        return result

    return call


class IAFPosterior:
    """q(z|x): the encoder's N(mu, sigma^2) pushed through T IAF steps. Its raw parameters
    (what the encoder outputs and semi-amortized inference refines) are
    [mu (L), raw sigma (L), context h (H)]."""

    def __init__(self, made_steps, latent_dim: int, context_dim: int, update: str, gate_bias: float):
        self.made_steps = made_steps
        self.latent_dim, self.context_dim = latent_dim, context_dim
        self.update, self.gate_bias = update, gate_bias

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim + self.context_dim

    def step_coefficients(self, made_output):
        """(log a, b) of z' = a * z + b from the MADE's output [..., L, 2] = [m, s]."""
        m, s = made_output[..., 0], made_output[..., 1]
        if self.update == "gated":
            s = s + self.gate_bias
            return tf.math.log_sigmoid(s), tf.sigmoid(-s) * m
        return LOG_SCALE_BOUND * tf.tanh(s / LOG_SCALE_BOUND), m

    def step(self, made, context) -> tfb.Bijector:
        """One IAF step z -> a(z) * z + b(z) as Invert(MAF): MAF's inverse x = B(y).inverse(y)
        computes its parameters from its input, so B(z) is the inverse of the affine map."""
        def bijector_fn(z):
            log_a, b = self.step_coefficients(made(z, context))
            return tfb.Invert(tfb.Chain([tfb.Shift(b), tfb.Scale(log_scale=log_a)]))

        return tfb.Invert(tfb.MaskedAutoregressiveFlow(bijector_fn=_memoized(bijector_fn)))

    def flow(self, context) -> tfb.Bijector:
        """IAF_T o reverse o ... o reverse o IAF_1, then one more reversal when there were an
        odd number, so that the output is in the encoder's order (Chain applies right to left)."""
        reverse = tfb.Permute(permutation=list(range(self.latent_dim - 1, -1, -1)))
        steps = []
        for t, made in enumerate(self.made_steps):
            if t:
                steps.append(reverse)
            steps.append(self.step(made, context))
        if len(self.made_steps) % 2 == 0:
            steps.append(reverse)
        return tfb.Chain(steps[::-1])

    def split(self, params):
        """(mu, sigma, context) from the raw parameters [B, 2L + H]."""
        params = tf.cast(params, tf.float32)
        L = self.latent_dim
        return params[..., :L], positive_scale(params[..., L:2 * L]), params[..., 2 * L:]

    def distribution(self, params) -> tfd.Distribution:
        loc, scale, context = self.split(params)
        base = DiagonalNormal(loc=loc, scale_diag=scale)
        if not self.made_steps:
            return base
        return tfd.TransformedDistribution(base, self.flow(context))


# --------------------------------------------------------------------- the model
@register("iaf")
class IAF(BaseVAE):
    """VAE whose q(z|x) is a diagonal Gaussian followed by an inverse autoregressive flow.

    Args (besides `BaseVAE`'s):
      flow_steps: T, the number of IAF steps (0: the plain VAE).
      made_hidden: hidden widths of each step's MADE.
      made_activation: Keras activation of the MADE's hidden layers.
      context_dim: size of the context h(x) the encoder passes to every MADE (0: none).
      update: "gated" (the paper's z' = sigma z + (1 - sigma) m) or "affine" (z' = exp(l) z + m).
      gate_bias: added to s before the sigmoid of the "gated" update.
    """

    def __init__(self, flow_steps: NonNegativeInt = 2, made_hidden: Sizes = (320, 320), made_activation: str = "elu",
                 context_dim: NonNegativeInt = 50, update: Literal["gated", "affine"] = "gated",
                 gate_bias: float = 2.0, **base):
        args = validate(IAF, dict(flow_steps=flow_steps, made_hidden=made_hidden, made_activation=made_activation,
                                  context_dim=context_dim, update=update, gate_bias=gate_bias),
                        "model 'iaf'", fill_defaults=False)
        if not math.isfinite(args["gate_bias"]):
            raise ValueError(f"model 'iaf': 'gate_bias' must be a finite number, got {gate_bias!r}")
        check_activation(args["made_activation"])
        if not args["made_hidden"]:
            raise ValueError("model 'iaf': 'made_hidden' needs at least one hidden layer, e.g. [320, 320]")
        # Read by encoder_output_units() during BaseVAE.__init__.
        self.flow_steps, self.made_hidden = args["flow_steps"], tuple(args["made_hidden"])
        self.made_activation, self.context_dim = args["made_activation"], args["context_dim"]
        self.update, self.gate_bias = args["update"], args["gate_bias"]
        super().__init__(**base)
        self.posterior_family = IAFPosterior(self.made_steps, self.latent_dim, self.context_dim,
                                             self.update, self.gate_bias)

    def build_variant(self):
        """One MADE per flow step."""
        self.made_steps = [MADE(self.latent_dim, self.made_hidden, self.made_activation, self.context_dim,
                                name=f"made{t}") for t in range(self.flow_steps)]
        for made in self.made_steps:
            made.build()

    def encoder_output_units(self) -> int:
        """mu and raw sigma of the base Gaussian (2L), then the context h(x) (H)."""
        return 2 * self.latent_dim + self.context_dim

    def get_config(self):
        return {**super().get_config(), "flow_steps": self.flow_steps, "made_hidden": list(self.made_hidden),
                "made_activation": self.made_activation, "context_dim": self.context_dim,
                "update": self.update, "gate_bias": self.gate_bias}
