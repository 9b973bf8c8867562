#!/usr/bin/env python3
"""Train zoo presets with a protocol and set their test log p(x) next to the published number.

    python scripts/reproduce.py vae_bmnist                       # the paper's protocol (days on a CPU)
    python scripts/reproduce.py vae_bmnist iwae_bmnist --protocol short --table docs/zoo_short_recipes.md

For each preset: `tfvae.train(preset, protocol=...)` writes a run directory
OUT_ROOT/<preset>_<protocol> (training, then the preset's evaluation: the test ELBO and the
importance-sampled log p(x), k = 5000 by default). This script then writes reproduce.json
there, with the published test NLL and its source from the preset's paper section, and
prints one line per preset.

A preset whose run directory already holds reproduce.json is not trained again (use
--force), so a long multi-preset run that stops can be started again with the same command.
--table writes a Markdown table of every preset of the invocation. Data: --data-dir (or
$TFVAE_DATA_DIR) is the directory of the data set's files, e.g. ../shared/data/binarized_mnist.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULT_FILE = "reproduce.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="+", help="zoo preset names (tfvae list) or preset YAML files")
    p.add_argument("--protocol", choices=["paper", "short"], default="paper",
                   help="paper: the published protocol of the preset's paper section (default); "
                        "short: the preset's CPU recipe")
    p.add_argument("--data-dir", default=os.environ.get("TFVAE_DATA_DIR"),
                   help="directory holding the data set's files (default: $TFVAE_DATA_DIR, else the download cache)")
    p.add_argument("--out-root", default="runs/reproduce", help="parent of the run directories (default: runs/reproduce)")
    p.add_argument("--examples", type=int, help="test examples drawn at random (default: the protocol's)")
    p.add_argument("--k", type=int, help="importance samples per example (default: the protocol's)")
    p.add_argument("--table", help="also write a Markdown table of the results to this file")
    p.add_argument("--force", action="store_true", help="train again even where reproduce.json exists")
    args = p.parse_args(argv)
    for name in ("examples", "k"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def reproduce(preset_name: str, protocol: str, out_root: str, data_dir=None, evaluation=None,
              force: bool = False) -> dict:
    """Trains one preset under `protocol` (unless its run has a result) and returns the result."""
    from tfvae.presets import load_preset
    from tfvae.training import train

    preset = load_preset(preset_name)
    resolved = preset.with_protocol(protocol)          # fails early for a preset without a paper section
    run_dir = os.path.join(out_root, f"{preset.name}_{protocol}")
    result_path = os.path.join(run_dir, RESULT_FILE)
    if os.path.exists(result_path) and not force:
        print(f"{preset_name}: already reproduced in {run_dir} (--force to train again)", file=sys.stderr)
        with open(result_path) as f:
            return json.load(f)
    if os.path.exists(os.path.join(run_dir, "config.yaml")):
        raise SystemExit(f"error: {run_dir} holds an unfinished run (no {RESULT_FILE}); remove it to start over")
    print(f"{preset_name}: training with the {protocol} protocol ({resolved.training.epochs} epochs) "
          f"into {run_dir}", file=sys.stderr)
    train(preset_name, out=run_dir, data_dir=data_dir, evaluation=evaluation, protocol=protocol, verbose=2)
    with open(os.path.join(run_dir, "metadata.json")) as f:
        metadata = json.load(f)
    report = metadata["evaluation"]
    published = preset.paper.test_nll if preset.paper else None
    result = {
        "preset": preset.name,
        "model": resolved.model["class"],
        "protocol": protocol,
        "epochs": metadata["epochs"],
        "train_seconds": metadata["train_seconds"],
        "eval_seconds": report["seconds"],
        "k": report["k"],
        "examples": report["examples"],
        "test_elbo": report["elbo"], "test_elbo_se": report["elbo_se"],
        "test_log_px": report["log_px"], "test_log_px_se": report["log_px_se"],
        "test_kl": report["kl"],
        "published_test_nll": published,
        "published_source": preset.paper.source if preset.paper else None,
        "nll_minus_published": None if published is None else -report["log_px"] - published,
        "run_dir": run_dir,
    }
    from tfvae.io import atomic_write_text
    atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
    return result


def format_line(r: dict) -> str:
    published = "no published number" if r["published_test_nll"] is None else \
        f"published NLL {r['published_test_nll']:.1f} ({r['published_source']})"
    return (f"{r['preset']}: {r['protocol']} protocol, {r['epochs']} epochs: test log p(x) "
            f"{r['test_log_px']:.2f} ± {r['test_log_px_se']:.2f} (NLL {-r['test_log_px']:.2f}), "
            f"ELBO {r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f}; {published}")


def format_table(results: list[dict]) -> str:
    lines = ["| preset | model | epochs | test ELBO | test log p(x) | train time | published NLL |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        published = "" if r["published_test_nll"] is None else f"{r['published_test_nll']:.1f}"
        lines.append(f"| {r['preset']} | {r['model']} | {r['epochs']} | {r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f} "
                     f"| {r['test_log_px']:.2f} ± {r['test_log_px_se']:.2f} | {r['train_seconds'] / 60:.1f} min "
                     f"| {published} |")
    k, n = {r["k"] for r in results}, {r["examples"] for r in results}
    lines.append("")
    lines.append(f"Test log p(x): importance sampling with k = {'/'.join(map(str, sorted(k)))} on "
                 f"{'/'.join(map(str, sorted(n)))} test examples drawn at random (seed 0); ± one standard error.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    evaluation = {key: value for key, value in (("examples", args.examples), ("k", args.k)) if value is not None}
    results = []
    for name in args.presets:
        try:
            result = reproduce(name, args.protocol, args.out_root, args.data_dir, evaluation, args.force)
        except ValueError as e:           # unknown preset, no paper section, bad data dir
            raise SystemExit(f"error: {e}")
        print(format_line(result), flush=True)
        results.append(result)
    if args.table:
        from tfvae.io import atomic_write_text
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.table, format_table(results))
        print(f"table written to {args.table}", file=sys.stderr)


if __name__ == "__main__":
    main()
