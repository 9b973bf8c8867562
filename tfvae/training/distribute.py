"""Data-parallel training with `tf.distribute`: one strategy by name, and the data for it.

Keras `fit` runs each training step on every replica (a device: GPU, TPU core, or CPU) with
that replica's share of the global batch, and the optimizer sums the replicas' gradients
(an all-reduce) before the one update every copy of the weights receives. Build and compile
the model inside `strategy.scope()`, so its variables are mirrored and its optimizers
(the compiled one, and e.g. FactorVAE's discriminator optimizer, created with the model)
know the strategy:

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = tfvae.from_preset("vae_bmnist")         # built and compiled here
    model.fit(prepare_dataset(train_batches, strategy), ...)

Loss scaling. Every model's loss is a mean over the batch it sees. With N replicas, each
holding b examples of a global batch of B = N b, replica r computes L_r = (1/b) sum_{i in r}
l_i, while one device with the global batch would minimise

    L = (1/B) sum_i l_i = (1/N) sum_r L_r,     so   grad L = sum_r grad(L_r) / N.

The optimizer's all-reduce computes the sum, so each replica hands it grad(L_r) / N
(`tfvae.replicas.apply_mean_gradients`, through which every model's `train_step`
updates; nothing changes on one replica). Then N replicas make the update one device makes
with the global batch: the same weights, to float round-off, after any number of steps.
What else keeps that true:
  * noise: each replica folds its replica id into the step's seed (`replica_seed`), so the
    replicas draw independent noise for their examples, as one device draws independent
    noise for the examples of its batch (the draws are not the same numbers as one
    device's: equal in distribution, not bit for bit);
  * clipping: Keras clips each replica's gradient before the sum; when the optimizer
    clips (clipnorm, global_clipnorm, clipvalue), `apply_mean_gradients` clips grad L
    itself first, as one device would (one more all-reduce per step in that case only);
  * metrics: the Mean trackers are summed (totals and counts) over replicas when read, so
    a per-example term reports its global-batch mean; the `loss` tracker averages the
    replicas' batch means, the same number when the replicas' batches are of equal size.
    Batch statistics (VQ-VAE's perplexity and codes_used) are the mean of the replicas'
    values, not the value of the global batch. (Keras 3.15 fails to reduce a step's
    scalar logs over several workers; `tfvae.replicas.step_logs` gives them shape [1]
    there);
  * state updated inside the step is computed from all replicas: VQ-VAE's EMA codebook
    statistics are summed over replicas before its update, Gumbel-softmax's temperature is
    the same schedule on every replica, FactorVAE's discriminator update is scaled as above
    (its permuted samples come from each replica's own share of the batch);
  * equal shares: `prepare_dataset` drops a batch that does not split into N equal
    shares (at most the last, partial batch of a pass), where the mean of replica means
    would weight examples unequally, or a replica would get no example at all and a mean
    over nothing is undefined.

The strategies (`make_strategy`):

  default       no distribution: the current strategy (one device).
  mirrored      one machine, its GPUs (all visible ones), else its logical CPU devices.
  multiworker   several machines (or processes), each with its GPUs or one CPU, described
                by the TF_CONFIG environment variable; collective all-reduce over the network.
  tpu           a Cloud TPU (a TPU VM: tpu="local"; else its name or grpc:// address, or
                the TPU_NAME environment variable).

Data. Every worker builds the same in-memory `tf.data` pipeline of global batches; Keras
distributes it (`strategy.experimental_distribute_dataset`): each global batch is split
into N shares. Across workers the dataset must be sharded: `from_tensor_slices` has no
files to shard by, so `prepare_dataset` sets the auto-shard policy to DATA: every worker
reads the pipeline and keeps its replicas' shares of each global batch. With the same seed
on every worker (the shuffle and the binarisation are seeded), the workers see disjoint
shares of the same global batches, and the run is that of one device with the global batch.

steps_per_execution > 1 and collective ops. Keras runs several steps per call in a
`tf.while_loop` of `tf.cond`s, each calling the (inner) step `tf.function`. A collective
all-reduce inside that step takes its instance key through
`capture_call_time_value`, an int32 placeholder fed when the function is called -- which
TensorFlow does not propagate through control flow to the outer function (see
CollectiveReplicaLauncher._next_instance_key), so the step fails at run time with "You must
feed a value for placeholder tensor 'while/body/.../while/cond/Placeholder' with dtype
int32" (keras-team/keras#19246), for any Keras model, with numpy or tf.data input alike.
MirroredStrategy's default all-reduce is such a collective (`CollectiveAllReduce`: RING
on CPUs, NCCL on GPUs); `make_strategy("mirrored")` chooses reductions made of plain ops
instead, which work inside the loop: `ReductionToOneDevice` over CPUs,
`HierarchicalCopyAllReduce` over GPUs (for a model of VAE size the reduction is a small
part of a step). MultiWorkerMirroredStrategy has only collectives: there
`steps_per_execution` must be 1 (`supported_steps_per_execution`).

Recipes (README "Scaling out"):

  GPUs of one machine: `tfvae train PRESET --strategy mirrored`. The batch size in the
  preset is the global batch: scale it (and usually the learning rate) with the number of
  GPUs to keep each GPU busy.

  Several machines: start the same command on each, with TF_CONFIG naming all workers
  and this one's index, e.g. on the second of two machines
      TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                  "task": {"type": "worker", "index": 1}}' \\
      tfvae train PRESET --strategy multiworker --out runs/worker1
  Worker 0 is the chief. Every worker trains the same weights and writes a whole run
  directory: give each its own --out (keep the chief's). steps_per_execution is 1 there.

  TPU: on a Cloud TPU VM, `TPU_NAME=local tfvae train PRESET --strategy tpu`; from
  another VM, set TPU_NAME to the TPU's name. Use a global batch divisible by the number
  of TPU cores (8 on a v2-8/v3-8) and `precision: mixed_bfloat16`.

Measured on this 2-core machine (vae_shapes, global batch 100, 2 logical CPUs): the
distributed input pipeline alone hands out a global batch in 2-3 ms (iterated eagerly; 0.2
ms undistributed), a training step takes 18 ms: the input is not the bottleneck. (Two
logical CPUs share the same cores, so they train no faster than one device: 8.5 ms.)
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")

TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def configure_cpu_devices(n: int) -> None:
    """Split the machine's CPU into `n` logical devices (to test MirroredStrategy without
    GPUs: the devices share the same cores, so this is no speed-up). Must run before
    TensorFlow initialises its devices (before any op, model or strategy)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of logical CPU devices must be a positive int, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        raise RuntimeError(f"cannot split the CPU into {n} logical devices: TensorFlow is already "
                           f"initialized; call configure_cpu_devices first in the process ({e})") from None


def parse_tf_config(text: str | None) -> dict:
    """The TF_CONFIG of a multi-worker job, checked: JSON with "cluster" (job name -> list of
    "host:port", with a "worker" or "chief" job) and "task" ({"type": a job of the cluster,
    "index": its position in that job's list}). Raises ValueError saying what is wrong."""
    hint = f"; e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
    if not text or not text.strip():
        raise ValueError(f"--strategy multiworker needs the TF_CONFIG environment variable (the cluster's "
                         f"workers and this one's index), which is not set{hint}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {text!r}{hint}") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {text!r}{hint}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, Mapping) or not ({"worker", "chief"} & set(cluster)):
        raise ValueError(f"TF_CONFIG needs \"cluster\": {{\"worker\": [\"host:port\", ...]}}, got "
                         f"{cluster!r}{hint}")
    for job, addresses in cluster.items():
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            raise ValueError(f"TF_CONFIG cluster job {job!r} must be a non-empty list of \"host:port\" strings, "
                             f"got {addresses!r}")
    if not isinstance(task, Mapping) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG needs \"task\": {{\"type\": \"worker\", \"index\": i}}, got {task!r}{hint}")
    job, index = task["type"], task["index"]
    if job not in cluster:
        raise ValueError(f"TF_CONFIG task type {job!r} is not a job of the cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[job]):
        raise ValueError(f"TF_CONFIG task index must be an int in [0, {len(cluster[job])}) for job {job!r}, "
                         f"got {index!r}")
    return dict(config)


def _mirrored() -> tf.distribute.MirroredStrategy:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus],
                                              cross_device_ops=tf.distribute.HierarchicalCopyAllReduce())
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) == 1:
        warnings.warn("--strategy mirrored: no GPU and one CPU device, so one replica (no speed-up over "
                      "'default'); tfvae.training.distribute.configure_cpu_devices splits the CPU for tests",
                      stacklevel=3)
    return tf.distribute.MirroredStrategy([d.name for d in cpus],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def _tpu(tpu: str | None) -> tf.distribute.TPUStrategy:
    where = repr(tpu) if tpu else "from TPU_NAME / the TPU VM"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--strategy tpu: no TPU reachable ({where}): {first_line}. On a Cloud TPU VM use "
                         f"tpu='local' (TPU_NAME=local); elsewhere set TPU_NAME to the TPU's name or "
                         f"grpc://address") from None
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str | tf.distribute.Strategy = "default", tpu: str | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name` (one of STRATEGIES; see the module
    docstring), or `name` itself when it is already a strategy.

    Create it first in the process: "multiworker" configures collective ops, which must
    happen before TensorFlow runs anything, and the devices "mirrored" sees are fixed when
    TensorFlow initialises. tpu: the TPU's name or address for "tpu" (default: TPU_NAME,
    or the local TPU of a TPU VM).

    Raises ValueError for an unknown name, a missing or malformed TF_CONFIG, or no TPU.
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored()
    if name == "multiworker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu(tpu if tpu is not None else os.environ.get("TPU_NAME"))


def supported_steps_per_execution(strategy: tf.distribute.Strategy, steps: int) -> int:
    """`steps` (training steps per compiled call), or 1 under MultiWorkerMirroredStrategy,
    whose collective all-reduce fails inside Keras' multi-step loop (module docstring), with
    a warning when that lowers it."""
    if steps > 1 and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        warnings.warn(f"steps_per_execution={steps} is not supported under MultiWorkerMirroredStrategy "
                      f"(collective ops in Keras' multi-step loop); using 1", stacklevel=2)
        return 1
    return steps


def prepare_dataset(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy | None = None,
                    batch_size: int | None = None) -> tf.data.Dataset:
    """`dataset` (of global batches) ready for `fit` or `evaluate` under `strategy` (default:
    the current one). On one replica it is returned unchanged. With N > 1 replicas:

      * the auto-shard policy is DATA: each worker keeps its replicas' shares of every
        global batch (an in-memory pipeline has no files to shard by);
      * every batch splits into N equal shares (see the module docstring): a batch whose
        size is not a multiple of N -- at most the last, partial batch of each pass -- is
        dropped. A finite dataset of known cardinality keeps it known (its last batch is
        read once to see its size, so pass evaluation data, cached, not a shuffled
        training pass): Keras then runs exactly that many steps, where with an unknown
        count MultiWorkerMirroredStrategy runs one more step on empty batches at the end,
        which adds a 0 to the `loss` tracker's mean. An infinite (or uncounted) dataset is
        filtered batch by batch instead;
      * batch_size: the global batch size, if known; a ValueError unless it is a multiple
        of N (else every batch would be dropped).
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset
    if batch_size is not None and batch_size % replicas:
        raise ValueError(f"the global batch size ({batch_size}) must be a multiple of the number of replicas "
                         f"({replicas}): each replica takes an equal share of every batch")

    def size(batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0]

    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        last = next(iter(dataset.skip(cardinality - 1)))
        if int(size(last)) % replicas:
            dataset = dataset.take(cardinality - 1)
    elif cardinality != 0:
        dataset = dataset.filter(lambda *batch: size(batch) % replicas == 0)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


__all__ = ["STRATEGIES", "configure_cpu_devices", "make_strategy", "parse_tf_config", "prepare_dataset",
           "supported_steps_per_execution"]
