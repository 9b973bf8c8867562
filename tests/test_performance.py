"""The benchmark: its FLOP counts against TensorFlow's own graph profiler, its rounds
against a stand-in reference script, and the memory bound of evaluation at k=5000."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import bench
from tfvae.lean_step import LeanBenchmark, LeanVAEStep, call_sizes, examples_per_second
from tfvae.models import VAE


def reference_mlp():
    return VAE(data_shape=(784,), latent_dim=32, encoder={"type": "mlp", "hidden": [512, 256], "activation": "relu"},
               decoder={"type": "mlp", "hidden": [256, 512], "activation": "relu"})


def profiled_matmul_flops(graph) -> int:
    """FLOPs of every MatMul node in a graph, as TensorFlow's (v1) graph profiler counts them."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    options = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    options["account_type_regexes"] = ["MatMul"]
    return model_analyzer.profile(graph, options=options).total_float_ops


def test_training_flops_match_the_profiled_graph_of_train_step():
    model = reference_mlp()
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    batch = 8
    graph = tf.function(model.train_step).get_concrete_function(tf.TensorSpec([batch, 784])).graph
    flops = bench.flops_per_example(model)
    assert profiled_matmul_flops(graph) == batch * flops["train"]
    # and the closed form of the reference network: 2 * sum(fan_in * fan_out), times 3, less
    # the gradient with respect to the data
    forward = 2 * sum(i * o for i, o in bench.REFERENCE_LAYERS)
    assert flops["train"] == 3 * forward - 2 * 784 * 512 == 5_734_400


def test_iwae_flops_match_the_profiled_graph_of_importance_weights():
    model = reference_mlp()
    batch, k = 3, 7
    fn = tf.function(lambda x: model.log_weights(x, k, seed=[0, 0])["log_w"])
    graph = fn.get_concrete_function(tf.TensorSpec([batch, 784])).graph
    assert profiled_matmul_flops(graph) == batch * bench.iwae_flops(bench.flops_per_example(model), k)


def lean_and_vae():
    """A lean step and a tfvae `vae` of the same 784-8-6-(2x4) / 4-6-8-784 tanh network, the
    VAE's weights copied into the lean step's variables (both list kernel, bias per layer,
    encoder first)."""
    model = VAE(data_shape=(784,), latent_dim=4, encoder={"type": "mlp", "hidden": [8, 6], "activation": "tanh"},
                decoder={"type": "mlp", "hidden": [6, 8], "activation": "tanh"})
    lean = LeanVAEStep(hidden=(8, 6), latent=4, activation="tanh", steps_per_call=1, seed=3)
    weights = model.encoder_net.trainable_variables + model.decoder_net.trainable_variables
    assert [tuple(v.shape) for v in weights] == [tuple(v.shape) for v in lean.variables]
    for target, source in zip(lean.variables, weights):
        target.assign(source)
    return lean, model, weights


def negative_elbo(model, x, eps):
    """tfvae's loss, -mean(E_q[log p(x|z)] - KL(q || p)), with z = mu + sigma * eps."""
    q = model.encode(x)
    z = q.mean() + q.stddev() * eps
    return -tf.reduce_mean(model.decode(z).log_prob(x) - model.analytic_kl(q))


def test_lean_loss_and_gradients_equal_the_vae_negative_elbo():
    lean, model, weights = lean_and_vae()
    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((5, 784)) > 0.5).astype("float32"))
    eps = tf.constant(rng.standard_normal((5, 4)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        ours, theirs = lean.loss(x, eps), negative_elbo(model, x, eps)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    for a, b in zip(tape.gradient(ours, lean.variables), tape.gradient(theirs, weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    # the compiled step (XLA) computes the same loss, with the noise of step 0 (as XLA draws
    # it), then takes one Adam step: its first update is -lr * g / (|g| + eps) ~ -lr * sign(g)
    eps = tf.function(lean.noise, jit_compile=True)(0, 5)
    with tf.GradientTape() as tape:
        expected = lean.loss(x, eps)
    gradients = tape.gradient(expected, lean.variables)
    before = [v.numpy() for v in lean.variables]
    assert float(lean(x[None])) == pytest.approx(float(expected), rel=1e-5)
    assert int(lean.steps_done.numpy()) == 1
    kernel, g = lean.variables[0].numpy() - before[0], gradients[0].numpy()
    large = np.abs(g) > 1e-3
    np.testing.assert_allclose(kernel[large], -1e-3 * np.sign(g[large]), rtol=1e-2)


def test_lean_examples_per_second_runs_every_call_size():
    images = (np.random.default_rng(0).random((30, 784)) > 0.5).astype("float32")
    bench_ = LeanBenchmark(images, 4, hidden=(8,), latent=2, steps_per_call=3, jit_compile=False)
    assert call_sizes(7, 3) == [3, 3, 1] and call_sizes(6, 3) == [3, 3]
    bench_.warm_up(7)
    assert int(bench_.step.steps_done.numpy()) == 3 + 1        # one call of each size
    assert bench_.round(7) > 0 and int(bench_.step.steps_done.numpy()) == 4 + 7
    assert np.isfinite(bench_.last_loss)
    assert examples_per_second(images, 4, 2, hidden=(8,), latent=2, jit_compile=False) > 0


def test_lean_network_of_presets():
    from tfvae.presets import load_preset
    assert bench.lean_network(load_preset("vae_bmnist").model) == {
        "hidden": [200, 200], "decoder_hidden": [200, 200], "latent": 50, "activation": "tanh", "data_dim": 784}
    reference = bench.lean_network(load_preset(bench.REFERENCE_PRESET).model)
    assert reference["decoder_hidden"] == [256, 512]
    assert bench.torch_options(reference) == {"hidden": "512,256", "latent": 32, "activation": "relu"}
    shapes = bench.lean_network(load_preset("vae_shapes").model)      # decoder: null repeats [256, 128]
    assert shapes["decoder_hidden"] == [256, 128] and bench.torch_options(shapes) is None
    for name in ("conv_vae_bmnist", "cvae_mnist", "iwae_bmnist", "beta_vae_bmnist"):
        assert bench.lean_network(load_preset(name).model) is None, name


def test_preset_data_of_any_shape_with_conditions():
    images, conditions, source = bench.preset_data((4, 4, 2), 3, None, 5, "train")
    assert images.shape == (5, 4, 4, 2) and set(np.unique(images)) <= {0.0, 1.0}
    assert conditions.shape == (5, 3) and (conditions.sum(axis=1) == 1).all() and "one-hot" in source
    images, conditions, _ = bench.preset_data((784,), 0, None, 5, "train")     # the reference's images
    assert conditions is None and np.array_equal(images, bench.reference_data(None, 5, "train")[0].reshape(5, 784))


FAKE_REFERENCE = textwrap.dedent("""
    import json, sys
    with open(sys.argv[0] + ".calls", "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
    print(json.dumps({"mode": sys.argv[1], "examples_per_s": 1000.0 if sys.argv[1] == "train" else 2.0,
                      "torch": "fake", "threads": 2}))
""")


@pytest.fixture
def fake_reference(tmp_path):
    path = tmp_path / "torch_reference.py"
    path.write_text(FAKE_REFERENCE)
    return path


def record_rounds(monkeypatch):
    """The lean and torch rounds, in the order they run. The lean step runs without XLA
    here, whose compilation would double the tests' time (the XLA step is tested above)."""
    monkeypatch.setitem(bench.LEAN_OPTIONS, "jit_compile", False)
    events = []
    lean_round, torch_run = LeanBenchmark.round, bench.TorchReference.run
    monkeypatch.setattr(LeanBenchmark, "round", lambda self, steps: events.append("lean") or lean_round(self, steps))
    monkeypatch.setattr(bench.TorchReference, "run",
                        lambda self, mode, **o: events.append("torch") or torch_run(self, mode, **o))
    return events


def test_benchmark_alternates_with_the_lean_step_and_the_reference_and_reports_ratios(
        tmp_path, fake_reference, capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())   # "torch is installed"
    events = record_rounds(monkeypatch)
    out = tmp_path / "bench.json"
    code = bench.main(["--vs-torch", "--torch-reference", str(fake_reference), "--rounds", "2",
                       "--train-examples", "256", "--batch-size", "128", "--k", "50", "--eval-examples", "4",
                       "--eval-batch-size", "2", "--svi-examples", "3", "--svi-steps", "4", "--matmul-n", "256",
                       "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["results"]}
    assert set(rows) == {"train", "iwae-eval", "svi"}
    train, iwae, svi = rows["train"], rows["iwae-eval"], rows["svi"]
    assert train["preset"] == bench.REFERENCE_PRESET and result["preset"] == bench.REFERENCE_PRESET
    assert len(train["rounds"]) == 2 and train["torch_rounds"] == [1000.0, 1000.0]
    assert train["ratio"] == pytest.approx(train["examples_per_s"] / 1000.0)
    assert train["examples_per_s"] == pytest.approx(float(np.median(train["rounds"])))
    assert train["fraction_of_peak"] == pytest.approx(
        train["examples_per_s"] * 5_734_400 / 1e9 / result["matmul_peak_gflops"])
    assert train["ms_per_step"] == pytest.approx(float(np.median([128_000 / r for r in train["rounds"]])))
    # the lean step: the same network, same batch and steps, a round after each tfvae round
    assert len(train["lean_rounds"]) == 2 and all(r > 0 for r in train["lean_rounds"])
    assert train["lean_examples_per_s"] == pytest.approx(float(np.median(train["lean_rounds"])))
    assert train["vs_lean"] == pytest.approx(train["examples_per_s"] / train["lean_examples_per_s"])
    assert train["lean"] == {"hidden": [512, 256], "decoder_hidden": [256, 512], "latent": 32, "activation": "relu",
                             "data_dim": 784, "steps_per_call": 10, "jit_compile": False}
    # each round: tfvae, then lean, then torch (each side's load is recorded as it ends)
    assert [list(load) for load in train["other_cpu_cores"]] == [["tfvae", "lean", "torch"]] * 2
    assert events == ["lean", "torch"] * 2 + ["torch"] * 2
    assert iwae["ratio"] == pytest.approx(iwae["examples_per_s"] / 2.0) and iwae["peak_rss_gib"] > 0
    assert "ratio" not in svi and "vs_lean" not in iwae and svi["flops_per_example"] == 1_097_728 + 4 * 8 * 2 * 1_081_344
    # one reference call after each tfvae round, with the same network, batch and steps
    calls = (tmp_path / "torch_reference.py.calls").read_text().splitlines()
    assert calls == (["train --hidden 512,256 --latent 32 --activation relu --batch 128 --steps 2"] * 2
                     + ["iwae-eval --k 50 --examples 4"] * 2)
    captured = capsys.readouterr()
    assert "round 1/2: tfvae" in captured.err and ", lean " in captured.err and ", torch 1,000 ex/s" in captured.err
    table = captured.out
    assert "benchmark" in table and "lean ex/s vs lean  torch ex/s vs torch" in table
    assert "train  batch 128 float32 spe=10" in table and "iwae-eval  k=50 batch 2" in table
    assert "ms per step (lean" in table


def test_benchmark_of_a_preset_at_a_given_batch(tmp_path, fake_reference, capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    events = record_rounds(monkeypatch)
    out = tmp_path / "bench.json"
    code = bench.main(["--only", "train", "--preset", "vae_bmnist", "--batch-size", "20", "--vs-torch",
                       "--torch-reference", str(fake_reference), "--rounds", "1", "--train-examples", "60",
                       "--training", "learning_rate=0.01", "--matmul-n", "256", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    [row] = result["results"]
    assert result["train_presets"] == ["vae_bmnist"]
    assert (row["preset"], row["batch_size"], row["steps"]) == ("vae_bmnist", 20, 3)
    assert row["ratio"] == pytest.approx(row["examples_per_s"] / 1000.0) and len(row["lean_rounds"]) == 1
    assert row["lean"]["hidden"] == [200, 200] and row["lean"]["activation"] == "tanh"
    # 784-200-200-(2x50) / 50-200-200-784: 3 x forward less the data's gradient
    forward = 2 * (784 * 200 + 200 * 200 + 200 * 100) + 2 * (50 * 200 + 200 * 200 + 200 * 784)
    assert row["flops_per_example"] == 3 * forward - 2 * 784 * 200
    calls = (tmp_path / "torch_reference.py.calls").read_text().splitlines()
    assert calls == ["train --hidden 200,200 --latent 50 --activation tanh --batch 20 --steps 3"]
    assert events == ["lean", "torch"]
    assert "train vae_bmnist  batch 20 float32 spe=10" in capsys.readouterr().out


def test_conv_presets_get_no_flop_count(capsys):
    model = tfvae.from_preset("conv_vae_bmnist", compile=False)
    with pytest.raises(ValueError, match="Conv2D"):
        bench.flops_per_example(model)
    assert bench.train_flops(model) is None
    row = bench._median_row("train", {"preset": "conv_vae_bmnist", "batch_size": 100, "precision": "float32",
                                      "steps_per_execution": 10, "jit_compile": False}, [50.0, 70.0, 60.0],
                            None, 100.0)
    row["ms_per_step"] = bench.ms_per_step(row["rounds"], 100)
    assert row["gflops"] is None and row["fraction_of_peak"] is None
    assert row["ms_per_step"] == pytest.approx(100_000 / 60.0)
    table = bench.format_table({"matmul_peak_gflops": 100.0, "matmul_n": 256, "cpu_count": 2, "data": "random",
                                "results": [row]})
    line = next(line for line in table.splitlines() if line.startswith("train conv_vae_bmnist"))
    assert line.split()[-7:] == ["60.0", "-", "-", "-", "-", "-", "-"]


def test_benchmark_errors_are_one_line(tmp_path, capsys):
    assert bench.main(["--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err
    code = bench.main(["--vs-torch", "--torch-reference", str(tmp_path / "missing.py"), "--only", "svi"])
    assert code == 2
    assert "the PyTorch reference is not at" in capsys.readouterr().err
    assert bench.main(["--only", "train", "--training", "steps_per_execution=0", "--rounds", "1",
                       "--train-examples", "128", "--matmul-n", "64", "--out", str(tmp_path / "b.json")]) == 2
    assert "steps_per_execution" in capsys.readouterr().err
    assert bench.main(["--only", "train", "--training", "batch_size=64", "--out", str(tmp_path / "b.json")]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_benchmark_of_an_unknown_preset_is_a_one_line_error_with_a_hint(tmp_path, capsys):
    assert bench.main(["--only", "train", "--preset", "vae_bmnsit", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfvae bench: error: unknown preset 'vae_bmnsit'. Did you mean 'vae_bmnist'")
    assert err.count("\n") == 1
    assert not (tmp_path / "b.json").exists()


MEMORY_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from tfvae.bench import peak_rss_gib
    from tfvae.inference.importance import log_likelihood
    from tfvae.models import VAE
    batch, chunk = int(sys.argv[1]), int(sys.argv[2])
    # The logits [samples, 784] are what chunking must bound; a narrow decoder keeps the
    # 1M samples' matmuls to seconds (a 256-512 decoder took ~25 s more).
    model = VAE(data_shape=(784,), latent_dim=32, encoder={"type": "mlp", "hidden": [512, 256], "activation": "relu"},
                decoder={"type": "mlp", "hidden": [64, 64], "activation": "relu"})
    x = (np.random.default_rng(0).random((batch, 784)) > 0.5).astype("float32")
    log_likelihood(model, x, k=5000, samples_per_chunk=chunk).numpy()
    print(peak_rss_gib())
""")


def peak_gib_of_evaluation(batch, chunk, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(MEMORY_PROBE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(script), str(batch), str(chunk)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_is_this_process_own():
    """VmHWM, not ru_maxrss, which a child inherits from its parent across exec: a child
    started from a process holding 1 GiB more must still report its own small peak."""
    ballast = np.ones(2**28, np.float32)          # 1 GiB resident in this (parent) process
    # The child loads tfvae/bench.py by its path, without the package (whose import loads
    # TensorFlow, ~10 s): the module imports only the standard library at its top.
    child = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('bench', sys.argv[1]); "
             "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench); print(bench.peak_rss_gib())")
    proc = subprocess.run([sys.executable, "-c", child, bench.__file__], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < bench.peak_rss_gib() - 0.8
    del ballast


def test_evaluation_at_k_5000_stays_under_2_gib_for_a_large_batch(tmp_path):
    from tfvae.inference.importance import DEFAULT_SAMPLES_PER_CHUNK
    assert peak_gib_of_evaluation(200, DEFAULT_SAMPLES_PER_CHUNK, tmp_path) < 2.0


@pytest.mark.slow
def test_the_same_evaluation_in_one_chunk_does_not_fit_in_2_gib(tmp_path):
    # The control of the test above (-m slow): the same batch decoded in one chunk (1M z's,
    # 3.1 GB of logits) does not fit, so the bound is one that chunking must keep.
    assert peak_gib_of_evaluation(200, 200 * 5000, tmp_path) > 2.0


HOST_ONLY_OPS = {"Assert", "PyFunc", "PyFuncStateless", "EagerPyFunc", "PrintV2", "Print", "StringFormat"}


def op_types(graph) -> set:
    """Op types of a graph and of every function it calls (while-loop bodies, XLA kernels)."""
    types = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        types |= {node.op for node in function.cached_definition.node_def}
    return types


@pytest.mark.parametrize("name", sorted(tfvae.list_presets()))
def test_training_steps_have_no_host_only_ops(name):
    """GPU-ready: the compiled training step of every zoo preset runs on the device alone,
    with no assertion, print or Python-callback op that would copy to the host every step."""
    model = tfvae.from_preset(name)
    x = tf.TensorSpec([2, *model.data_shape])
    spec = (x, tf.TensorSpec([2, model.condition_dim])) if model.condition_dim else x
    model.optimizer.build(model.trainable_variables)
    # As Keras and tfvae.steps trace it: without autograph.
    graph = tf.function(model.train_step, autograph=False).get_concrete_function(spec).graph
    types = op_types(graph)
    assert "MatMul" in types or "Conv2D" in types or "_FusedMatMul" in types, sorted(types)[:20]
    assert not types & HOST_ONLY_OPS
