"""tf.distribute (tfvae.training.distribute and the models' train steps under a strategy).

N replicas must make the update one device makes with the global batch. Checked in child
processes (tests/distribute_worker.py; TensorFlow's devices are fixed when it starts):
  * MirroredStrategy over 2 logical CPUs against one device, for the VAE (SGD, so a
    gradient off by a factor shows; steps_per_execution 1 and 2; clipnorm), VQ-VAE with an
    EMA codebook (fused Adam; deterministic, so against a plain one-device fit: its EMA
    statistics must be summed over replicas) and FactorVAE (two optimizers): equal weights
    and equal reported loss and ELBO;
  * MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1: the workers end with
    identical weights, equal to the one-device reference of the same global batches.
The references of models that draw noise are written out by hand in the worker (each half
batch's gradient with the seed its replica draws with, averaged; see its docstring).
The three child processes run at once; the rest are argument checks in this process.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import distribute_worker as worker
from tfvae.training.distribute import (STRATEGIES, make_strategy, parse_tf_config, prepare_dataset,
                                       supported_steps_per_execution)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
TIMEOUT = 300
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(**extra):
    """This environment without TF_CONFIG or proxies (gRPC would send 127.0.0.1 to a proxy)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "no_proxy": "127.0.0.1,localhost", **extra}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (returncode, output tail, results or None)} of the children "mirrored",
    "worker0" and "worker1", started together. A failing worker stops its peer (which
    would wait for it)."""
    directory = tmp_path_factory.mktemp("distribute")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    commands = {"mirrored": (["mirrored"], child_env())}
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        commands[f"worker{index}"] = (["multiworker"], child_env(TF_CONFIG=tf_config))
    processes = {name: subprocess.Popen([sys.executable, WORKER, *args, str(directory / f"{name}.npz")], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for name, (args, env) in commands.items()}
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
        if any(processes[w].poll() not in (None, 0) for w in ("worker0", "worker1")):
            for w in ("worker0", "worker1"):
                if processes[w].poll() is None:
                    processes[w].kill()
        time.sleep(0.2)
    results = {}
    for name, process in processes.items():
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
        path = directory / f"{name}.npz"
        results[name] = (process.returncode, output[-4000:], dict(np.load(path)) if path.exists() else None)
    return results


def completed(runs, name):
    returncode, output, results = runs[name]
    assert returncode == 0 and results is not None, f"{name} failed (exit {returncode}):\n{output}"
    return results


def weights(results, prefix):
    count = len([k for k in results if k.startswith(f"{prefix}/weights/")])
    return [results[f"{prefix}/weights/{i}"] for i in range(count)]


# ------------------------------------------------------------------ MirroredStrategy
@pytest.mark.parametrize("case", worker.CASES, ids=[worker.case_name(*c) for c in worker.CASES])
def test_mirrored_two_replicas_train_as_one_device_with_the_global_batch(runs, case):
    results = completed(runs, "mirrored")
    assert results["replicas"] == 2
    name = worker.case_name(*case)
    distributed, reference = weights(results, name), weights(results, f"{name}/reference")
    assert len(distributed) == len(reference) > 0
    initial = [results[f"{name}/initial/{i}"] for i in range(len(reference))]
    assert max(np.max(np.abs(w - w0)) for w, w0 in zip(reference, initial)) > 1e-2, "training moved nothing"
    for got, want in zip(distributed, reference):
        np.testing.assert_allclose(got, want, **TOLERANCE)
    for metric in ("loss", "elbo"):
        np.testing.assert_allclose(results[f"{name}/{metric}"], results[f"{name}/reference/{metric}"], rtol=1e-5)


@pytest.mark.parametrize("label, cardinality", [("counted", 2), ("uncounted", tf.data.UNKNOWN_CARDINALITY)])
def test_prepare_dataset_keeps_equal_shares_and_shards_by_data(runs, label, cardinality):
    results = completed(runs, "mirrored")
    assert list(results[f"prepare/{label}/batch_sizes"]) == [16, 16]      # the batch of 7 has no equal halves
    assert results[f"prepare/{label}/cardinality"] == cardinality
    assert results[f"prepare/{label}/auto_shard_policy"] == int(tf.data.experimental.AutoShardPolicy.DATA)
    assert results["steps_per_execution"] == 10                  # no collective ops: the multi-step loop works


# ------------------------------------------------------------------ MultiWorkerMirroredStrategy
def test_two_workers_agree_and_train_as_one_device_with_the_global_batch(runs):
    first, second = completed(runs, "worker0"), completed(runs, "worker1")
    reference_name = worker.case_name("vae", 2, "sgd", None)      # its reference does not depend on the 2
    reference = completed(runs, "mirrored")
    for results in (first, second):
        assert results["replicas"] == 2
        assert results["steps_per_execution"] == 1
    for a, b in zip(weights(first, "vae"), weights(second, "vae"), strict=True):
        np.testing.assert_array_equal(a, b)
    for got, want in zip(weights(first, "vae"), weights(reference, f"{reference_name}/reference"), strict=True):
        np.testing.assert_allclose(got, want, **TOLERANCE)
    for metric in ("loss", "elbo"):
        np.testing.assert_allclose(first[f"vae/{metric}"], reference[f"{reference_name}/reference/{metric}"],
                                   rtol=1e-5)
    # The VAE's loss is minus its ELBO (kl_weight 1): the mean over replicas' batch means of
    # the one must equal the mean over examples of the other, with no extra empty step.
    for results in (first, second):
        np.testing.assert_allclose(results["evaluate/loss"], -results["evaluate/elbo"], rtol=1e-6)


# ------------------------------------------------------------------ arguments (this process)
def test_make_strategy_by_name():
    assert STRATEGIES == ("default", "mirrored", "multiworker", "tpu")
    assert make_strategy("default") is tf.distribute.get_strategy()
    assert make_strategy() is tf.distribute.get_strategy()
    strategy = tf.distribute.get_strategy()
    assert make_strategy(strategy) is strategy
    with pytest.raises(ValueError, match="unknown strategy 'mirror'.*default, mirrored, multiworker, tpu"):
        make_strategy("mirror")


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{cluster: }")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_strategy("multiworker")


GOOD_CLUSTER = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


@pytest.mark.parametrize("config, message", [
    ([1, 2], "must be a JSON object"),
    ({"task": {"type": "worker", "index": 0}}, 'needs "cluster"'),
    ({"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}, 'needs "cluster"'),
    ({"cluster": {"worker": "127.0.0.1:2222"}, "task": {"type": "worker", "index": 0}}, "list of \"host:port\""),
    ({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}, "list of \"host:port\""),
    ({"cluster": GOOD_CLUSTER}, 'needs "task"'),
    ({"cluster": GOOD_CLUSTER, "task": {"type": "chief", "index": 0}}, "not a job of the cluster"),
    ({"cluster": GOOD_CLUSTER, "task": {"type": "worker", "index": 2}}, r"index must be an int in \[0, 2\)"),
    ({"cluster": GOOD_CLUSTER, "task": {"type": "worker", "index": "0"}}, "index must be an int"),
])
def test_malformed_tf_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        parse_tf_config(json.dumps(config))


def test_valid_tf_config_is_returned():
    config = {"cluster": GOOD_CLUSTER, "task": {"type": "worker", "index": 1}}
    assert parse_tf_config(json.dumps(config)) == config


def test_tpu_unreachable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="no TPU reachable.*tpu='local'"):
        make_strategy("tpu")


def test_prepare_dataset_checks_the_global_batch(runs):
    assert completed(runs, "mirrored")["prepare/odd_batch_error"] == 1


def test_one_replica_changes_nothing():
    strategy = tf.distribute.get_strategy()
    dataset = tf.data.Dataset.range(5).batch(2)
    assert prepare_dataset(dataset, strategy) is dataset
    assert supported_steps_per_execution(strategy, 10) == 10
