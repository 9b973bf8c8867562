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


def test_benchmark_alternates_with_the_reference_and_reports_ratios(tmp_path, fake_reference, capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())   # "torch is installed"
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
    assert len(train["rounds"]) == 2 and train["torch_rounds"] == [1000.0, 1000.0]
    assert train["ratio"] == pytest.approx(train["examples_per_s"] / 1000.0)
    assert train["examples_per_s"] == pytest.approx(float(np.median(train["rounds"])))
    assert train["fraction_of_peak"] == pytest.approx(
        train["examples_per_s"] * 5_734_400 / 1e9 / result["matmul_peak_gflops"])
    assert iwae["ratio"] == pytest.approx(iwae["examples_per_s"] / 2.0) and iwae["peak_rss_gib"] > 0
    assert "ratio" not in svi and svi["flops_per_example"] == 1_097_728 + 4 * 8 * 2 * 1_081_344
    # one reference call after each tfvae round, with the same batch and steps
    calls = (tmp_path / "torch_reference.py.calls").read_text().splitlines()
    assert calls == ["train --batch 128 --steps 2"] * 2 + ["iwae-eval --k 50 --examples 4"] * 2
    table = capsys.readouterr().out
    assert "train  batch 128 float32 spe=10" in table and "iwae-eval  k=50 batch 2" in table


def test_benchmark_errors_are_one_line(tmp_path, capsys):
    assert bench.main(["--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err
    code = bench.main(["--vs-torch", "--torch-reference", str(tmp_path / "missing.py"), "--only", "svi"])
    assert code == 2
    assert "the PyTorch reference is not at" in capsys.readouterr().err
    assert bench.main(["--only", "train", "--training", "steps_per_execution=0", "--rounds", "1",
                       "--train-examples", "128", "--matmul-n", "64", "--out", str(tmp_path / "b.json")]) == 2
    assert "steps_per_execution" in capsys.readouterr().err


MEMORY_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from tfvae.bench import peak_rss_gib
    from tfvae.inference.importance import log_likelihood
    from tfvae.models import VAE
    batch, chunk = int(sys.argv[1]), int(sys.argv[2])
    model = VAE(data_shape=(784,), latent_dim=32, encoder={"type": "mlp", "hidden": [512, 256], "activation": "relu"},
                decoder={"type": "mlp", "hidden": [256, 512], "activation": "relu"})
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
    proc = subprocess.run([sys.executable, "-c", "from tfvae.bench import peak_rss_gib; print(peak_rss_gib())"],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < bench.peak_rss_gib() - 0.8
    del ballast


def test_evaluation_at_k_5000_stays_under_2_gib_for_a_large_batch(tmp_path):
    from tfvae.inference.importance import DEFAULT_SAMPLES_PER_CHUNK
    assert peak_gib_of_evaluation(200, DEFAULT_SAMPLES_PER_CHUNK, tmp_path) < 2.0


@pytest.mark.slow
def test_the_same_evaluation_in_one_chunk_does_not_fit_in_2_gib(tmp_path):
    # The control of the test above (-m slow, ~30 s): the same batch decoded in one chunk
    # (1M z's, 3.1 GB of logits) does not fit, so the bound is one that chunking must keep.
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
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    types = op_types(graph)
    assert "MatMul" in types or "Conv2D" in types or "_FusedMatMul" in types, sorted(types)[:20]
    assert not types & HOST_ONLY_OPS
