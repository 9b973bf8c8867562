"""Several training (or test) steps in one XLA program.

Keras runs `steps_per_execution` = n steps per call of its train function as a TensorFlow
`while_loop` that pulls each batch from the iterator and calls the step, itself an
XLA-compiled function when `jit_compile` is on: n XLA launches per call, each with its
variable snapshot and compile-cache lookup, between graph ops of the iterator. For the
small networks of the zoo that is a large share of a step: `vae_bmnist`'s step at batch 100
took 7.8 ms inside one XLA loop and 9.3 ms as separate launches from a graph loop, alternating
in one process on a loaded 2-core CPU (docs/performance.md).

`multi_step_function` takes the n batches from the iterator first, in one graph call (taken
one by one from Python, with an eager op or three each, they cost 0.57 ms a step at batch 20,
a fifth of `vae_bmnist`'s step there), and runs the n steps as one XLA program, a loop over the
stacked batches:

    logs = step(batch_1); ...; logs = step(batch_n)   ->   the logs of the last step

which is what Keras' train function computes and returns. When fewer than n batches are
left, or their shapes differ (the last, smaller batch of a finite data set), each runs
through Keras' own function instead, so no batch is lost or padded. It applies to one
device only, with `jit_compile` on and n > 1; otherwise the model keeps Keras' function.
"""
from __future__ import annotations

import tensorflow as tf


def applies(model) -> bool:
    """Whether `model`'s compiled steps can run n to an XLA program: jit_compile on, several
    steps per execution, not eager, no tf.distribute strategy (the replicas' steps are Keras'
    to run)."""
    return (model.jit_compile is True and model.steps_per_execution > 1 and not model.run_eagerly
            and not tf.distribute.has_strategy())


def fused(model, step, keras_function):
    """`model`'s train (or test) function: `multi_step_function` of its `step` where it
    `applies`, else Keras' own `keras_function` unchanged."""
    if not applies(model):
        return keras_function
    return multi_step_function(step, keras_function, model.steps_per_execution)


def _spec_of_one(stacked):
    """The TensorSpec of one batch of a structure of stacked [n, ...] tensors."""
    return tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype), stacked)


def multi_step_function(step, keras_function, steps: int):
    """A train (or test) function for Keras `fit`: takes `steps` batches from the iterator it
    is given and runs `step` on each, in order, inside one XLA-compiled loop; returns the
    logs of the last step. A call that gets fewer batches, or batches of different shapes,
    runs them through `keras_function` one at a time (that function runs one step per batch
    given as a one-batch iterable). Raises StopIteration when the iterator has no batch
    left, as Keras' function does."""
    traced = tf.function(step, autograph=False)

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def run(batches):
        stacked = tf.nest.map_structure(lambda *t: tf.stack(t), *batches)
        outputs = traced.get_concrete_function(_spec_of_one(stacked)).structured_outputs
        initial = tf.nest.map_structure(lambda t: tf.zeros(tf.shape(t), t.dtype), outputs)

        def body(i, logs):
            return i + 1, traced(tf.nest.map_structure(lambda t: t[i], stacked))

        return tf.while_loop(lambda i, _: i < len(batches), body, (tf.constant(0), initial))[1]

    @tf.function(autograph=False)
    def take(iterator):
        """The next `steps` batches of `iterator` in one graph call: (whether all `steps` came
        and have one shape, has_value of each, the batches; an absent one as an empty stand-in)."""
        optionals = [iterator.get_next_as_optional() for _ in range(steps)]
        present = tf.stack([o.has_value() for o in optionals])
        spec = iterator.element_spec
        absent = tf.nest.map_structure(
            lambda s: tf.zeros([0 if d is None else d for d in s.shape], s.dtype), spec)
        batches = [tf.cond(o.has_value(), o.get_value, lambda: absent) for o in optionals]
        shapes = tf.stack([tf.concat([tf.shape(t) for t in tf.nest.flatten(b)], 0) for b in batches])
        same = tf.reduce_all(tf.equal(shapes, shapes[0]))
        return tf.logical_and(tf.reduce_all(present), same), present, batches

    def function(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            return keras_function(iterator)
        # Eager results: each batch keeps its concrete shape, so `run` traces as before.
        whole, present, batches = take(iterator)
        if bool(whole):
            return run(batches)
        batches = [b for b, here in zip(batches, present.numpy()) if here]
        if not batches:
            raise StopIteration
        for batch in batches:
            logs = keras_function(iter([batch]))
        return logs

    function.program = run     # the XLA program, for inspection (its traces, its graph)
    return function
