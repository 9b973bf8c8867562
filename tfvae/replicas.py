"""What a training step does on each replica of a `tf.distribute` strategy, below the models.

Under a strategy with N replicas Keras runs each training step on every replica with its
share of the global batch. The helpers here make such a step do what one device does with
the global batch (`tfvae.training.distribute` has the whole argument): each replica draws its
own noise (`replica_seed`), and every update goes through `apply_mean_gradients`, which
scales the replica's gradient so that the optimizer's all-reduce sums them to the gradient of
the global batch's mean loss (and clips that sum, not its parts). `step_logs` shapes a step's
logs for MultiWorkerMirroredStrategy. On one replica none of them adds anything to the graph.
"""
from __future__ import annotations

import tensorflow as tf


def replicas_in_sync() -> int:
    """How many replicas the current step runs on: `num_replicas_in_sync` inside a replica
    context of a tf.distribute strategy (`strategy.run`, e.g. Keras `fit` under
    `strategy.scope()`), else 1 (no strategy, or a cross-replica context). A Python int."""
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def replica_seed(seed) -> tf.Tensor:
    """A stateless seed [2] for this replica: `seed` itself on one replica; folded with
    `replica_id_in_sync_group` when there are several, so that replicas drawing with the
    same step seed draw independent noise for their examples (not copies of each other's)."""
    if replicas_in_sync() == 1:
        return seed
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int32))


def _scaled(gradient, factor: float):
    """gradient * factor for a dense gradient or tf.IndexedSlices (None stays None)."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(factor, gradient.values.dtype), gradient.indices,
                                gradient.dense_shape)
    return gradient * tf.cast(factor, gradient.dtype)


def _clip_like(optimizer, gradients):
    """`gradients` clipped by the optimizer's own rule (clipnorm per variable, else
    global_clipnorm over all, else clipvalue), the rule Keras applies in `optimizer.apply`."""
    if optimizer.clipnorm:
        return [None if g is None else tf.clip_by_norm(g, optimizer.clipnorm) for g in gradients]
    if optimizer.global_clipnorm:
        present = [g for g in gradients if g is not None]
        clipped = iter(tf.clip_by_global_norm(present, optimizer.global_clipnorm)[0])
        return [None if g is None else next(clipped) for g in gradients]
    return [None if g is None else tf.clip_by_value(g, -optimizer.clipvalue, optimizer.clipvalue)
            for g in gradients]


def apply_mean_gradients(optimizer, gradients, variables):
    """`optimizer.apply(gradients, variables)`, where `gradients` are those of a loss that is
    a mean over this replica's batch, so that N replicas make the update one device makes
    with the global batch (the N per-replica batches together, of equal sizes b).

    In a replica context Keras' TensorFlow optimizer sums the gradients over the replicas
    (an all-reduce) before the update and scales nothing. With per-replica mean losses
    L_r = (1/b) sum_{i in r} l_i, the global-batch loss is L = (1/(N b)) sum_i l_i =
    (1/N) sum_r L_r, so each replica hands the optimizer grad(L_r) / N and the sum is
    grad L. On one replica nothing is added to the graph.

    Clipping: Keras clips each replica's gradient before that sum, i.e. grad(L_r) / N, not
    grad L. When the optimizer clips (clipnorm, global_clipnorm, clipvalue; without
    gradient accumulation, which clips the accumulated sum later), the replicas first
    all-reduce grad L themselves, clip it by the optimizer's rule, and hand it on divided
    by N: the optimizer's own clipping then changes nothing (the norms are N times below
    the threshold) and its sum gives back the clipped grad L. This costs a second
    all-reduce per step, only in that case.
    """
    replicas = replicas_in_sync()
    if replicas > 1:
        gradients = [_scaled(g, 1.0 / replicas) for g in gradients]
        clips = optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
        if clips and not optimizer.gradient_accumulation_steps:
            present = [g for g in gradients if g is not None]
            total = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, present))
            clipped = _clip_like(optimizer, [None if g is None else next(total) for g in gradients])
            gradients = [_scaled(g, 1.0 / replicas) for g in clipped]
    optimizer.apply(gradients, variables)


def step_logs(results: dict) -> dict:
    """The logs a train or test step returns: the metrics' scalar results; each of shape [1]
    under MultiWorkerMirroredStrategy with several workers, where Keras (3.15) reduces a
    step's per-replica logs by strategy.reduce(MEAN, axis=0), which fails on a scalar. (Fit's
    per-epoch logs and history come from the metrics themselves, scalars either way.)"""
    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and in_multi_worker_mode():
        return {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results
