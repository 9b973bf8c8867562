"""Disentanglement metrics of a trained model on a data set with known generative factors.

The representation of an image is the mean of the model's posterior q(z|x) (`moments`: exact
when TFP has it, else estimated from fixed draws). A factor source (`tfvae.data.factor_source`)
supplies the ground truth: it draws integer factor classes on its grid, with one factor held
fixed when asked, and renders or looks up the images of any classes. So every metric sees

    factors [N, K] --source.images--> x [N, H, W, C] --encoder mean--> codes [N, L]

MIG, SAP and DCI use N unconditional draws; the FactorVAE and beta-VAE scores draw their own
conditional batches through `sample_fn` / `representation_fn` (see `tfvae.metrics`).
"""
from __future__ import annotations

import time
import weakref

import numpy as np
import tensorflow as tf

from tfvae.distributions import moments
from tfvae.metrics.disentanglement import beta_vae_score, dci, factor_vae_score, mig, sap

METRICS = ("mig", "sap", "dci", "factor_vae", "beta_vae")


def encoder_means(model, images, batch_size: int = 500) -> np.ndarray:
    """Posterior means E_q[z | x] of `images` [N, *data_shape], float64 [N, latent_dim]."""
    images = np.asarray(images, np.float32)
    if images.shape[1:] != tuple(model.data_shape):
        images = images.reshape((len(images), *model.data_shape))
    means = [_compiled_means(model)(tf.constant(images[i:i + batch_size])).numpy()
             for i in range(0, len(images), batch_size)]
    return np.concatenate(means).astype(np.float64)


def _compiled_means(model):
    """x -> E_q[z|x] as one tf.function per model (traced once, reused for every chunk)."""
    if model not in _MEANS:
        _MEANS[model] = tf.function(lambda x: moments(model.encode(x))[0], reduce_retracing=True,
                                    autograph=False)
    return _MEANS[model]


_MEANS = weakref.WeakKeyDictionary()


def representation_fn(model, source, batch_size: int = 500):
    """factors [n, K] -> codes [n, latent_dim]: render the images of `batch_size` factor rows,
    encode them, then the next rows, so only one chunk of images is in memory however large n
    is (the FactorVAE and beta-VAE scores pass all the rows of a phase at once: up to 128000
    with the report's defaults, 1000 beta-VAE examples of 64 pairs)."""
    def represent(factors):
        factors = np.asarray(factors)
        if factors.ndim != 2 or len(factors) <= batch_size:   # one chunk (or let source.images reject it)
            return encoder_means(model, source.images(factors), batch_size)
        return np.concatenate([encoder_means(model, source.images(factors[i:i + batch_size]), batch_size)
                               for i in range(0, len(factors), batch_size)])
    return represent


def disentanglement_report(model, source, examples: int = 10000, metrics=METRICS, seed: int = 0,
                           score_batch_size: int = 64, score_train: int = 1000, score_eval: int = 500,
                           verbose: bool = True) -> dict:
    """The disentanglement metrics of `model`'s encoder means on `source`'s factors.

    Args:
      model: a model on the tfvae contract whose data shape matches the source's images.
      source: a factor source (`tfvae.data.factor_source(name)`): `.names`, `.sizes`,
        `.image_shape`, `.sample(factor_index, value, n, rng)`, `.images(classes)`.
      examples: N, the unconditional draws for MIG, SAP and DCI.
      metrics: any of "mig", "sap", "dci", "factor_vae", "beta_vae".
      seed: the same seed gives the same numbers.
      score_batch_size, score_train, score_eval: the FactorVAE and beta-VAE scores' votes:
        each vote encodes `score_batch_size` images (beta-VAE: that many pairs); the images of
        all the votes of a phase are rendered and encoded together, 500 at a time. The papers
        use 10000 training and 5000 evaluation votes; the defaults here (1000 and 500: about
        3 s for the FactorVAE score and 8 s for the beta-VAE score with the small shapes MLP
        on a 2-core CPU) give a standard error of about 0.02 on an accuracy near 0.5.
      verbose: print one line per metric with its time.
    Returns:
      dict with the headline numbers `mig`, `sap`, `dci_disentanglement`, `dci_completeness`,
      `dci_informativeness`, `factor_vae_score`, `beta_vae_score` (those asked for), plus
      `factors` (names), `examples`, `seconds` and `per_factor` (MIG and SAP per factor).
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown disentanglement metric(s) {unknown}; choose from {list(METRICS)}")
    if int(np.prod(source.image_shape)) != int(np.prod(model.data_shape)):
        raise ValueError(f"the model takes examples of shape {tuple(model.data_shape)}, but the factor "
                         f"data set's images have shape {tuple(source.image_shape)}")
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    report = {"factors": list(source.names), "examples": int(examples)}
    represent = representation_fn(model, source)
    per_factor = {}

    def timed(name, fn):
        began = time.perf_counter()
        out = fn()
        if verbose:
            print(f"  {name}: {time.perf_counter() - began:.1f} s")
        return out

    if {"mig", "sap", "dci"} & set(metrics):
        factors = source.sample(None, None, examples, rng)
        codes = timed("encode", lambda: represent(factors))
        if "mig" in metrics:
            out = timed("MIG", lambda: mig(factors, codes, rng=rng))
            report["mig"], per_factor["mig"] = out["mig"], out["per_factor"].tolist()
        if "sap" in metrics:
            out = timed("SAP", lambda: sap(factors, codes, rng=rng))
            report["sap"], per_factor["sap"] = out["sap"], out["per_factor"].tolist()
        if "dci" in metrics:
            out = timed("DCI", lambda: dci(factors, codes, rng=rng))
            for part in ("disentanglement", "completeness", "informativeness"):
                report[f"dci_{part}"] = out[part]
    scores = dict(sample_fn=source.sample, representation_fn=represent,
                  batch_size=score_batch_size, num_train=score_train, num_eval=score_eval)
    if "factor_vae" in metrics:
        report["factor_vae_score"] = timed("FactorVAE score", lambda: factor_vae_score(
            **scores, num_variance_estimate=examples, rng=rng))["eval_accuracy"]
    if "beta_vae" in metrics:
        report["beta_vae_score"] = timed("beta-VAE score", lambda: beta_vae_score(**scores, rng=rng))["eval_accuracy"]
    report["per_factor"] = per_factor
    report["seconds"] = time.perf_counter() - start
    return report


__all__ = ["METRICS", "disentanglement_report", "encoder_means", "representation_fn"]
