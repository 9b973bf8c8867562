#!/usr/bin/env python3
"""Throughput of `tfvae.log_likelihood(model, x, k=5000)` against the PyTorch reference loop.

Protocol
  * Model: the reference's MLP, built with tfvae -- encoder 784-512-256-(2x32), decoder
    32-256-512-784, ReLU, Bernoulli likelihood, diagonal Gaussian q, N(0, I) prior:

        VAE(data_shape=(784,), latent_dim=32,
            encoder={"type": "mlp", "hidden": [512, 256], "activation": "relu"},
            decoder={"type": "mlp", "hidden": [256, 512], "activation": "relu"},
            likelihood="bernoulli")

    The decoder is given explicitly: tfvae's default decoder reuses the encoder's spec with
    the hidden widths in the same order (32-512-256-784), not reversed.
  * Data: the reference's N random binary examples,
    np.random.default_rng(0).random((N, 784)) > 0.5. The weights are untrained (Keras
    initialisers, seed 0), as in the reference; throughput does not depend on them.
  * tfvae: `tfvae.log_likelihood(model, x[i:i + batch], k)` over the N examples in batches
    of --batch-size, the result fetched with .numpy(). Tracing is excluded: one untimed
    warm-up call per distinct batch shape comes first.
  * PyTorch: `python <shared>/bench/torch_reference.py iwae-eval --k K --examples N` in a
    subprocess, with the interpreter running this script; its own reported examples/s is
    used (it times its per-example loop only, no warm-up, chunks of 1000 samples).
  * The two alternate for --rounds rounds (tfvae, then torch); the JSON line reports the
    median examples/s of each and ratio = median tfvae / median torch.

On a shared machine other processes skew the two sides differently (torch's OpenMP
threads suffer more from a busy core than TensorFlow's pool), so each round also records
`other_cpu_cores`: the CPU time used by processes other than this one and its
children, per second of the timed section (from /proc/stat; null where unavailable).
Rounds with more than 0.2 of a core in use elsewhere are flagged on stderr; compare
ratios from quiet runs. (With one core busy elsewhere torch fell to ~2 examples/s and
tfvae to ~10, a meaningless "ratio" of ~5.)

The two mean log p(x) figures in the output are not comparable: the weights are
initialised differently (Keras Glorot vs torch's default) and tfvae's posterior scale is
softplus(raw) + 1e-4 where the reference uses exp(0.5 * logvar).

Knobs measured on the 2-core machine this was written on (quiet, medians):
--batch-size 1, 5, 10, 20 and 100 (with --examples 100) were within noise of each other;
--samples-per-chunk 16384 to 262144 were within noise, 4096 was ~7% slower;
--inter-op-threads 1 was within noise of the default; --intra-op-threads 1 halved
throughput. Single rounds vary by up to 20-30% on a shared host even when /proc/stat shows
it quiet (torch more than tfvae), so use 5 or more rounds and compare medians.

Example (from the repository root, torch installed with `pip install torch==2.13.0`):

  python scripts/bench_iwae_eval.py --examples 20 --k 5000 --rounds 3

Prints one JSON line on stdout; progress and warnings go to stderr.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUSY_ELSEWHERE = 0.2   # cores; above this a round is flagged as measured on a busy machine


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=20, help="N, examples per timed pass (default: 20)")
    p.add_argument("--k", type=int, default=5000, help="importance samples per example (default: 5000)")
    p.add_argument("--batch-size", type=int, default=20,
                   help="examples per tfvae.log_likelihood call, capped at --examples (default: 20; "
                        "1 to 100 measured within noise of each other)")
    p.add_argument("--rounds", type=int, default=3, help="alternating tfvae/torch rounds (default: 3)")
    p.add_argument("--samples-per-chunk", type=int, default=None,
                   help="samples_per_chunk passed to tfvae.log_likelihood (default: the library default)")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="tf.config.threading intra-op threads (default 0: TensorFlow's choice)")
    p.add_argument("--inter-op-threads", type=int, default=0,
                   help="tf.config.threading inter-op threads (default 0: TensorFlow's choice)")
    p.add_argument("--shared", type=Path, default=None,
                   help="the shared directory holding bench/torch_reference.py (default: $TFVAE_SHARED, "
                        "else ../shared relative to the repository root)")
    args = p.parse_args()
    for name in ("examples", "k", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.samples_per_chunk is not None and args.samples_per_chunk < 1:
        p.error("--samples-per-chunk must be at least 1")
    if args.shared is None:
        args.shared = Path(os.environ["TFVAE_SHARED"]) if os.environ.get("TFVAE_SHARED") else REPO_ROOT.parent / "shared"
    args.reference = args.shared.resolve() / "bench" / "torch_reference.py"
    if not args.reference.is_file():
        p.error(f"the PyTorch reference is not at {args.reference}; pass --shared DIR or set TFVAE_SHARED")
    if importlib.util.find_spec("torch") is None:
        sys.exit(f"error: PyTorch is not installed for {sys.executable}, and the reference needs it. "
                 f"Install the CPU build with: pip install torch==2.13.0")
    return args


def log(message):
    print(message, file=sys.stderr, flush=True)


class OtherLoad:
    """CPU cores used by other processes while the block runs: all busy CPU time (from
    /proc/stat) minus this process's and its waited-for children's, per wall second."""

    def __enter__(self):
        self.busy, self.mine, self.start = self._busy(), self._mine(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        busy = self._busy()
        self.cores = None if busy is None or self.busy is None else max(
            0.0, ((busy - self.busy) - (self._mine() - self.mine)) / self.seconds)

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # all but idle, iowait

    @staticmethod
    def _mine():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def main():
    args = parse_args()
    import keras
    import numpy as np
    import tensorflow as tf

    import tfvae
    from tfvae.models import VAE
    from tfvae.version import versions

    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    keras.utils.set_random_seed(0)
    model = VAE(data_shape=(784,), latent_dim=32,
                encoder={"type": "mlp", "hidden": [512, 256], "activation": "relu"},
                decoder={"type": "mlp", "hidden": [256, 512], "activation": "relu"},
                likelihood="bernoulli")
    kernels = [tuple(layer.kernel.shape) for layer in model.encoder_net.hidden + [model.encoder_net.out]
               + model.decoder_net.hidden + [model.decoder_net.out]]
    expected = [(784, 512), (512, 256), (256, 64), (32, 256), (256, 512), (512, 784)]
    if kernels != expected:
        raise RuntimeError(f"model layers {kernels} differ from the reference's {expected}")

    n, k = args.examples, args.k
    batch = min(args.batch_size, n)
    x = (np.random.default_rng(0).random((n, 784)) > 0.5).astype("float32")
    batches = [x[i:i + batch] for i in range(0, n, batch)]
    chunk_kw = {} if args.samples_per_chunk is None else {"samples_per_chunk": args.samples_per_chunk}

    def tfvae_pass():
        return np.concatenate([tfvae.log_likelihood(model, b, k=k, **chunk_kw).numpy() for b in batches])

    shapes = sorted({len(b) for b in batches}, reverse=True)
    log(f"tfvae: warm-up (tracing, untimed) for batch shape(s) {shapes}")
    t = time.perf_counter()
    for size in shapes:
        tfvae.log_likelihood(model, x[:size], k=k, **chunk_kw).numpy()
    warmup_s = time.perf_counter() - t

    command = [sys.executable, str(args.reference), "iwae-eval", "--k", str(k), "--examples", str(n)]
    rounds = []
    for r in range(args.rounds):
        with OtherLoad() as tf_load:
            log_px = tfvae_pass()
        tf_rate = n / tf_load.seconds
        with OtherLoad() as torch_load:
            proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: the PyTorch reference failed ({' '.join(command)}):\n{proc.stderr.strip()}")
        torch_result = json.loads(proc.stdout.strip().splitlines()[-1])
        rounds.append({"tfvae_examples_per_s": tf_rate, "torch_examples_per_s": torch_result["examples_per_s"],
                       "tfvae_other_cpu_cores": tf_load.cores, "torch_other_cpu_cores": torch_load.cores})
        log(f"round {r + 1}/{args.rounds}: tfvae {tf_rate:.2f} ex/s, torch {torch_result['examples_per_s']:.2f} "
            f"ex/s (other processes: {tf_load.cores if tf_load.cores is None else round(tf_load.cores, 2)} / "
            f"{torch_load.cores if torch_load.cores is None else round(torch_load.cores, 2)} cores)")
        for side, load in (("tfvae", tf_load.cores), ("torch", torch_load.cores)):
            if load is not None and load > BUSY_ELSEWHERE:
                log(f"warning: round {r + 1} ({side}) ran while other processes used {load:.2f} cores; "
                    f"its figure is not comparable")

    tf_median = statistics.median(r["tfvae_examples_per_s"] for r in rounds)
    torch_median = statistics.median(r["torch_examples_per_s"] for r in rounds)
    result = {
        "benchmark": "iwae-eval",
        "k": k,
        "examples": n,
        "batch_size": batch,
        "samples_per_chunk": args.samples_per_chunk or tfvae.inference.importance.DEFAULT_SAMPLES_PER_CHUNK,
        "rounds": args.rounds,
        "tfvae_examples_per_s": tf_median,
        "torch_examples_per_s": torch_median,
        "ratio": tf_median / torch_median,
        "per_round": rounds,
        "tfvae_warmup_s": warmup_s,
        "tfvae_timing": "tracing excluded (one untimed warm-up call per batch shape)",
        "torch_timing": "as reported by torch_reference.py iwae-eval (its loop only, no warm-up)",
        "tfvae_mean_log_px": float(log_px.mean()),
        "torch_mean_log_px": torch_result.get("mean_log_px"),
        "threads": {"cpu_count": os.cpu_count(),
                    "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "torch": torch_result.get("threads")},
        "versions": {**versions(), "torch": torch_result.get("torch"), "platform": platform.platform()},
        "torch_command": " ".join(command),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
