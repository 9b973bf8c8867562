"""`train`: one preset -> one complete run directory.

    run_dir/
      config.yaml          the resolved preset (with overrides): `from_preset(run_dir)` rebuilds it
      model.weights.h5     weights after the last epoch (while training: after the first epoch,
                           then at most every checkpoint_seconds)
      best.weights.h5      weights of the epoch with the lowest validation loss (on the
                           validation split, else the evaluation split), written as often
      history.csv          per-epoch metrics (loss, elbo, log_px_z, kl, the model's own terms, and
                           their val_ twins)
      curves.png           the learning curves: loss, ELBO and KL per epoch, the best epoch marked
                           (`tfvae.training.curves`; redrawn at most every minute)
      images/epoch_NNN.png data, reconstructions and prior samples after each epoch
      evaluation.json      ELBO and importance-sampled log p(x) on the evaluation split
      metadata.json        versions, data set, seed, timings, final metrics
      train_args.json      how the run was started (protocol, initial weights, data dir), for --resume
      resume_state.npz     the whole training state while the run trains (`tfvae.training.resume`);
                           removed when the run is complete

`tfvae.runs` reads a run directory back (evaluate, gaps, traverse, export, sample).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os

import keras
import numpy as np
import tensorflow as tf
import yaml

from tfvae import data as datasets
from tfvae.config import validate
from tfvae.registry import get_model_class
from tfvae.inference.evaluate import evaluate
from tfvae.io import atomic_write_text, remove_stale_temporaries
from tfvae.presets import (CONFIG_FILE, DEFAULT_PRESET, WEIGHTS_FILE, EvaluationSection, Preset, TrainingSection,
                           build_model, compile_model, load_preset, load_weights)
from tfvae.training.callbacks import (DIVERGENCE_HINTS, Checkpoints, HistoryCSV, ImageGrid, KLWarmup,
                                      LearningCurves, StopOnNonFinite, TrainingDiverged, learning_rate_schedule,
                                      read_history)
from tfvae.training.distribute import make_strategy, prepare_dataset, supported_steps_per_execution
from tfvae.training.resume import RESUME_FILE, ResumeState, read_state
from tfvae.version import versions

BEST_WEIGHTS_FILE = "best.weights.h5"
CURVES_FILE = "curves.png"
TRAIN_ARGS_FILE = "train_args.json"     # how the run was started, for --resume


def resolve_preset(preset: str | Preset, model: dict | None = None, training: dict | None = None,
                   evaluation: dict | None = None, protocol: str = "short") -> Preset:
    """The preset under `protocol` ("short": its training section; "paper": its paper
    section's overrides), with validated overrides of its model, training and evaluation."""
    preset = load_preset(preset) if not isinstance(preset, Preset) else preset
    preset = preset.with_protocol(protocol)
    model_config = dict(preset.model)
    if model:
        cls = get_model_class(model_config["class"])
        model_config = {**model_config, **validate(cls, model, f"model {cls.registered_name!r} overrides", False)}
    return dataclasses.replace(
        preset, model=model_config,
        training=TrainingSection(**{**dataclasses.asdict(preset.training),
                                    **validate(TrainingSection, training or {}, "training overrides", False)}),
        evaluation=EvaluationSection(**{**dataclasses.asdict(preset.evaluation),
                                        **validate(EvaluationSection, evaluation or {}, "evaluation overrides",
                                                   False)}))


def default_run_dir(preset_name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{preset_name}_{stamp}")


def load_eval_data(preset: Preset, data_dir=None, examples=None, batch_size=None, split=None, seed: int = 0):
    """The evaluation split: `examples` drawn at random with `seed` (the test files can be
    ordered by class), batched, with labels when the model is conditional."""
    return datasets.load(preset.data.name, split=split or preset.data.eval_split, data_dir=data_dir,
                         batch_size=batch_size or preset.evaluation.batch_size, binarize=preset.data.binarize,
                         shuffle=False, seed=seed, labels=preset.data.labels,
                         max_examples=examples if examples is not None else preset.evaluation.examples)


def train(preset: str | Preset | None = None, out: str | None = None, data_dir: str | None = None,
          model: dict | None = None, training: dict | None = None, evaluation: dict | None = None,
          weights: str | None = None, evaluate_after: bool = True, verbose: int = 1,
          protocol: str = "short", resume: str | None = None, callbacks: list | None = None,
          strategy: str | tf.distribute.Strategy = "default") -> str:
    """Trains a preset with Keras `fit` and writes a complete run directory; returns its path.

    Args:
      preset: a zoo name, a run directory or a YAML path (or a `Preset`); default
        `DEFAULT_PRESET`, which needs no download.
      out: the run directory (default runs/<preset>_<timestamp>); must not hold a run already.
      data_dir: where the data set's files are (else the download cache; when resuming,
        the directory the run was started with).
      model, training, evaluation: overrides of the preset's sections.
      weights: start from these weights (fine-tuning).
      evaluate_after: run `evaluate` on the evaluation split at the end.
      protocol: "short" (the preset's CPU recipe) or "paper" (the published protocol of
        its paper section; often days of training).
      resume: a run directory whose training was interrupted (killed, crashed, out of
        time): continue it from its last saved state (`tfvae.training.resume`), as it was
        configured when it started. Takes no preset, overrides or weights. A run killed
        before its first save starts over.
      callbacks: more Keras callbacks for `fit`, run after the run's own.
      strategy: "default" (one device), "mirrored" (this machine's GPUs), "multiworker"
        (TF_CONFIG) or "tpu", or a `tf.distribute.Strategy` (`tfvae.training.distribute`).
        The model is built and compiled in its scope; the preset's batch size is the global
        batch, split over the replicas, and the run's updates are those of one device with
        that batch. Under "multiworker" steps_per_execution is 1, and every worker writes
        the run directory: give each its own `out`.

    Every run seeds Python, NumPy, TensorFlow and Keras with the training section's `seed`
    before building the data pipeline and the model. With `deterministic: true` it also
    calls `tf.config.experimental.enable_op_determinism()`, so that the same seed gives
    bit-identical weights run after run on the same machine and versions. That switch is
    process-global and cannot be turned off again (TensorFlow has no call for it): later
    models in the same process also run deterministically (often slower; unseeded random
    ops raise). On a GPU, ops without a deterministic kernel then raise an error instead
    of running.

    Raises:
      TrainingDiverged (a ValueError): the loss became NaN or infinite; training stops at
        once and model.weights.h5 keeps the weights of the last epoch that ended finite.
    """
    # First: MultiWorkerMirroredStrategy sets up collective ops, which must precede any other op.
    strategy = make_strategy(strategy)
    if resume is not None:
        out, preset, protocol, weights, evaluate_after, data_dir = _resumed_run(
            resume, out, preset, model, training, evaluation, weights, data_dir)
    else:
        preset = resolve_preset(DEFAULT_PRESET if preset is None else preset, model, training, evaluation,
                                protocol)
        out = out or default_run_dir(preset.name)
        if os.path.exists(os.path.join(out, CONFIG_FILE)):
            raise ValueError(f"{out} already holds a run; choose another --out, or continue it with --resume {out}")
    t = preset.training
    if t.deterministic:
        # Process-global and one-way: TensorFlow has no call that turns it off again.
        tf.config.experimental.enable_op_determinism()
    # Seeds Python's, NumPy's and TensorFlow's global generators (and so Keras' initializers and
    # the model's sampling SeedGenerator) before the data pipeline and the model are built.
    keras.utils.set_random_seed(t.seed)

    # Data and model first: a bad data dir or config must not leave a half-made run directory.
    train_data, val_data = datasets.load(
        preset.data.name, split=(preset.data.train_split, preset.data.validation_split or preset.data.eval_split),
        data_dir=data_dir, batch_size=(t.batch_size, t.validation_batch_size), binarize=preset.data.binarize,
        seed=t.seed, labels=preset.data.labels, train_split=preset.data.train_split)
    state_path = os.path.join(out, RESUME_FILE)
    state = read_state(state_path) if resume is not None else None
    with strategy.scope():     # mirrored variables, and optimizers that know the strategy
        vae = build_model(preset.model)
        if weights is not None and state is None:
            load_weights(vae, weights)
        compile_model(vae, dataclasses.replace(
            t, steps_per_execution=supported_steps_per_execution(strategy, t.steps_per_execution)))
    val_data = prepare_dataset(val_data, strategy, t.validation_batch_size)   # equal shares; DATA sharding
    os.makedirs(out, exist_ok=True)
    if resume is None:
        # The run's own weights replace any the preset ships: its config has no pretrained section.
        atomic_write_text(os.path.join(out, CONFIG_FILE),
                          yaml.safe_dump(dataclasses.replace(preset, pretrained=None).to_dict(), sort_keys=False))
        atomic_write_text(os.path.join(out, TRAIN_ARGS_FILE), json.dumps(
            {"preset": preset.name, "protocol": protocol, "weights": _absolute(weights), "evaluate_after": evaluate_after,
             "data_dir": _absolute(data_dir)}, indent=2) + "\n")

    grid_batch = next(iter(load_eval_data(preset, data_dir, examples=16, batch_size=16, seed=t.seed)))
    grid_x, grid_condition = vae.unpack(grid_batch)
    steps_per_epoch = t.steps_per_epoch or int(train_data.cardinality())   # default: one pass
    history_path = os.path.join(out, "history.csv")
    epoch, step = (state[0]["epoch"], state[0]["step"]) if state else (0, 0)
    mode = "max" if t.monitor == "val_elbo" else "min"
    checkpoints = Checkpoints(os.path.join(out, WEIGHTS_FILE), os.path.join(out, BEST_WEIGHTS_FILE),
                              monitor=t.monitor, mode=mode, every_seconds=t.checkpoint_seconds,
                              start_from_epoch=t.kl_warmup_epochs)
    history = HistoryCSV(history_path, read_history(history_path, epoch) if state else ())
    run_callbacks = [StopOnNonFinite(os.path.join(out, WEIGHTS_FILE)), checkpoints, history,
                     LearningCurves(os.path.join(out, CURVES_FILE), history, checkpoints),
                     ImageGrid(grid_x, os.path.join(out, "images"), grid_condition, every=t.image_every, seed=t.seed)]
    if t.kl_warmup_epochs:
        run_callbacks.insert(0, KLWarmup(t.kl_warmup_epochs, steps_per_epoch))
    schedule = learning_rate_schedule(t.schedule, t.learning_rate)
    if schedule is not None:
        run_callbacks.insert(0, schedule)
    early_stopping = None
    if t.early_stopping_patience:
        early_stopping = keras.callbacks.EarlyStopping(monitor=t.monitor, mode=mode,
                                                       patience=t.early_stopping_patience,
                                                       min_delta=t.early_stopping_min_delta,
                                                       start_from_epoch=t.kl_warmup_epochs)
        run_callbacks.append(early_stopping)
    resume_state = ResumeState(state_path, t.checkpoint_seconds, checkpoints, early_stopping, state)
    run_callbacks += [*(callbacks or []), resume_state]

    def fit(stream, first_epoch, last_epoch, steps):
        try:
            vae.fit(stream, initial_epoch=first_epoch, epochs=last_epoch, validation_data=val_data,
                    steps_per_epoch=steps, callbacks=run_callbacks, verbose=verbose,
                    shuffle=False)  # the pipeline shuffles
        except TrainingDiverged:
            checkpoints.write()    # the last finite epoch's weights, if they were waiting
            raise

    def stream_from(global_step):
        """The training stream from its `global_step`-th batch on: pass after pass over the
        shuffled data without end, each batch a function of the seed and its index alone
        (`datasets.load(stream_from=...)`), so a resumed run reads the batches an uninterrupted
        one reads next and starts as fast. `fit` draws all its epochs from one iterator of it.
        (Given a finite data set, `fit` makes a new iterator each epoch, and destroying the old
        one, with its prefetch threads, stalled the next epoch's first step by 0.4-1 s in 3 of
        7 epochs on a 2-core machine, about a tenth of a 5 s epoch: docs/performance.md.)"""
        stream = datasets.load(
            preset.data.name, split=preset.data.train_split, data_dir=data_dir, batch_size=t.batch_size,
            binarize=preset.data.binarize, seed=t.seed, labels=preset.data.labels,
            train_split=preset.data.train_split, stream_from=global_step)
        return prepare_dataset(stream, strategy)

    if resume_state.finished:     # interrupted after training (in the evaluation): its final weights
        resume_state.restore(vae)
    else:
        if step:     # finish the interrupted epoch first
            resume_state.step_offset = step
            fit(stream_from(epoch * steps_per_epoch + step), epoch, epoch + 1, steps_per_epoch - step)
            epoch += 1
        if epoch < t.epochs and not (step and vae.stop_training):
            fit(stream_from(epoch * steps_per_epoch), epoch, t.epochs, steps_per_epoch)
        if early_stopping is not None:
            _end_on_best_epoch(vae, checkpoints)
        resume_state.mark_finished()
    final = resume_state.last_logs or {}
    if not all(np.isfinite(v) for v in final.values()):
        raise TrainingDiverged(
            f"training diverged (non-finite metrics {final}); {os.path.join(out, WEIGHTS_FILE)} holds the "
            f"weights of the last epoch that ended finite, if any. {DIVERGENCE_HINTS}")

    metadata = {"preset": preset.name, "protocol": protocol, "dataset": preset.data.name, "seed": t.seed,
                "epochs": resume_state.epoch, "train_seconds": resume_state.train_seconds,
                "best_epoch": checkpoints.best_epoch, "resumed": resume is not None,
                "final_metrics": final, "versions": versions(),
                "created": datetime.datetime.now().isoformat(timespec="seconds")}
    if evaluate_after:
        if verbose:
            print(f"Evaluating on {preset.evaluation.examples or 'all'} {preset.data.eval_split} examples "
                  f"with k={preset.evaluation.k} importance samples")
        report = evaluate(vae, load_eval_data(preset, data_dir), k=preset.evaluation.k, verbose=bool(verbose),
                          out_path=os.path.join(out, "evaluation.json"), proposal=preset.evaluation.proposal)
        metadata["evaluation"] = report
    atomic_write_text(os.path.join(out, "metadata.json"), json.dumps(metadata, indent=2) + "\n")
    if os.path.exists(state_path):
        os.remove(state_path)   # the run is complete: nothing left to resume
    return out


def _end_on_best_epoch(vae, checkpoints):
    """Sets the model to the best validation epoch's weights: those of best.weights.h5 and of
    metadata's best_epoch, whether or not the run was resumed. (Keras' own restore_best_weights
    would restore the last epoch that beat the best by min_delta, an older one.)"""
    if checkpoints.best_weights is not None:
        vae.set_weights(checkpoints.best_weights)
    elif os.path.isfile(checkpoints.best_path):     # a resume state from before the best weights were kept
        load_weights(vae, checkpoints.best_path)


def _absolute(path):
    """An absolute path (None stays None): a run resumed from another directory finds its files."""
    return None if path is None else os.path.abspath(os.fspath(path))


def _resumed_run(run_dir, out, preset, model, training, evaluation, weights, data_dir):
    """(out, preset, protocol, weights, evaluate_after, data_dir) of an interrupted run, from
    the files it wrote when it started."""
    if out is not None and os.path.abspath(out) != os.path.abspath(run_dir):
        raise ValueError(f"--resume continues the run in {run_dir} in place; --out must be that directory or left out")
    if preset is not None or model or training or evaluation or weights:
        raise ValueError("--resume continues a run as it was configured when it started; "
                         "it takes no preset, overrides or weights")
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        raise ValueError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    if os.path.isfile(os.path.join(run_dir, "metadata.json")):
        raise ValueError(f"the run in {run_dir} is complete (it has metadata.json): nothing to resume")
    started = started_with(run_dir)
    remove_stale_temporaries(run_dir)
    preset = load_preset(run_dir)        # named after the directory: the preset's name is in train_args
    if started.get("preset"):
        preset = dataclasses.replace(preset, name=started["preset"])
    return (run_dir, preset, started.get("protocol", "short"), started.get("weights"),
            started.get("evaluate_after", True), data_dir if data_dir is not None else started.get("data_dir"))


def started_with(run_dir: str) -> dict:
    """How a run was started (train_args.json: preset name, protocol, initial weights, data
    directory, evaluate_after); {} for a run written before that file existed."""
    path = os.path.join(run_dir, TRAIN_ARGS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)
