"""The `tfvae` command: list | train | evaluate | gaps | export | sample | traverse | bench.

Errors in what the user gave (unknown preset, bad config, missing data file) print one
line, `tfvae: error: ...`, and exit with status 2, never a traceback. `tfvae --debug ...` (or
TFVAE_DEBUG=1 in the environment) prints the traceback above that line: a ValueError can also
be a bug's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import yaml

from tfvae.presets import CONVERGENCE, DEFAULT_PRESET, PROTOCOLS


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _key_value(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. latent_dim=10), got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def cmd_list(args):
    import tfvae
    sections = {
        "Models": {name: (tfvae.get_model_class(name).__doc__ or "").strip().split("\n\n")[0]  # first paragraph
                   for name in tfvae.list_models()},
        "Presets": {name: _preset_line(name, summary) for name, summary in tfvae.list_presets().items()},
        "Data sets": {name: tfvae.data.info(name).description.strip().splitlines()[0]
                      for name in tfvae.data.list_datasets()},
    }
    width = max(len(name) for rows in sections.values() for name in rows) + 1
    for title, rows in sections.items():
        print(f"{title}:")
        for name, text in rows.items():
            print(f"  {name:<{width}} {' '.join(text.split())}")


def _preset_line(name: str, summary: str) -> str:
    """A preset's summary, with its shipped weights' test log p(x) when it has them."""
    import tfvae
    pretrained = tfvae.load_preset(name).pretrained
    if pretrained is None:
        return f"[untrained] {summary}"
    test = pretrained.test
    if test is None:
        return f"[trained, not yet evaluated] {summary}"
    return (f"[trained: test log p(x) {test['log_px']:.2f} ± {test['log_px_se']:.2f}, k={test['k']}] "
            f"{summary}")


def _print_report(report: dict):
    rows = [("log p(x) (IWAE, k={k})".format(k=report["k"]), "log_px"), ("ELBO", "elbo"),
            ("  E_q[log p(x|z)]", "log_px_z"), ("  KL(q(z|x) || p(z))", "kl"), ("log p(x) - ELBO", "gap")]
    proposal = ", proposal: the encoder's q refined by the model's steps" if report.get("proposal") == "refined" else ""
    print(f"{report['examples']} examples, {report['seconds']:.1f} s ({report['examples_per_second']:.1f}/s){proposal}")
    for label, key in rows:
        print(f"  {label:<24} {report[key]:>10.2f} ± {report[key + '_se']:.2f} nats")
    print(f"  {'NLL':<24} {report['nll']:>10.2f} nats  ({report['bits_per_dim']:.4f} bits/dim)")
    scores = report.get("disentanglement")
    if scores:
        print(f"Disentanglement of the encoder means ({scores['examples']} draws of "
              f"{', '.join(scores['factors'])}):")
        for label, key in (("MIG", "mig"), ("SAP", "sap"), ("DCI disentanglement", "dci_disentanglement"),
                           ("DCI completeness", "dci_completeness"), ("DCI informativeness", "dci_informativeness"),
                           ("FactorVAE score", "factor_vae_score"), ("beta-VAE score", "beta_vae_score")):
            if key in scores:
                print(f"  {label:<24} {scores[key]:>10.3f}")


def cmd_train(args):
    from tfvae.training import train
    training = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                                      steps_per_execution=args.steps_per_execution,
                                      kl_warmup_epochs=args.kl_warmup_epochs,
                                      checkpoint_seconds=args.checkpoint_seconds).items() if v is not None}
    if args.jit_compile is not None:
        training["jit_compile"] = args.jit_compile
    if args.deterministic:
        training["deterministic"] = True
    evaluation = {k: v for k, v in dict(k=args.eval_k, examples=args.eval_examples).items() if v is not None}
    out = train(args.preset, out=args.out, data_dir=args.data_dir, model=dict(args.set or []), training=training,
                evaluation=evaluation, weights=args.weights, evaluate_after=not args.no_eval,
                verbose=1 if args.verbose else 2, protocol=args.protocol, resume=args.resume,
                strategy=args.strategy)
    print(f"Run directory: {out}")
    report_path = os.path.join(out, "evaluation.json")
    if os.path.exists(report_path):
        with open(report_path) as f:
            _print_report(json.load(f))


def cmd_evaluate(args):
    import tfvae
    from tfvae.runs import evaluate_run, output_dir
    out_path = args.out or os.path.join(output_dir(args.run_dir, tfvae.load_preset(args.run_dir)), "evaluation.json")
    report = evaluate_run(args.run_dir, args.data_dir, k=args.k, examples=args.examples, split=args.split,
                          seed=args.seed, out_path=out_path, disentanglement=not args.no_disentanglement,
                          factor_examples=args.factor_examples, proposal=args.proposal)
    _print_report(report)
    print(f"Wrote {out_path}")


def cmd_gaps(args):
    import tfvae
    from tfvae.inference.gaps import format_gap_table
    from tfvae.runs import GAPS_FILES, gaps, output_dir
    options = {key: value for key, value in dict(
        steps=args.steps, eval_k=args.eval_k, learning_rate=args.learning_rate, samples=args.samples,
        refine_steps=args.refine_steps, batch_size=args.batch_size).items() if value is not None}
    out = args.out or output_dir(args.run_dir, tfvae.load_preset(args.run_dir))
    report = gaps(args.run_dir, examples=args.examples, k=args.k, families=args.family or ("diag", "full", "flow"),
                  data_dir=args.data_dir, split=args.split, seed=args.seed, out_dir=out,
                  points=not args.no_points, **options)
    print(format_gap_table(report))
    print("Wrote " + ", ".join(os.path.join(out, name) for name in GAPS_FILES))


def cmd_export(args):
    from tfvae.runs import export_run
    print(f"SavedModel written to {export_run(args.run_dir, args.out, k=args.k, max_samples=args.max_samples)}")


def cmd_sample(args):
    from tfvae.runs import sample_run
    print(f"Wrote {sample_run(args.run_dir, args.n, args.seed, args.out)}")


def cmd_traverse(args):
    from tfvae.runs import traverse_run
    result = traverse_run(args.run_dir, out_dir=args.out, data_dir=args.data_dir, split=args.split,
                          examples=args.examples, dims=args.dims, num_steps=args.steps, span=args.span,
                          max_dims=args.max_dims, example=args.example, seed=args.seed, gifs=not args.no_gifs)
    print("Latent dimensions (KL per dimension, nats): " + ", ".join(
        f"z{d} {kl:.2f}" for d, kl in result["kl"].items()))
    print(f"Wrote {result['grid']}" + (f" and {len(result['gifs'])} GIFs beside it" if result["gifs"] else ""))


def _add_data_options(p):
    """The evaluation examples' options shared by `evaluate` and `gaps`."""
    p.add_argument("--split", help="data split (default: the preset's evaluation split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="directory holding the data set's files (default: the one the run "
                                      "was trained from, else the download cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfvae", description="Variational autoencoders on Keras 3 and TFP.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error that is otherwise one line (also: TFVAE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="models, presets and data sets").set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a preset and write a run directory")
    p.add_argument("preset", nargs="?",
                   help=f"zoo preset, run directory or YAML file (default: {DEFAULT_PRESET}, no download)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="short",
                   help="short: the preset's CPU recipe (default); paper: its paper's published protocol; "
                        f"converge: the short recipe until the validation loss (or the preset's training.monitor) "
                        f"has not improved by {CONVERGENCE['min_delta']} in {CONVERGENCE['patience']} epochs")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="limit each epoch to this many steps")
    p.add_argument("--steps-per-execution", type=int, help="training steps per compiled call")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction,
                   help="compile the steps with XLA (the presets' default; --no-jit-compile turns it off)")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism: the same seed gives bit-identical weights "
                        "(slower; on a GPU, ops without a deterministic kernel raise)")
    p.add_argument("--kl-warmup-epochs", type=int, help="ramp the KL weight from 0 to 1 over this many epochs")
    p.add_argument("--checkpoint-seconds", type=float,
                   help="save the training state for --resume after at most this many seconds of training "
                        "(default 60; also at every epoch's end)")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker", "tpu"], default="default",
                   help="tf.distribute strategy: default (one device), mirrored (this machine's GPUs), "
                        "multiworker (the machines of TF_CONFIG) or tpu (TPU_NAME, or this TPU VM); the "
                        "batch size is the global batch (README: Scaling out)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run (killed, crashed) from its last saved state, as it was "
                        "configured when it started; no preset or overrides")
    p.add_argument("--data-dir", help="directory holding the data set's files (else the download cache)")
    p.add_argument("--out", help="run directory (default: runs/<preset>_<timestamp>)")
    p.add_argument("--weights", help="start from these .weights.h5 (fine-tuning)")
    p.add_argument("--set", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="override a model setting, e.g. --set latent_dim=10 (repeatable)")
    p.add_argument("--eval-k", type=int, help="importance samples for the final evaluation")
    p.add_argument("--eval-examples", type=int, help="test examples (drawn at random) for the final evaluation")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--verbose", action="store_true", help="a progress bar per step instead of a line per epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="ELBO and importance-sampled log p(x) of a run, and the "
                                         "disentanglement metrics on a data set with known factors")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of tfvae train, or a trained zoo preset")
    p.add_argument("--k", type=int, help="importance samples per example (default: the preset's)")
    p.add_argument("--examples", type=int, help="examples drawn at random (default: the preset's)")
    p.add_argument("--proposal", choices=("encoder", "refined", "optimized"),
                   help="what the k samples are drawn from: the encoder's q, the model's own refinement of it "
                        "(an SA-VAE's), or a diagonal Gaussian fitted to each example (default: the preset's)")
    _add_data_options(p)
    p.add_argument("--factor-examples", type=int, default=10000,
                   help="draws of the generative factors for MIG, SAP and DCI (data sets with factors; default 10000)")
    p.add_argument("--no-disentanglement", action="store_true",
                   help="skip the disentanglement metrics of a data set with known factors")
    p.add_argument("--out", help="JSON report path (default: RUN_DIR/evaluation.json; ./PRESET/ for a preset)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("gaps", help="how far the ELBO is from log p(x): approximation and amortization gaps")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of tfvae train, or a trained zoo preset")
    p.add_argument("--examples", type=int, default=100, help="evaluation examples drawn at random (default: 100)")
    p.add_argument("--k", type=int, help="importance samples for log p(x) (default: the preset's)")
    p.add_argument("--steps", type=int, help="step budget of each per-example optimisation (default: 2000)")
    p.add_argument("--family", action="append", choices=["diag", "full", "flow"],
                   help="posterior family to fit per example (repeatable; default: all three)")
    p.add_argument("--eval-k", type=int, help="samples to evaluate each fitted posterior (default: 1000)")
    p.add_argument("--learning-rate", type=float, help="Adam step size of the optimisations (default: 0.05)")
    p.add_argument("--samples", type=int, help="draws of z per optimisation step (default: 8)")
    p.add_argument("--refine-steps", type=int, help="semi-amortized refinement steps (default: an SA-VAE's own K, else 20; 0 skips)")
    p.add_argument("--batch-size", type=int, help="examples optimised at once (default: 1000)")
    p.add_argument("--no-points", action="store_true", help="skip the ML and MAP point estimates")
    _add_data_options(p)
    p.add_argument("--out", help="directory for gaps.json, gaps.png, gaps.txt (default: RUN_DIR; ./PRESET/ for a preset)")
    p.set_defaults(func=cmd_gaps)

    p = sub.add_parser("export", help="export a run as a SavedModel")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of tfvae train, or a trained zoo preset")
    p.add_argument("out")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the log_likelihood endpoint")
    p.add_argument("--max-samples", type=int, default=10000, help="cap on n of the sample endpoint")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sample", help="a PNG grid of samples from a run's model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of tfvae train, or a trained zoo preset")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default: RUN_DIR/samples_seed<SEED>.png)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("traverse", help="latent traversals of a run: a PNG grid and a GIF per latent dimension")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of tfvae train, or a trained zoo preset")
    p.add_argument("--examples", type=int, default=100,
                   help="evaluation examples that rank the dimensions by KL (default: 100)")
    p.add_argument("--example", type=int, default=0, help="the example whose posterior mean is the base code")
    p.add_argument("--dims", type=int, nargs="+", help="latent dimensions to traverse (default: the highest-KL ones)")
    p.add_argument("--max-dims", type=int, default=10, help="how many dimensions by default (default: 10)")
    p.add_argument("--steps", type=int, help="values per dimension (default: 9)")
    p.add_argument("--span", type=float, help="range: prior mean +- span prior standard deviations (default: 2.5)")
    p.add_argument("--no-gifs", action="store_true", help="only the PNG grid")
    _add_data_options(p)
    p.add_argument("--out", help="output directory (default: RUN_DIR/traversals)")
    p.set_defaults(func=cmd_traverse)

    sub.add_parser("bench", add_help=False,
                   help="throughput of training and evaluation, against the matmul peak and PyTorch "
                        "(tfvae bench --help)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("TFVAE_DEBUG", "") not in ("", "0") or "--debug" in argv[:1]
    if argv[:1] == ["--debug"]:
        argv = argv[1:]
    if argv[:1] == ["bench"]:          # its own parser: `tfvae bench --help` lists its options
        _quiet_tensorflow()
        from tfvae.bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        if debug:
            traceback.print_exc()
        print(f"tfvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfvae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
