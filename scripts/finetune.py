#!/usr/bin/env python3
"""What a trained start buys: a zoo preset fine-tuned on other data, against its network trained
from scratch on the same data for the same epochs.

    python scripts/finetune.py vae_bmnist --data mnist --data-dir ../shared/data/mnist \\
        --train-split "test[:8000]" --eval-split "test[8000:]" --binarize dynamic --out docs/finetune_vae_bmnist

Trains two copies of PRESET's network with Keras `fit` on the same batches of the target data
(each copy reads its own pipeline, built with the same seed): the preset's shipped weights at
--learning-rate (default: a tenth of the preset's rate), and fresh weights at the preset's own
rate, both at the preset's batch size. After each number of epochs in --epochs, both are scored
on the held-out split: log p(x) by importance sampling with --k samples and the ELBO, with
standard errors (the trained start also before any step, as shipped). Writes OUT.json, OUT.md
(a Markdown table) and OUT.png (log p(x) against epochs).
"""
from __future__ import annotations

import argparse
import json
import os


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help="a zoo preset that ships trained weights (tfvae list), or its YAML file")
    p.add_argument("--data", required=True, help="the target data set (tfvae list shows them)")
    p.add_argument("--data-dir", help="directory holding the target data set's files")
    p.add_argument("--train-split", default="train", help="the split to fine-tune on (default: train)")
    p.add_argument("--eval-split", default="test", help="the held-out split scored (default: test)")
    p.add_argument("--binarize", choices=["static", "dynamic", "none"],
                   help="binarization of the target data (default: the data set's own)")
    p.add_argument("--train-examples", type=int, help="fine-tune on this many examples drawn at random (default: all)")
    p.add_argument("--examples", type=int, default=1000, help="held-out examples scored, drawn at random (default: 1000)")
    p.add_argument("--epochs", default="1,3,10,30", help="comma-separated epoch counts to score at (default: 1,3,10,30)")
    p.add_argument("--learning-rate", type=float, help="the trained start's rate (default: a tenth of the preset's)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per held-out example (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the data streams and the evaluation (default: 0)")
    p.add_argument("--out", required=True, help="path prefix of the .json, .md and .png written")
    args = p.parse_args(argv)
    try:
        args.epochs = sorted({int(e) for e in args.epochs.split(",")})
    except ValueError:
        p.error(f"--epochs must be comma-separated integers, got {args.epochs!r}")
    if args.epochs[0] < 1:
        p.error("--epochs must be at least 1")
    for name in ("k", "examples", "train_examples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.learning_rate is not None and not args.learning_rate > 0:
        p.error("--learning-rate must be positive")
    return args


def score(model, held_out, k: int, seed: int, epochs: int, seconds: float) -> dict:
    import tfvae
    report = tfvae.evaluate(model, held_out, k=k, seed=seed, verbose=False)
    return {"epochs": epochs, "train_seconds": round(seconds, 2),
            **{key: round(float(report[key]), 4) for key in ("log_px", "log_px_se", "elbo", "elbo_se")}}


def learning_curve(model, load_train, held_out, epochs: list[int], k: int, seed: int, score_start: bool) -> list:
    """`model` trained on `load_train()` up to each count in `epochs`, scored after each."""
    import time
    train = load_train()
    points = [score(model, held_out, k, seed, 0, 0.0)] if score_start else []
    done, seconds = 0, 0.0
    for total in epochs:
        start = time.perf_counter()
        model.fit(train, epochs=total, initial_epoch=done, verbose=0)
        seconds += time.perf_counter() - start
        done = total
        points.append(score(model, held_out, k, seed, total, seconds))
        print(f"  {total} epochs: log p(x) {points[-1]['log_px']:.2f} ± {points[-1]['log_px_se']:.2f}", flush=True)
    return points


def compare(args) -> dict:
    import tfvae
    from tfvae.presets import load_preset

    preset = load_preset(args.preset)
    if preset.pretrained is None:
        raise SystemExit(f"error: preset {preset.name!r} ships no trained weights to fine-tune")
    rate = args.learning_rate or preset.training.learning_rate / 10

    def load_train():
        return tfvae.data.load(args.data, split=args.train_split, data_dir=args.data_dir,
                               batch_size=preset.training.batch_size, binarize=args.binarize, seed=args.seed,
                               max_examples=args.train_examples, train_split=args.train_split)

    held_out = tfvae.data.load(args.data, split=args.eval_split, data_dir=args.data_dir, batch_size=100,
                               binarize=args.binarize, shuffle=False, seed=args.seed, max_examples=args.examples)
    print(f"{preset.name}: trained start at learning rate {rate:g}", flush=True)
    trained = learning_curve(tfvae.from_preset(args.preset, training={"learning_rate": rate}), load_train,
                             held_out, args.epochs, args.k, args.seed, score_start=True)
    print(f"{preset.name}: from scratch at learning rate {preset.training.learning_rate:g}", flush=True)
    scratch = learning_curve(tfvae.from_preset(args.preset, pretrained=False), load_train, held_out,
                             args.epochs, args.k, args.seed, score_start=False)
    return {"preset": preset.name, "data": args.data, "train_split": args.train_split,
            "eval_split": args.eval_split, "binarize": args.binarize, "train_examples": args.train_examples,
            "examples": args.examples, "k": args.k, "seed": args.seed, "batch_size": preset.training.batch_size,
            "trained_start": {"learning_rate": rate, "points": trained},
            "from_scratch": {"learning_rate": preset.training.learning_rate, "points": scratch}}


def markdown(result: dict) -> str:
    scratch = {p["epochs"]: p for p in result["from_scratch"]["points"]}
    lines = [f"| epochs | trained start (lr {result['trained_start']['learning_rate']:g}) | from scratch "
             f"(lr {result['from_scratch']['learning_rate']:g}) | difference |", "| ---: | ---: | ---: | ---: |"]
    for p in result["trained_start"]["points"]:
        s = scratch.get(p["epochs"])
        other = f"{s['log_px']:.2f} ± {s['log_px_se']:.2f}" if s else "–"
        diff = f"{p['log_px'] - s['log_px']:+.2f}" if s else "–"
        lines.append(f"| {p['epochs']} | {p['log_px']:.2f} ± {p['log_px_se']:.2f} | {other} | {diff} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("trained_start", "trained start"), ("from_scratch", "from scratch")):
        points = result[key]["points"]
        ax.errorbar([p["epochs"] for p in points], [p["log_px"] for p in points],
                    yerr=[p["log_px_se"] for p in points], marker="o", capsize=3,
                    label=f"{label} (lr {result[key]['learning_rate']:g})")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("epochs on the target data")
    ax.set_ylabel(f"held-out log p(x), k={result['k']} (nats)")
    ax.set_title(f"{result['preset']} on {result['data']} {result['train_split']}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    result = compare(args)
    folder = os.path.dirname(args.out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    table = markdown(result)
    with open(args.out + ".md", "w") as f:
        f.write(table)
    plot(result, args.out + ".png")
    print(table)
    return result


if __name__ == "__main__":
    main()
