#!/usr/bin/env python3
"""Train the disentanglement variants on the embedded shapes set and tabulate their scores.

    python scripts/disentanglement.py                                  # every entry, seeds 0 and 1
    python scripts/disentanglement.py --seeds 0 --only beta_tcvae --table docs/disentanglement.md

Every entry shares the networks and the short CPU recipe of the `vae_shapes` preset (MLP
784-256-128-10 with ReLU, Bernoulli likelihood, 5 epochs of 200 steps at batch 100 and 1e-3,
on 20000 generated 28x28 images with factors shape, scale, orientation, x, y); only the
model class and its weight (beta, gamma, lambda) differ. For each entry and seed,
`tfvae.train` writes OUT_ROOT/<entry>_seed<S>, then `evaluate_run` (what `tfvae evaluate`
runs) writes evaluation.json there: the test ELBO and importance-sampled log p(x) (the
preset's k and examples) and the disentanglement metrics of the encoder means on 10000
fresh draws of the factors. A run whose evaluation.json exists is not trained again.
--table writes the Markdown table: per entry the mean over seeds and, in brackets, the range.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

# (label, model class, its arguments): the weights that make each variant differ from the VAE.
ENTRIES = (
    ("vae", "vae", {}),
    ("beta_vae_b4", "beta_vae", {"beta": 4.0}),
    ("beta_vae_b8", "beta_vae", {"beta": 8.0}),
    ("beta_tcvae_b6", "beta_tcvae", {"beta": 6.0, "dataset_size": 20000}),
    ("factor_vae_g10", "factor_vae", {"gamma": 10.0, "discriminator_learning_rate": 1e-3}),
    ("factor_vae_g35", "factor_vae", {"gamma": 35.0, "discriminator_learning_rate": 1e-3}),
    ("dip_vae_ii", "dip_vae", {"dip_type": "ii", "lambda_od": 10.0, "lambda_d": 10.0}),
)
WEIGHT_KEYS = ("beta", "gamma", "lambda_od")
SCORES = (("MIG", "mig"), ("FactorVAE score", "factor_vae_score"), ("SAP", "sap"),
          ("DCI disentanglement", "dci_disentanglement"))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default: 0 1)")
    p.add_argument("--only", nargs="+", choices=[e[0] for e in ENTRIES], help="these entries only")
    p.add_argument("--base", default="vae_shapes", help="preset whose networks, data and recipe every entry shares")
    p.add_argument("--epochs", type=int, help="override the base preset's epochs")
    p.add_argument("--out-root", default="runs/disentanglement", help="parent of the run directories")
    p.add_argument("--table", help="also write the Markdown table to this file")
    return p.parse_args()


def run_entry(base, label, cls, arguments, seed, out_root, epochs=None) -> dict:
    """Trains one entry with one seed (unless its evaluation exists) and returns the evaluation."""
    from tfvae.training import train
    from tfvae.runs import evaluate_run

    run_dir = os.path.join(out_root, f"{label}_seed{seed}")
    report_path = os.path.join(run_dir, "evaluation.json")
    if not os.path.exists(report_path):
        preset = dataclasses.replace(base, name=label, model={**base.model, "class": cls, "seed": seed, **arguments})
        training = {"seed": seed, **({"epochs": epochs} if epochs else {})}
        print(f"{label} seed {seed}: training into {run_dir}", file=sys.stderr)
        if os.path.exists(os.path.join(run_dir, "config.yaml")):
            raise SystemExit(f"error: {run_dir} holds an unfinished run (no evaluation.json); remove it to start over")
        train(preset, out=run_dir, training=training, evaluate_after=False, verbose=2)
        evaluate_run(run_dir, seed=0)
    with open(report_path) as f:
        return json.load(f)


def summary(values) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} [{min(values):.2f}, {max(values):.2f}]"


def table(results: dict, seeds) -> str:
    head = ["variant", "weight"] + [name for name, _ in SCORES] + ["test ELBO", "test log p(x)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, cls, arguments in ENTRIES:
        reports = results.get(label)
        if not reports:
            continue
        weight = ", ".join(f"{k}={arguments[k]:g}" for k in WEIGHT_KEYS if k in arguments) or "beta=1"
        cells = [cls, weight]
        cells += [summary([r["disentanglement"][key] for r in reports]) for _, key in SCORES]
        cells += [summary([r["elbo"] for r in reports]), summary([r["log_px"] for r in reports])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nMean over seeds {', '.join(map(str, seeds))}; "
                               "in brackets the lowest and highest seed.\n")


def main():
    args = parse_args()
    from tfvae.io import atomic_write_text
    from tfvae.presets import load_preset

    base = load_preset(args.base)
    results = {}
    for label, cls, arguments in ENTRIES:
        if args.only and label not in args.only:
            continue
        results[label] = [run_entry(base, label, cls, arguments, seed, args.out_root, args.epochs)
                          for seed in args.seeds]
        scores = results[label][-1]["disentanglement"]
        print(f"{label}: MIG {scores['mig']:.3f}, FactorVAE {scores['factor_vae_score']:.3f}, "
              f"ELBO {results[label][-1]['elbo']:.2f}", file=sys.stderr)
    text = table(results, args.seeds)
    print(text)
    if args.table:
        atomic_write_text(args.table, text)


if __name__ == "__main__":
    main()
