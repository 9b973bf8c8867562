"""`tfvae bench` / `scripts/benchmark.py`: throughput of training and evaluation, against
the machine's matmul rate and, with `--vs-torch`, against the PyTorch reference loop.

Every figure goes through the package's public path:
  * train: the preset's model (`vae_reference_bmnist` at batch 128 and 512 by default; any zoo
    preset with `--preset NAME`, at its own batch size or at each `--batch-size`) compiled
    with its training section + Keras `fit` on a repeating `tf.data` stream, examples/s of
    each epoch of `steps` steps; the first epoch (tracing) is not counted. Also reported: the
    median milliseconds per step.
  * lean (next to train): for a plain `vae` with MLP networks, a Bernoulli likelihood and no
    condition, in float32, the same network trained by `tfvae.lean_step` (hand-written
    TensorFlow, XLA, 10 steps per call, nothing from tfvae) for the same steps at the same
    batch; `vs_lean` = tfvae / lean is what the library costs. `--no-lean` skips it.
  * iwae-eval: `tfvae.evaluate(model, x, k=5000)`, examples/s of log p(x) (and the ELBO
    it reports alongside), after one untimed call that traces the batch shape.
  * svi: `optimize_posterior(model, x, "diag", steps=100, tolerance=None)`, examples/s of
    100 Adam steps on each example's own Gaussian q*(z|x), after an untimed tracing call.
  * matmul peak: the best float32 rate of an n x n x n `tf.matmul` (n=4096) on this machine.

FLOPs are counted from the network's dense layers, multiply-adds as 2 FLOPs, matmuls only
(biases, activations, the likelihood and the optimizer are not counted, so the fraction
of peak is a lower bound on the work done; networks with other weighted layers, e.g. conv
presets, get no count, and their GFLOP/s and fraction of peak are None, printed "-"):
  forward F = sum over layers 2 * fan_in * fan_out        (encoder E + decoder D)
  train     = 3F - 2 * fan_in * fan_out of the first encoder layer (no gradient w.r.t. x)
  iwae-eval = E + k * D
  svi       = E + steps * samples * 2D   (forward, and backward to z only: the weights are
              fixed, so their gradients are never formed)

With --vs-torch, rounds alternate (tfvae, lean, torch, tfvae, ...) with
`../shared/bench/torch_reference.py` (same network, same batch, same number of steps) run in
a subprocess, for the presets the lean step applies to whose activation is relu or tanh;
each side's figure is the median of its rounds, `ratio` (printed "vs torch") is tfvae's
median over torch's. Shared machines drift, so only ratios measured in the same run mean
anything. Each round also records the CPU that other processes used meanwhile, per side
(`other_cpu_cores`, from /proc/stat); rounds above 0.2 of a core are flagged.
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
    """(fan_in, fan_out) of every Dense layer of a network body, in call order; ValueError
    when the body has a layer with weights that is not Dense (a convolution, say), whose
    work the count would miss."""
    import keras
    leaves = [layer for layer in net._flatten_layers(include_self=False)
              if not list(layer._flatten_layers(include_self=False))]
    other = [type(layer).__name__ for layer in leaves if layer.weights and not isinstance(layer, keras.layers.Dense)]
    if other:
        raise ValueError(f"FLOP counting needs dense networks; {net.name} has {', '.join(sorted(set(other)))}")
    return [(int(layer.kernel.shape[0]), int(layer.kernel.shape[1]))
            for layer in leaves if isinstance(layer, keras.layers.Dense)]


def flops_per_example(model) -> dict:
    """Matmul FLOPs per example of the model's encoder and decoder (see the module doc);
    ValueError for networks that are not all Dense layers."""
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


# ----------------------------------------------------------------------------- the lean side
TORCH_ACTIVATIONS = ("relu", "tanh")     # what torch_reference.py's --activation accepts
LEAN_OPTIONS = {"steps_per_call": 10, "jit_compile": True}    # of tfvae.lean_step.LeanVAEStep


def lean_network(model_config) -> dict | None:
    """The network of `tfvae.lean_step` that trains the same model as a preset's model
    config (`preset.model`, {"class": ..., ...}), or None when there is none: the model must
    be the plain `vae` (closed-form KL, no condition) with MLP encoder and decoder of one
    activation, which `tf.nn` has, and a Bernoulli likelihood. Returns {"hidden": encoder
    widths, "decoder_hidden": decoder widths (a `decoder: null` config repeats the encoder's
    in the same order), "latent", "activation", "data_dim": pixels per example}."""
    import tensorflow as tf

    from tfvae.config import validate
    from tfvae.distributions import LIKELIHOODS, normalize_spec
    from tfvae.nets import normalize_net_spec
    from tfvae.registry import get_model_class
    config = dict(model_config)
    if config.pop("class", None) != "vae":
        return None
    args = validate(get_model_class("vae"), config, "model 'vae'")
    encoder = normalize_net_spec(args["encoder"])
    decoder = encoder if args["decoder"] is None else normalize_net_spec(args["decoder"])
    likelihood = normalize_spec(args["likelihood"], LIKELIHOODS, "likelihood")
    if (args["condition_dim"] or args["kl"] != "analytic" or likelihood["type"] != "bernoulli"
            or encoder["type"] != "mlp" or decoder["type"] != "mlp" or decoder["activation"] != encoder["activation"]
            or not callable(getattr(tf.nn, encoder["activation"], None))):
        return None
    return {"hidden": [int(w) for w in encoder["hidden"]], "decoder_hidden": [int(w) for w in decoder["hidden"]],
            "latent": int(args["latent_dim"]), "activation": encoder["activation"],
            "data_dim": math.prod(args["data_shape"])}


def torch_options(network: dict | None) -> dict | None:
    """`torch_reference.py train` options that build a lean network, or None when the
    reference cannot: it takes 784 pixels, mirrored widths (the decoder's reverse the
    encoder's), at least one hidden layer, and relu or tanh."""
    if (network is None or network["data_dim"] != 784 or not network["hidden"]
            or network["decoder_hidden"] != network["hidden"][::-1] or network["activation"] not in TORCH_ACTIVATIONS):
        return None
    return {"hidden": ",".join(str(w) for w in network["hidden"]), "latent": network["latent"],
            "activation": network["activation"]}


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
    return images, "random binary images (as torch_reference.py, or --data-dir for binarized MNIST)"


def preset_data(data_shape, condition_dim: int, data_dir: str | None, examples: int, split: str):
    """(images [N, *data_shape], conditions [N, condition_dim] or None, source) to train a
    model on: the reference's data (`reference_data`) for 784-pixel models, else random
    binary images of the model's shape; random one-hot conditions for a conditional model."""
    import numpy as np
    data_shape = tuple(data_shape)
    if math.prod(data_shape) == 784:
        images, source = reference_data(data_dir, examples, split)
        images = images.reshape(len(images), *data_shape)
    else:
        images = (np.random.default_rng(0).random((examples, *data_shape)) > 0.5).astype("float32")
        source = f"random binary images of shape {data_shape}"
    if not condition_dim:
        return images, None, source
    labels = np.random.default_rng(1).integers(condition_dim, size=len(images))
    return images, np.eye(condition_dim, dtype="float32")[labels], f"{source}; random one-hot conditions"


def training_stream(images, batch_size: int, seed: int = 0, conditions=None):
    """The training input, as `train` reads it: an endless stream of shuffled passes, batched
    and prefetched; (x, c) pairs when `conditions` are given. One iterator serves the whole
    of `fit` (steps_per_epoch), so no epoch pays for a new one."""
    import tensorflow as tf

    from tfvae.data.pipeline import batches
    elements = images if conditions is None else (images, conditions)
    return batches(elements, batch_size, shuffle=True, seed=seed, stream_from=0).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- measurements
def _median_row(name, setting, rates, flops, peak, torch_rates=None, loads=None):
    """A result row: the median of `rates`, its GFLOP/s and fraction of `peak` (None without
    a FLOP count), and the torch median and ratio (tfvae / torch) when there are torch rounds."""
    row = {"name": name, **setting, "examples_per_s": statistics.median(rates), "rounds": rates,
           "flops_per_example": flops}
    row["gflops"] = None if flops is None else row["examples_per_s"] * flops / 1e9
    row["fraction_of_peak"] = None if flops is None else row["gflops"] / peak
    if torch_rates:
        row["torch_examples_per_s"] = statistics.median(torch_rates)
        row["torch_rounds"] = torch_rates
        row["ratio"] = row["examples_per_s"] / row["torch_examples_per_s"]
    if loads:
        row["other_cpu_cores"] = loads
    return row


def ms_per_step(rates, batch_size: int) -> float:
    """The median over rounds of the milliseconds one step took, 1000 * batch / (examples/s)."""
    return statistics.median(1000 * batch_size / rate for rate in rates)


def train_flops(model) -> int | None:
    """Matmul FLOPs of one training example, or None for networks that are not all dense."""
    try:
        return flops_per_example(model)["train"]
    except ValueError:
        return None


def bench_train(preset, data, batch_size, steps, rounds, precision, peak, torch=None, training=None, lean=True,
                log=print):
    """Examples/s of `fit` on `preset`'s model (its training section at `batch_size`, with
    `training` overrides) on `data(model)` = (images, conditions or None). After each epoch
    come a lean round (when `lean`, in float32, for a model `lean_network` covers) and a
    torch round (with `torch`, for a network `torch_options` covers), each of the same
    `steps` steps at the same batch."""
    import dataclasses

    import keras

    from tfvae.config import validate
    from tfvae.presets import TrainingSection, build_model, compile_model
    settings = dataclasses.replace(preset.training, batch_size=batch_size,
                                   **validate(TrainingSection, training or {}, "training overrides", False))
    keras.utils.set_random_seed(0)
    model = build_model(preset.model, precision=precision)
    compile_model(model, settings)
    images, conditions = data(model)
    tag = f"train{_preset_label(preset.name)} b={batch_size} {precision}"
    network = lean_network(preset.model)
    sides = []            # (name, measure, rates) of the rounds after each tfvae round, in order
    if lean and network is not None and precision == "float32":
        from tfvae.lean_step import LeanBenchmark
        lean_bench = LeanBenchmark(images, batch_size, learning_rate=settings.learning_rate, **network,
                                   **LEAN_OPTIONS)
        log(f"  {tag}: lean warm-up (tracing, compiling) {lean_bench.warm_up(steps):.1f} s")
        sides.append(("lean", lambda: lean_bench.round(steps), []))
    options = torch_options(network)
    if torch is not None and options is not None:
        sides.append(("torch", lambda: torch.run("train", **options, batch=batch_size, steps=steps), []))
    rates, loads, state = [], [], {}

    class Rounds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            state["load"] = OtherLoad().__enter__()

        def on_epoch_end(self, epoch, logs=None):
            load = state["load"]
            load.__exit__(None, None, None)
            if epoch == 0:
                log(f"  {tag}: warm-up epoch (tracing) {load.seconds:.1f} s")
                return
            rates.append(steps * batch_size / load.seconds)
            loads.append({"tfvae": load.cores})
            message = f"  {tag} round {epoch}/{rounds}: tfvae {rates[-1]:,.0f} ex/s"
            for name, measure, side_rates in sides:
                message += f", {name} {_side_round(name, measure, side_rates, loads):,.0f} ex/s"
            log(message + _load_note(loads[-1]))

    model.fit(training_stream(images, batch_size, conditions=conditions), epochs=rounds + 1, steps_per_epoch=steps,
              verbose=0, callbacks=[Rounds()], shuffle=False)   # the stream shuffles
    setting = {"preset": preset.name, "batch_size": batch_size, "steps": steps, "precision": precision,
               "steps_per_execution": settings.steps_per_execution, "jit_compile": settings.jit_compile}
    measured = {name: side_rates for name, _, side_rates in sides}
    row = _median_row("train", setting, rates, train_flops(model), peak, measured.get("torch"), loads)
    row["ms_per_step"] = ms_per_step(rates, batch_size)
    if "lean" in measured:
        lean_rates = measured["lean"]
        row.update(lean_examples_per_s=statistics.median(lean_rates), lean_rounds=lean_rates,
                   lean_ms_per_step=ms_per_step(lean_rates, batch_size),
                   lean={**network, **LEAN_OPTIONS})
        row["vs_lean"] = row["examples_per_s"] / row["lean_examples_per_s"]
    return model, row


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
            rate = _side_round("torch", lambda: torch.run("iwae-eval", k=k, examples=examples), torch_rates, loads)
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


def _side_round(side, measure, rates, loads) -> float:
    """One round of another side (lean, torch) after a tfvae round: appends `measure()`'s
    examples/s to `rates` and the CPU other processes used meanwhile to `loads[-1]` (the
    tfvae round's entry), under the side's name; returns the rate."""
    with OtherLoad() as load:
        rates.append(measure())
    loads[-1][side] = load.cores
    return rates[-1]


def _load_note(loads: dict) -> str:
    busy = [f"{side} {cores:.2f}" for side, cores in loads.items() if cores is not None and cores > BUSY_ELSEWHERE]
    return f"  [busy machine: other processes used {', '.join(busy)} cores]" if busy else ""


# ----------------------------------------------------------------------------- report
def _preset_label(name: str) -> str:
    """' NAME' for a preset other than the reference one, whose rows carry no name."""
    return "" if name == REFERENCE_PRESET else f" {name}"


def row_label(row: dict) -> str:
    if row["name"] == "train":
        name = _preset_label(row.get("preset", REFERENCE_PRESET))
        label = f"train{name}  batch {row['batch_size']} {row['precision']}"
        if row["steps_per_execution"] > 1 or row["jit_compile"]:
            label += f" spe={row['steps_per_execution']}" + (" xla" if row["jit_compile"] else "")
        return label
    if row["name"] == "iwae-eval":
        return f"iwae-eval  k={row['k']} batch {row['batch_size']}"
    return f"svi  {row['steps']} steps x {row['samples']} samples"


def _cell(value, width: int, spec: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_table(result: dict) -> str:
    peak = result["matmul_peak_gflops"]
    labels = [row_label(row) for row in result["results"]]
    width = max([40, *(len(label) + 1 for label in labels)])
    lines = [f"float32 matmul peak: {peak:.0f} GFLOP/s (n={result['matmul_n']}); "
             f"{result['cpu_count']} CPUs; data: {result['data']}",
             f"{'benchmark':<{width}} {'tfvae ex/s':>11} {'GFLOP/s':>8} {'of peak':>8} {'lean ex/s':>11} "
             f"{'vs lean':>7} {'torch ex/s':>11} {'vs torch':>8}"]
    for label, row in zip(labels, result["results"]):
        lines.append(f"{label:<{width}} {row['examples_per_s']:>11,.1f} {_cell(row['gflops'], 8, '.1f')} "
                     f"{_cell(row['fraction_of_peak'], 8, '.0%')} {_cell(row.get('lean_examples_per_s'), 11, ',.1f')} "
                     f"{_cell(row.get('vs_lean'), 7, '.2f')} {_cell(row.get('torch_examples_per_s'), 11, ',.1f')} "
                     f"{_cell(row.get('ratio'), 8, '.2f')}")
    for label, row in zip(labels, result["results"]):
        if row["name"] == "train":
            lean = f" (lean {row['lean_ms_per_step']:.2f})" if "lean_ms_per_step" in row else ""
            lines.append(f"{label}: {row['ms_per_step']:.2f} ms per step{lean}")
        elif row["name"] == "iwae-eval":
            lines.append(f"iwae-eval peak resident memory: {row['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def run(benchmarks=("train", "iwae-eval", "svi"), batch_sizes=None, precisions=("float32",), presets=(),
        train_examples=51200, rounds=5, k=5000, eval_examples=20, eval_batch_size=20, svi_examples=100,
        svi_steps=100, svi_samples=8, vs_torch=False, torch_reference=None, data_dir=None, matmul_n=4096,
        training=None, lean=True, log=print) -> dict:
    """Runs the benchmarks and returns the result dict (what `main` prints and writes).

    Training rows: each of `presets` at each of `batch_sizes` (None: the preset's own
    batch), or without presets the reference preset at each of `batch_sizes` (None: 128 and
    512). iwae-eval and svi always run on the reference preset's model."""
    import tensorflow as tf

    from tfvae.config import validate
    from tfvae.presets import TrainingSection, from_preset, load_preset
    from tfvae.version import versions
    for name in benchmarks:
        if name not in ("train", "iwae-eval", "svi"):
            raise ValueError(f"unknown benchmark {name!r}; choose from train, iwae-eval, svi")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    training = dict(training or {})
    if "batch_size" in training:
        raise ValueError("set the training batch with --batch-size, not --training batch_size")
    validate(TrainingSection, training, "training overrides", False)
    if presets:
        plan = [(preset, b) for preset in map(load_preset, presets)
                for b in batch_sizes or (preset.training.batch_size,)]
    else:
        plan = [(load_preset(REFERENCE_PRESET), b) for b in batch_sizes or (128, 512)]
    torch = TorchReference(torch_reference or default_reference()) if vs_torch else None
    log(f"matmul peak: {matmul_n}^3 float32 matmuls")
    peak = matmul_peak(matmul_n)
    sources, cache = [], {}

    def data(model):
        key = (tuple(model.data_shape), model.condition_dim)
        if key not in cache:
            images, conditions, source = preset_data(*key, data_dir, train_examples, "train")
            cache[key] = images, conditions
            sources.extend(source.split("; "))
        return cache[key]

    results, model = [], None
    if "train" in benchmarks:
        for precision in precisions:
            for preset, b in plan:
                steps = max(1, train_examples // b)
                trained, row = bench_train(preset, data, b, steps, rounds, precision, peak, torch, training, lean, log)
                results.append(row)
                if preset.name == REFERENCE_PRESET and precision == "float32":
                    model = trained
    if model is None and ("iwae-eval" in benchmarks or "svi" in benchmarks):
        model = from_preset(REFERENCE_PRESET, pretrained=False)     # speed: any weights do
    if "iwae-eval" in benchmarks:
        test, source = reference_data(data_dir, eval_examples, "test")
        sources.append(source)
        results.append(bench_iwae_eval(model, test, k, min(eval_batch_size, eval_examples), rounds, peak, torch, log))
    if "svi" in benchmarks:
        test, source = reference_data(data_dir, svi_examples, "test")
        sources.append(source)
        results.append(bench_svi(model, test, svi_steps, svi_samples, rounds, peak, log))
    return {"matmul_peak_gflops": peak, "matmul_n": matmul_n, "cpu_count": os.cpu_count(),
            "data": "; ".join(dict.fromkeys(sources)), "results": results, "preset": REFERENCE_PRESET,
            "train_presets": list(dict.fromkeys(preset.name for preset, _ in plan)) if "train" in benchmarks else [],
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
    p.add_argument("--preset", action="append", metavar="NAME",
                   help="train this zoo preset's model with its training section, at its own batch size or "
                        "at each --batch-size (repeatable; default: the reference network, vae_reference_bmnist)")
    p.add_argument("--vs-torch", action="store_true", help="alternate rounds with the PyTorch reference loop")
    p.add_argument("--torch-reference", type=Path,
                   help="path of torch_reference.py (default: $TFVAE_SHARED/bench, else ../shared/bench)")
    p.add_argument("--no-lean", action="store_true",
                   help="skip the lean rounds (the same network in hand-written TensorFlow, tfvae.lean_step)")
    p.add_argument("--batch-size", type=int, action="append",
                   help="training batch (repeatable; default: 128 and 512 for the reference network, "
                        "each preset's own with --preset)")
    p.add_argument("--precision", action="append", choices=PRECISIONS,
                   help="training precision (repeatable; default: float32)")
    p.add_argument("--training", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="override a training setting of the preset(s), e.g. steps_per_execution=10 or "
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
                     batch_sizes=tuple(args.batch_size) if args.batch_size else None,
                     precisions=tuple(args.precision or ("float32",)), presets=tuple(args.preset or ()),
                     train_examples=args.train_examples, rounds=args.rounds, k=args.k,
                     eval_examples=args.eval_examples, eval_batch_size=args.eval_batch_size,
                     svi_examples=args.svi_examples, svi_steps=args.svi_steps, vs_torch=args.vs_torch,
                     torch_reference=args.torch_reference, data_dir=args.data_dir, matmul_n=args.matmul_n,
                     training=dict(args.training or []), lean=not args.no_lean, log=log)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"tfvae bench: error: {e}", file=sys.stderr)
        return 2
    from tfvae.io import atomic_write_text
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"Wrote {args.out}")
    return 0
