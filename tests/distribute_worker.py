"""Child process of tests/test_distribute.py: TensorFlow fixes its devices and collective ops
when it initialises, so every distributed scenario runs in a fresh process (importing
TensorFlow and tfvae does not initialise it; the first op or strategy does).

    python distribute_worker.py mirrored OUT.npz      2 logical CPUs: MirroredStrategy runs
                                                      and their one-device references
    python distribute_worker.py multiworker OUT.npz   one worker of a MultiWorkerMirroredStrategy
                                                      cluster (TF_CONFIG from the environment)

Writes its results as arrays to OUT.npz: "<case>/weights/<i>" (the model's weights after
training, in `get_weights` order), "<case>/loss" and "<case>/elbo" (the epoch's reported
metrics). "<case>/reference" is the one-device run the distributed "<case>" must equal,
"<case>/initial/<i>" the weights both started from.

The one-device references. A deterministic model (VQ-VAE: a point-mass posterior, no noise)
is fit on one device with the same global batches. A model that draws noise cannot draw
the same numbers on 2 replicas as on one device (each replica folds its id into the step's
seed, `tfvae.replicas.replica_seed`), so its reference is written out by hand here: one
device, each global batch cut into the replicas' halves, each half's gradient taken with
the seed its replica uses, the mean of the halves' gradients applied by the same optimizer.
It shares nothing with the distributed code path but the model's loss.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfvae.models  # noqa: E402,F401  (registers the variants)
from tfvae.seeds import as_seed  # noqa: E402
from tfvae.models.factor_vae import discriminator_terms  # noqa: E402
from tfvae.optimizers import FusedAdam  # noqa: E402
from tfvae.registry import get_model_class  # noqa: E402
from tfvae.training.distribute import (configure_cpu_devices, make_strategy, prepare_dataset,  # noqa: E402
                                       supported_steps_per_execution)

REPLICAS = 2
GLOBAL_BATCH = 16
STEPS = 4
MLP = {"type": "mlp", "hidden": [8]}
MODELS = {
    "vae": ("vae", dict(data_shape=(8,), latent_dim=2, encoder=MLP, seed=3)),
    "vqvae_ema": ("vqvae", dict(data_shape=(8,), num_latents=2, embedding_dim=2, codebook_size=4, ema=True,
                                decay=0.5, encoder=MLP, seed=3)),
    "factor_vae": ("factor_vae", dict(data_shape=(8,), latent_dim=2, encoder=MLP, gamma=5.0,
                                      discriminator_hidden=[8], discriminator_learning_rate=1e-2, seed=3)),
}
DETERMINISTIC = ("vqvae_ema",)
# The MirroredStrategy runs: (model, steps_per_execution, optimizer, clipnorm).
CASES = (("vae", 2, "sgd", None), ("vae", 1, "sgd", 0.05), ("vqvae_ema", 2, "adam", None),
         ("factor_vae", 1, "sgd", None))


def case_name(model, spe, optimizer, clipnorm):
    return f"{model}_spe{spe}_{optimizer}" + ("_clip" if clipnorm else "")


def data():
    """32 binary examples of 8 pixels: 2 global batches of 16 per pass."""
    return (np.random.default_rng(0).random((2 * GLOBAL_BATCH, 8)) > 0.5).astype("float32")


def build(case, strategy, spe=1, optimizer="sgd", clipnorm=None):
    """The case's model, built and compiled under `strategy` with SGD 0.1 (an update
    proportional to the gradient, so a gradient off by a factor shows; Adam's barely moves)
    or fused Adam 1e-2, from seeded initial weights (the same in every process)."""
    name, config = MODELS[case]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = get_model_class(name)(**config)
        make = {"sgd": keras.optimizers.SGD, "adam": FusedAdam}[optimizer]
        model.compile(optimizer=make({"sgd": 0.1, "adam": 1e-2}[optimizer], clipnorm=clipnorm),
                      steps_per_execution=spe)
    return model


def fit(model, strategy):
    """STEPS training steps on the global batches of `data()` (in order, repeated); returns
    the epoch's reported (loss, elbo)."""
    batches = tf.data.Dataset.from_tensor_slices(data()).batch(GLOBAL_BATCH).repeat()
    history = model.fit(prepare_dataset(batches, strategy), steps_per_epoch=STEPS, epochs=1, verbose=0).history
    return history["loss"][-1], history["elbo"][-1]


def emulated_fit(model):
    """The one-device reference of a model that draws noise (see the module docstring);
    returns the mean over steps and halves of the halves' (loss, elbo)."""
    x = data()
    losses, elbos = [], []
    for step in range(STEPS):
        batch = x[(step % 2) * GLOBAL_BATCH:(step % 2 + 1) * GLOBAL_BATCH]
        step_seed = tf.cast(model.seed_generator.next(), tf.int32)      # one draw per step, as in fit
        shares = []
        for replica, half in enumerate(np.split(batch, REPLICAS)):
            seed = tf.random.experimental.stateless_fold_in(step_seed, replica)
            model._seed = lambda s, seed=seed: seed if s is None else as_seed(s)
            shares.append(share_gradients(model, half))
            del model._seed
        losses.append(np.mean([share["loss"] for share in shares]))
        elbos.append(np.mean([share["elbo"] for share in shares]))
        updates = [(model.optimizer, model.optimized_variables, "vae")]
        if hasattr(model, "discriminator_optimizer"):
            updates.append((model.discriminator_optimizer, model.discriminator.trainable_variables, "disc"))
        for optimizer, variables, key in updates:
            optimizer.apply([tf.add_n(g) / REPLICAS for g in zip(*(share[key] for share in shares))], variables)
    return float(np.mean(losses)), float(np.mean(elbos))


def share_gradients(model, x):
    """One half batch's loss, mean ELBO and gradients: of the model's loss with respect to
    `optimized_variables` ("vae") and, for FactorVAE, of its discriminator's loss ("disc")."""
    result, gradients = model.gradients(x, training=True)
    share = {"vae": gradients}
    if hasattr(model, "discriminator"):
        with tf.GradientTape() as tape:
            disc_loss = discriminator_terms(model.discriminator, result.aux["z"],
                                            result.aux["permutation_seed"])["disc_loss"]
        share["disc"] = tape.gradient(disc_loss, model.discriminator.trainable_variables)
    return {**share, "loss": float(result.value), "elbo": float(tf.reduce_mean(result.terms["elbo"]))}


def record(results, case, model, loss, elbo):
    for i, w in enumerate(model.get_weights()):
        results[f"{case}/weights/{i}"] = w
    results[f"{case}/loss"], results[f"{case}/elbo"] = loss, elbo


def run_mirrored(out):
    configure_cpu_devices(REPLICAS)
    mirrored, one_device = make_strategy("mirrored"), tf.distribute.get_strategy()
    results = {"replicas": mirrored.num_replicas_in_sync}
    for case, spe, optimizer, clipnorm in CASES:
        name = case_name(case, spe, optimizer, clipnorm)
        reference = build(case, one_device, spe, optimizer, clipnorm)
        for i, w in enumerate(reference.get_weights()):
            results[f"{name}/initial/{i}"] = w
        reported = fit(reference, one_device) if case in DETERMINISTIC else emulated_fit(reference)
        record(results, f"{name}/reference", reference, *reported)
        model = build(case, mirrored, spe, optimizer, clipnorm)
        record(results, name, model, *fit(model, mirrored))
    # Global batches of 16, 16 and 7 elements (the 7 has no equal halves); counted or not.
    uneven = tf.data.Dataset.range(39).batch(16)
    for label, dataset in (("counted", uneven), ("uncounted", uneven.filter(lambda b: True))):
        prepared = prepare_dataset(dataset, mirrored, batch_size=16)
        results[f"prepare/{label}/batch_sizes"] = [len(b) for b in prepared.as_numpy_iterator()]
        results[f"prepare/{label}/cardinality"] = int(prepared.cardinality())
        policy = prepared.options().experimental_distribute.auto_shard_policy
        results[f"prepare/{label}/auto_shard_policy"] = int(policy)
    try:
        prepare_dataset(uneven, mirrored, batch_size=15)
        results["prepare/odd_batch_error"] = 0
    except ValueError as e:
        results["prepare/odd_batch_error"] = int("multiple of the number of replicas (2)" in str(e))
    results["steps_per_execution"] = supported_steps_per_execution(mirrored, 10)
    np.savez(out, **results)


def run_multiworker(out):
    strategy = make_strategy("multiworker")          # first: collective ops are set up at start
    results = {"replicas": strategy.num_replicas_in_sync,
               "steps_per_execution": supported_steps_per_execution(strategy, 10)}
    model = build("vae", strategy, spe=results["steps_per_execution"])
    record(results, "vae", model, *fit(model, strategy))
    # Evaluation data of 3 global batches and a last one of 7 examples (dropped).
    evaluation = tf.data.Dataset.from_tensor_slices(np.concatenate([data(), data()[:23]])).batch(GLOBAL_BATCH)
    logs = model.evaluate(prepare_dataset(evaluation, strategy), verbose=0, return_dict=True)
    results["evaluate/loss"], results["evaluate/elbo"] = logs["loss"], logs["elbo"]
    np.savez(out, **results)


if __name__ == "__main__":
    {"mirrored": run_mirrored, "multiworker": run_multiworker}[sys.argv[1]](sys.argv[2])
