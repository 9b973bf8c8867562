"""Run directories: what the commands that take one do, for the CLI and Python alike.

`tfvae train` writes a run directory (`tfvae.training.run`: config.yaml, the weights, the
history, train_args.json with the data directory it read). Everything that reads one back
goes through `load_run`, which finds the run's data where the run found it unless told
otherwise; each also takes the name of a zoo preset that ships trained weights (then it
writes into ./<preset>/ by default):

- `evaluate_run`: ELBO and log p(x) on the evaluation split, and disentanglement scores for
  a data set with known factors (`tfvae evaluate`);
- `gaps`: the approximation and amortization gaps (`tfvae gaps`, `tfvae.gaps`);
- `traverse_run`: latent traversals (`tfvae traverse`);
- `export_run`, `sample_run`: a SavedModel and a grid of samples (`tfvae export`, `tfvae sample`).
"""
from __future__ import annotations

import json
import os

import numpy as np

from tfvae import data as datasets
from tfvae.export import export
from tfvae.images import save_image_grid
from tfvae.inference.evaluate import evaluate
from tfvae.inference.gaps import format_gap_table, gap_report, plot_gaps
from tfvae.inputs import check_count
from tfvae.io import atomic_write_text
from tfvae.metrics.report import disentanglement_report
from tfvae.presets import from_preset, load_preset
from tfvae.training.run import load_eval_data, started_with
from tfvae.traversal import DEFAULT_MAX_DIMS, image_shape, save_traversals

GAPS_FILES = ("gaps.json", "gaps.png", "gaps.txt")


def load_run(run_dir: str, data_dir: str | None = None):
    """(preset, model, data_dir) of a run directory: its resolved config, its trained weights,
    and `data_dir` or else the data directory the run was trained from (None: the download
    cache), so the commands on a run find its data where it did. `run_dir` may also name a
    zoo preset that ships trained weights (or its YAML file): its shipped model, sha256-checked."""
    if os.path.isdir(run_dir):
        data_dir = data_dir if data_dir is not None else started_with(run_dir).get("data_dir")
        return load_preset(run_dir), from_preset(run_dir, compile=False), data_dir
    preset = load_preset(run_dir)
    if preset.pretrained is None:
        raise ValueError(f"{run_dir} is not a run directory, and preset {preset.name!r} ships no trained weights "
                         f"to evaluate: train it first (tfvae train {preset.name})")
    return preset, from_preset(run_dir, compile=False), data_dir


def output_dir(run_dir: str, preset) -> str:
    """Where a command writes by default: the run directory, or for a shipped preset a
    directory named after it in the current directory (created)."""
    out = run_dir if os.path.isdir(run_dir) else preset.name
    os.makedirs(out, exist_ok=True)
    return out


def evaluation_examples(preset, model, data_dir, examples: int, split: str | None = None, seed: int = 0):
    """(x, condition) as arrays: `examples` examples of the evaluation split (or `split`) drawn
    at random with `seed`, binarized and labelled as the preset's data section says; x in the
    model's data shape (a flat model gets flat rows)."""
    batches = list(load_eval_data(preset, data_dir, examples=examples, batch_size=examples, split=split, seed=seed))
    pairs = [model.unpack(batch) for batch in batches]
    x = np.concatenate([np.asarray(xb) for xb, _ in pairs])
    condition = None if pairs[0][1] is None else np.concatenate([np.asarray(c) for _, c in pairs])
    if x.shape[1:] != tuple(model.data_shape) and np.prod(x.shape[1:]) == np.prod(model.data_shape):
        x = x.reshape(-1, *model.data_shape)
    return x, condition


def evaluate_run(run_dir: str, data_dir=None, k: int | None = None, examples: int | None = None,
                 split: str | None = None, seed: int = 0, out_path: str | None = None,
                 disentanglement: bool = True, factor_examples: int = 10000, verbose: bool = True,
                 proposal: str | None = None) -> dict:
    """What `tfvae evaluate RUN_DIR` runs: ELBO and importance-sampled log p(x) on the evaluation
    split (`evaluate`, with `proposal`, default the preset's evaluation proposal), and, when
    the run's data set has known generative factors (`shapes`, `shapes64`, `dsprites`) and `disentanglement`, the disentanglement metrics of the encoder
    means on `factor_examples` fresh draws of its factors (`tfvae.metrics.report`) under the
    key "disentanglement". Written as JSON to `out_path` (default RUN_DIR/evaluation.json)."""
    preset, model, data_dir = load_run(run_dir, data_dir)
    data = load_eval_data(preset, data_dir, examples=examples, split=split, seed=seed)
    report = evaluate(model, data, k=k or preset.evaluation.k, seed=seed, verbose=verbose,
                      proposal=proposal or preset.evaluation.proposal)
    if disentanglement and datasets.info(preset.data.name).factor_names:
        source = datasets.factor_source(preset.data.name, data_dir)
        report["disentanglement"] = disentanglement_report(model, source, examples=factor_examples, seed=seed,
                                                           verbose=verbose)
    out_path = out_path or os.path.join(output_dir(run_dir, preset), "evaluation.json")
    atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
    return report


def gaps(run_dir: str, examples: int = 100, k: int | None = None, families=("diag", "full", "flow"),
         data_dir: str | None = None, split: str | None = None, seed: int = 0, out_dir: str | None = None,
         verbose: bool = True, **options) -> dict:
    """The gap report (`tfvae.inference.gaps.gap_report`) of a run directory's model on
    `examples` evaluation examples drawn at random with `seed`; writes gaps.json, gaps.png
    (the plot) and gaps.txt (the table) to `out_dir` (default: the run directory).

    k: importance samples for log p(x) (default: the preset's evaluation k). `options` go
    to `gap_report` (steps, eval_k, learning_rate, samples, refine_steps, points, ...).
    """
    preset, model, data_dir = load_run(run_dir, data_dir)
    x, condition = evaluation_examples(preset, model, data_dir, examples, split, seed)
    out_dir = out_dir or output_dir(run_dir, preset)
    os.makedirs(out_dir, exist_ok=True)
    json_path, png_path, text_path = (os.path.join(out_dir, name) for name in GAPS_FILES)
    report = gap_report(model, x, condition, families=families, k=k or preset.evaluation.k, seed=seed,
                        verbose=verbose, out_path=json_path, **options)
    plot_gaps(report, png_path)
    atomic_write_text(text_path, format_gap_table(report) + "\n")
    return report


def traverse_run(run_dir: str, out_dir: str | None = None, data_dir: str | None = None, split: str | None = None,
                 examples: int = 100, dims=None, num_steps: int | None = None, span: float | None = None,
                 max_dims: int = DEFAULT_MAX_DIMS, example: int = 0, seed: int = 0, gifs: bool = True,
                 duration_ms: int = 120) -> dict:
    """Traversals of a run directory's model (what `tfvae traverse RUN_DIR` runs): on
    `examples` evaluation examples drawn at random with `seed` (`tfvae.traversal.save_traversals`),
    written to `out_dir` (default RUN_DIR/traversals). Returns {"grid": path, "gifs": [paths],
    "dims": [...], "kl": {d: KL_d}}."""
    check_count("examples", examples)
    preset, model, data_dir = load_run(run_dir, data_dir)
    image_shape(model.data_shape)
    x, condition = evaluation_examples(preset, model, data_dir, examples, split, seed)
    return save_traversals(model, x, out_dir or os.path.join(output_dir(run_dir, preset), "traversals"),
                           f"{preset.name} ({preset.data.name})", condition=condition, dims=dims,
                           num_steps=num_steps, span=span, max_dims=max_dims, example=example, seed=seed,
                           gifs=gifs, duration_ms=duration_ms)


def export_run(run_dir: str, out: str, k: int = 1000, max_samples: int = 10000) -> str:
    """A run directory's model as a SavedModel in `out` (`tfvae.export`); returns its path."""
    return export(load_run(run_dir)[1], out, k=k, max_samples=max_samples)


def sample_run(run_dir: str, n: int = 64, seed: int = 0, out: str | None = None) -> str:
    """A grid of n prior samples of a run directory's model (for a conditional model, the
    classes in turn) written as a PNG to `out` (default RUN_DIR/samples_seed<seed>.png)."""
    preset, model, _ = load_run(run_dir)
    condition = None
    if model.condition_dim:
        labels = np.arange(n) % model.condition_dim
        condition = np.eye(model.condition_dim, dtype="float32")[labels]
    images = model.sample(n, seed=seed, condition=condition).numpy()
    out = out or os.path.join(output_dir(run_dir, preset), f"samples_seed{seed}.png")
    save_image_grid({f"{n} samples, seed {seed}": images}, out, columns=min(n, 16))
    return out
