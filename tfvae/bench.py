"""`tfvae bench` / `scripts/benchmark.py`: throughput of training and evaluation, against
the machine's matmul rate and, with `--vs-torch`, against the PyTorch reference loop.

Every figure goes through the package's public path:
  * train: `from_preset(REFERENCE_PRESET)` + Keras `fit` on a repeating `tf.data` stream,
    examples/s of each epoch of `steps` steps; the first epoch (tracing) is not counted.
  * iwae-eval: `tfvae.evaluate(model, x, k=5000)`, examples/s of log p(x) (and the ELBO
    it reports alongside), after one untimed call that traces the batch shape.
  * svi: `optimize_posterior(model, x, "diag", steps=100, tolerance=None)`, examples/s of
    100 Adam steps on each example's own Gaussian q*(z|x), after an untimed tracing call.
  * matmul peak: the best float32 rate of an n x n x n `tf.matmul` (n=4096) on this machine.

FLOPs are counted from the network's dense layers, multiply-adds as 2 FLOPs, matmuls only
(biases, activations, the likelihood and the optimizer are not counted, so the fraction
of peak is a lower bound on the work done):
  forward F = sum over layers 2 * fan_in * fan_out        (encoder E + decoder D)
  train     = 3F - 2 * fan_in * fan_out of the first encoder layer (no gradient w.r.t. x)
  iwae-eval = E + k * D
  svi       = E + steps * samples * 2D   (forward, and backward to z only: the weights are
              fixed, so their gradients are never formed)

With --vs-torch, rounds alternate with `../shared/bench/torch_reference.py` (same model,
same batch, same number of steps) run in a subprocess; each side's figure is the median of
its rounds and the ratio is tfvae's median over torch's. Shared machines drift, so only
ratios measured in the same run mean anything. Each round also records the CPU that other
processes used meanwhile (`other_cpu_cores`, from /proc/stat); rounds above 0.2 of a core
are flagged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REFERENCE_PRESET = "vae_reference_bmnist"
REFERENCE_LAYERS = [(784, 512), (512, 256), (256, 64), (32, 256), (256, 512), (512, 784)]
BUSY_ELSEWHERE = 0.2      # cores used by other processes above which a round is flagged
PRECISIONS = ("float32", "mixed_bfloat16")


# ----------------------------------------------------------------------------- FLOPs
def dense_layers(net) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every Dense layer of a network body, in call order."""
    import keras
    return [(int(layer.kernel.shape[0]), int(layer.kernel.shape[1]))
            for layer in net._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Dense)]


def flops_per_example(model) -> dict:
    """Matmul FLOPs per example of the model's encoder and decoder (see the module doc)."""
    encoder, decoder = dense_layers(model.encoder_net), dense_layers(model.decoder_net)
    if not encoder or not decoder:
        raise ValueError("FLOP counting needs dense encoder and decoder networks (an MLP model)")
    e = sum(2 * i * o for i, o in encoder)
    d = sum(2 * i * o for i, o in decoder)
    return {"encoder": e, "decoder": d, "forward": e + d,
            "train": 3 * (e + d) - 2 * encoder[0][0] * encoder[0][1]}


def iwae_flops(flops: dict, k: int) -> int:
    return flops["encoder"] + k * flops["decoder"]


def svi_flops(flops: dict, steps: int, samples: int) -> int:
    return flops["encoder"] + steps * samples * 2 * flops["decoder"]


# ----------------------------------------------------------------------------- timing
class OtherLoad:
    """CPU cores used by other processes while the block runs: all busy CPU time (from
    /proc/stat) minus this process's and its waited-for children's, per wall second
    (None where /proc/stat is unavailable)."""

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


def peak_rss_gib() -> float:
    """Peak resident memory of this process, GiB: VmHWM from /proc/self/status, which
    starts afresh at exec. (ru_maxrss does not: Linux carries it over from the parent, so a
    benchmark started from a 4 GiB process would report 4 GiB. It is the fallback where
    /proc is missing.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20          # kB
    except (OSError, ValueError, IndexError):
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def matmul_peak(n: int = 4096, repeats: int = 3, dtype: str = "float32") -> float:
    """Best rate, GFLOP/s, of an n x n x n matmul in TensorFlow (2 n^3 FLOPs), after a warm-up."""
    import tensorflow as tf
    a = tf.cast(tf.random.stateless_uniform([n, n], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_uniform([n, n], seed=[3, 4]), dtype)
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1]))
    product(a, b).numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------- the PyTorch side
def default_reference() -> Path:
    shared = os.environ.get("TFVAE_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parent.parent.parent / "shared"
    return root / "bench" / "torch_reference.py"


class TorchReference:
    """Runs `torch_reference.py MODE ...` in a subprocess; returns its examples/s."""

    def __init__(self, script: Path):
        import importlib.util
        if not Path(script).is_file():
            raise ValueError(f"the PyTorch reference is not at {script}; pass --torch-reference PATH "
                             f"or set TFVAE_SHARED to the shared directory")
        if importlib.util.find_spec("torch") is None:
            raise ValueError(f"PyTorch is not installed for {sys.executable}; the reference needs it: "
                             f"pip install torch==2.13.0")
        self.script = Path(script)
        self.info = {}

    def run(self, mode: str, **options) -> float:
        command = [sys.executable, str(self.script), mode] + [
            a for key, value in options.items() for a in (f"--{key}", str(value))]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the PyTorch reference failed ({' '.join(command)}):\n{proc.stderr.strip()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        self.info = {"torch": result.get("torch"), "threads": result.get("threads")}
        return float(result["examples_per_s"])


# ----------------------------------------------------------------------------- data
def reference_data(data_dir: str | None, examples: int, split: str):
    """(images [N, 28, 28, 1] float32, source): binarized MNIST from `data_dir` when given,
    else the reference's random binary images (throughput does not depend on the values)."""
    import numpy as np
    if data_dir:
        from tfvae.data.arrays import load_arrays
        images, _ = load_arrays("binarized_mnist", split, data_dir, download=False)
        return images[:examples], f"binarized_mnist {split} ({data_dir})"
    images = (np.random.default_rng(0).random((examples, 28, 28, 1)) > 0.5).astype("float32")
    return images, "random binary images (as torch_reference.py; pass --data-dir for binarized MNIST)"


def training_stream(images, batch_size: int, seed: int = 0):
    """The training input: shuffled every pass, batched, repeated, prefetched. One iterator
    serves the whole of `fit` (steps_per_epoch), so no epoch pays for a new one."""
    import tensorflow as tf
    return (tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed)
            .batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE))


# ----------------------------------------------------------------------------- measurements
def _median_row(name, setting, rates, flops, peak, torch_rates=None, loads=None):
    row = {"name": name, **setting, "examples_per_s": statistics.median(rates), "rounds": rates,
           "flops_per_example": flops}
    row["gflops"] = row["examples_per_s"] * flops / 1e9
    row["fraction_of_peak"] = row["gflops"] / peak
    if torch_rates:
        row["torch_examples_per_s"] = statistics.median(torch_rates)
        row["torch_rounds"] = torch_rates
        row["ratio"] = row["examples_per_s"] / row["torch_examples_per_s"]
    if loads:
        row["other_cpu_cores"] = loads
    return row


def bench_train(images, batch_size, steps, rounds, precision, peak, torch=None, training=None, log=print):
    """Examples/s of `fit` on the reference preset (its training section, with `training`
    overrides); with `torch`, a torch round after each epoch."""
    import dataclasses

    import keras

    from tfvae.config import validate
    from tfvae.presets import TrainingSection, build_model, compile_model, load_preset
    preset = load_preset(REFERENCE_PRESET)
    settings = dataclasses.replace(preset.training, batch_size=batch_size,
                                   **validate(TrainingSection, training or {}, "training overrides", False))
    keras.utils.set_random_seed(0)
    model = build_model(preset.model, precision=precision)
    compile_model(model, settings)
    flops = flops_per_example(model)["train"]
    rates, torch_rates, loads = [], [], []
    state = {}

    class Rounds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            state["load"] = OtherLoad().__enter__()

        def on_epoch_end(self, epoch, logs=None):
            load = state["load"]
            load.__exit__(None, None, None)
            if epoch == 0:
                log(f"  train b={batch_size} {precision}: warm-up epoch (tracing) {load.seconds:.1f} s")
                return
            rates.append(steps * batch_size / load.seconds)
            loads.append({"tfvae": load.cores})
            message = f"  train b={batch_size} {precision} round {epoch}/{rounds}: tfvae {rates[-1]:,.0f} ex/s"
            if torch is not None:
                rate = _reference_round(torch, torch_rates, loads, "train", batch=batch_size, steps=steps)
                message += f", torch {rate:,.0f} ex/s"
            log(message + _load_note(loads[-1]))

    model.fit(training_stream(images, batch_size), epochs=rounds + 1, steps_per_epoch=steps, verbose=0,
              callbacks=[Rounds()], shuffle=False)   # the stream shuffles
    setting = {"batch_size": batch_size, "precision": precision,
               "steps_per_execution": settings.steps_per_execution, "jit_compile": settings.jit_compile}
    return model, _median_row("train", setting, rates, flops, peak, torch_rates, loads)


def bench_iwae_eval(model, images, k, batch_size, rounds, peak, torch=None, log=print):
    """Examples/s of `tfvae.evaluate` at k importance samples, tracing excluded."""
    from tfvae.inference.evaluate import evaluate
    examples = len(images)
    for size in {batch_size, examples % batch_size} - {0}:      # trace every batch shape, untimed
        evaluate(model, images[:size], k=k, batch_size=size, verbose=False)
    rates, torch_rates, loads = [], [], []
    for r in range(rounds):
        with OtherLoad() as load:
            report = evaluate(model, images, k=k, batch_size=batch_size, verbose=False)
        rates.append(examples / load.seconds)
        loads.append({"tfvae": load.cores})
        message = f"  iwae-eval k={k} round {r + 1}/{rounds}: tfvae {rates[-1]:.1f} ex/s"
        if torch is not None:
            rate = _reference_round(torch, torch_rates, loads, "iwae-eval", k=k, examples=examples)
            message += f", torch {rate:.1f} ex/s"
        log(message + _load_note(loads[-1]))
    row = _median_row("iwae-eval", {"k": k, "batch_size": batch_size, "examples": examples}, rates,
                      iwae_flops(flops_per_example(model), k), peak, torch_rates, loads)
    row["log_px"] = report["log_px"]
    row["peak_rss_gib"] = peak_rss_gib()
    return row


def bench_svi(model, images, steps, samples, rounds, peak, log=print):
    """Examples/s of per-example posterior optimisation (diagonal Gaussian, fixed budget)."""
    from tfvae.inference.optimize import optimize_posterior
    options = dict(family="diag", steps=steps, samples=samples, tolerance=None)
    optimize_posterior(model, images, **options)       # traces
    rates = []
    for r in range(rounds):
        with OtherLoad() as load:
            optimize_posterior(model, images, **options)
        rates.append(len(images) / load.seconds)
        log(f"  svi {steps} steps round {r + 1}/{rounds}: {rates[-1]:.1f} ex/s" + _load_note({"tfvae": load.cores}))
    return _median_row("svi", {"steps": steps, "samples": samples, "examples": len(images)}, rates,
                       svi_flops(flops_per_example(model), steps, samples), peak)


def _reference_round(torch, rates, loads, mode, **options) -> float:
    """One PyTorch round after a tfvae round: appends its examples/s to `rates` and the CPU
    other processes used meanwhile to `loads[-1]` (the tfvae round's entry); returns the rate."""
    with OtherLoad() as load:
        rates.append(torch.run(mode, **options))
    loads[-1]["torch"] = load.cores
    return rates[-1]


def _load_note(loads: dict) -> str:
    busy = [f"{side} {cores:.2f}" for side, cores in loads.items() if cores is not None and cores > BUSY_ELSEWHERE]
    return f"  [busy machine: other processes used {', '.join(busy)} cores]" if busy else ""


# ----------------------------------------------------------------------------- report
def format_table(result: dict) -> str:
    peak = result["matmul_peak_gflops"]
    lines = [f"float32 matmul peak: {peak:.0f} GFLOP/s (n={result['matmul_n']}); "
             f"{result['cpu_count']} CPUs; data: {result['data']}",
             f"{'benchmark':<40} {'tfvae ex/s':>11} {'GFLOP/s':>8} {'of peak':>8} {'torch ex/s':>11} {'ratio':>6}"]
    for row in result["results"]:
        if row["name"] == "train":
            label = f"train  batch {row['batch_size']} {row['precision']}"
            if row["steps_per_execution"] > 1 or row["jit_compile"]:
                label += f" spe={row['steps_per_execution']}" + (" xla" if row["jit_compile"] else "")
        elif row["name"] == "iwae-eval":
            label = f"iwae-eval  k={row['k']} batch {row['batch_size']}"
        else:
            label = f"svi  {row['steps']} steps x {row['samples']} samples"
        torch = f"{row['torch_examples_per_s']:>11,.1f}" if "torch_examples_per_s" in row else f"{'-':>11}"
        ratio = f"{row['ratio']:>6.2f}" if "ratio" in row else f"{'-':>6}"
        lines.append(f"{label:<40} {row['examples_per_s']:>11,.1f} {row['gflops']:>8.1f} "
                     f"{row['fraction_of_peak']:>8.0%} {torch} {ratio}")
    for row in result["results"]:
        if row["name"] == "iwae-eval":
            lines.append(f"iwae-eval peak resident memory: {row['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def run(benchmarks=("train", "iwae-eval", "svi"), batch_sizes=(128, 512), precisions=("float32",),
        train_examples=51200, rounds=5, k=5000, eval_examples=20, eval_batch_size=20, svi_examples=100,
        svi_steps=100, svi_samples=8, vs_torch=False, torch_reference=None, data_dir=None, matmul_n=4096,
        training=None, log=print) -> dict:
    """Runs the benchmarks and returns the result dict (what `main` prints and writes)."""
    import tensorflow as tf

    from tfvae.version import versions
    for name in benchmarks:
        if name not in ("train", "iwae-eval", "svi"):
            raise ValueError(f"unknown benchmark {name!r}; choose from train, iwae-eval, svi")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    torch = TorchReference(torch_reference or default_reference()) if vs_torch else None
    log(f"matmul peak: {matmul_n}^3 float32 matmuls")
    peak = matmul_peak(matmul_n)
    images, source = reference_data(data_dir, train_examples, "train")
    results, model = [], None
    if "train" in benchmarks:
        for precision in precisions:
            for b in batch_sizes:
                steps = max(1, train_examples // b)
                model, row = bench_train(images, b, steps, rounds, precision, peak, torch, training, log)
                results.append(row)
    if model is None or model.precision != "float32":
        from tfvae.presets import from_preset
        model = from_preset(REFERENCE_PRESET)
    if "iwae-eval" in benchmarks:
        test, _ = reference_data(data_dir, eval_examples, "test")
        results.append(bench_iwae_eval(model, test, k, min(eval_batch_size, eval_examples), rounds, peak, torch, log))
    if "svi" in benchmarks:
        test, _ = reference_data(data_dir, svi_examples, "test")
        results.append(bench_svi(model, test, svi_steps, svi_samples, rounds, peak, log))
    return {"matmul_peak_gflops": peak, "matmul_n": matmul_n, "cpu_count": os.cpu_count(), "data": source,
            "results": results, "preset": REFERENCE_PRESET,
            "threads": {"tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                        "torch": torch.info.get("threads") if torch else None},
            "versions": {**versions(), "platform": platform.platform(),
                         "torch": torch.info.get("torch") if torch else None}}


def _key_value(text: str):
    import yaml
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. steps_per_execution=10), got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tfvae bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=["train", "iwae-eval", "svi"],
                   help="run only this benchmark (repeatable; default: all three)")
    p.add_argument("--vs-torch", action="store_true", help="alternate rounds with the PyTorch reference loop")
    p.add_argument("--torch-reference", type=Path,
                   help="path of torch_reference.py (default: $TFVAE_SHARED/bench, else ../shared/bench)")
    p.add_argument("--batch-size", type=int, action="append", help="training batch (repeatable; default: 128 and 512)")
    p.add_argument("--precision", action="append", choices=PRECISIONS,
                   help="training precision (repeatable; default: float32)")
    p.add_argument("--training", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="override a training setting of the preset, e.g. steps_per_execution=10 or "
                        "jit_compile=true (repeatable)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per benchmark (default: 5; medians)")
    p.add_argument("--train-examples", type=int, default=51200,
                   help="examples per training round (default: 51,200: 400 steps at batch 128)")
    p.add_argument("--k", type=int, default=5000, help="importance samples of iwae-eval (default: 5000)")
    p.add_argument("--eval-examples", type=int, default=20, help="examples per iwae-eval round (default: 20)")
    p.add_argument("--eval-batch-size", type=int, default=20, help="examples per evaluate batch (default: 20)")
    p.add_argument("--svi-examples", type=int, default=100, help="examples optimised at once (default: 100)")
    p.add_argument("--svi-steps", type=int, default=100, help="optimisation steps (default: 100)")
    p.add_argument("--data-dir", help="binarized MNIST's folder (default: random binary images, as the reference)")
    p.add_argument("--matmul-n", type=int, default=4096, help="size of the peak-rate matmul (default: 4096)")
    p.add_argument("--out", default="benchmark.json", help="JSON result path (default: benchmark.json)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("rounds", "train_examples", "k", "eval_examples", "eval_batch_size", "svi_examples",
                 "svi_steps", "matmul_n"):
        if getattr(args, name) < 1:
            print(f"tfvae bench: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if any(b < 1 for b in args.batch_size or ()):
        print("tfvae bench: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def log(message):
        print(message, file=sys.stderr, flush=True)
    try:
        result = run(benchmarks=tuple(args.only or ("train", "iwae-eval", "svi")),
                     batch_sizes=tuple(args.batch_size or (128, 512)),
                     precisions=tuple(args.precision or ("float32",)), train_examples=args.train_examples,
                     rounds=args.rounds, k=args.k, eval_examples=args.eval_examples,
                     eval_batch_size=args.eval_batch_size, svi_examples=args.svi_examples,
                     svi_steps=args.svi_steps, vs_torch=args.vs_torch, torch_reference=args.torch_reference,
                     data_dir=args.data_dir, matmul_n=args.matmul_n, training=dict(args.training or []), log=log)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"tfvae bench: error: {e}", file=sys.stderr)
        return 2
    from tfvae.io import atomic_write_text
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"Wrote {args.out}")
    return 0
