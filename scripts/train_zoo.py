#!/usr/bin/env python3
"""Train a zoo preset and ship its weights: one command per preset, resumable.

    python scripts/train_zoo.py vae_bmnist --protocol paper --data-dir ../shared/data/binarized_mnist
    python scripts/train_zoo.py beta_vae_bmnist --data-dir ../shared/data/binarized_mnist   # converge

Trains PRESET with the protocol (default "converge": the preset's short recipe until the
validation loss, or the preset's `training.monitor`, has not improved by 0.1 nats in 50
epochs, keeping the best epoch) into RUNS/<preset>_<protocol>. Run the same command again
after an interruption: an unfinished run is resumed (`tfvae train --resume`), a finished one
is not trained again. Then it writes zoo_configs/<preset>.weights.h5 (the best validation epoch's weights, variables only) and the
preset's `pretrained:` section: the protocol, time, machine, test ELBO and log p(x) with
standard errors, active units, the file's sha256 and the fingerprint the tests check
(`tfvae.zoo.publish`). The weights and the section are written before the test evaluation
(minutes at k = 5000): if that is cut short, `--test-only` measures and records it later.
Commit the weights once, when final.
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("preset", help="zoo preset name (tfvae list)")
    p.add_argument("--protocol", choices=["converge", "paper", "short"], default="converge",
                   help="converge (default): the short recipe until the validation loss (or the preset's monitor) stops improving; "
                        "paper: the published protocol of the preset's paper section; short: the CPU recipe")
    p.add_argument("--data-dir", default=os.environ.get("TFVAE_DATA_DIR"),
                   help="directory holding the data set's files (default: $TFVAE_DATA_DIR, else the download cache)")
    p.add_argument("--runs", default=os.path.join(os.path.dirname(REPO), "runs"),
                   help="parent of the run directories (default: ../runs beside the repository)")
    p.add_argument("--zoo-dir", default=os.path.join(REPO, "zoo_configs"),
                   help="where the preset YAML files are and the weights go (default: the repository's zoo_configs)")
    p.add_argument("--no-publish", action="store_true", help="train (or resume) only")
    p.add_argument("--test-only", action="store_true",
                   help="only measure the shipped weights' test numbers and record them in the preset "
                        "(after a publish whose evaluation was cut short); trains nothing")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tfvae.training import train
    from tfvae.training.resume import RESUME_FILE
    from tfvae.zoo import publish, record_test

    if args.test_only:
        try:
            report(args.preset, record_test(os.path.join(args.zoo_dir, f"{args.preset}.yaml"), args.data_dir))
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        return
    run_dir = os.path.join(args.runs, f"{args.preset}_{args.protocol}")
    finished = os.path.isfile(os.path.join(run_dir, "metadata.json"))
    try:
        if os.path.isfile(os.path.join(run_dir, RESUME_FILE)):
            print(f"{args.preset}: resuming {run_dir}", file=sys.stderr)
            train(resume=run_dir, data_dir=args.data_dir, verbose=2)
        elif not finished:
            if os.path.exists(os.path.join(run_dir, "config.yaml")):
                raise SystemExit(f"error: {run_dir} holds a run that can neither be resumed nor was finished; "
                                 f"remove it to start over")
            print(f"{args.preset}: training with the {args.protocol} protocol into {run_dir}", file=sys.stderr)
            train(os.path.join(args.zoo_dir, f"{args.preset}.yaml"), out=run_dir, data_dir=args.data_dir,
                  protocol=args.protocol, evaluate_after=False, verbose=2)
        if args.no_publish:
            return
        data = f" --data-dir {args.data_dir}" if args.data_dir else ""
        section = publish(run_dir, args.zoo_dir, f"python scripts/train_zoo.py {args.preset} "
                          f"--protocol {args.protocol}{data}", data_dir=args.data_dir,
                          preset=args.preset)
    except ValueError as e:           # unknown preset, no paper section, bad data dir
        raise SystemExit(f"error: {e}")
    report(args.preset, section)


def report(preset: str, section: dict):
    test = section["test"]
    print(f"{preset}: {section['protocol']['epochs_run']} epochs (best {section['protocol']['best_epoch']}), "
          f"test log p(x) {test['log_px']:.2f} ± {test['log_px_se']:.2f}, ELBO {test['elbo']:.2f} ± "
          f"{test['elbo_se']:.2f} (k={test['k']}, {test['examples']} examples); weights in "
          f"{section['file']}")


if __name__ == "__main__":
    main()
