"""Keras callbacks for VAE training runs.

Never losing work: `StopOnNonFinite` stops a diverging run at the first compiled call whose
loss is NaN or infinite and raises `TrainingDiverged`, and `Checkpoints` never writes
non-finite weights, so the run directory keeps the weights of the last finite epoch.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfvae.images import save_image_grid
from tfvae.io import atomic_path, atomic_write_text


BURDA_STAGES = 8


def burda_learning_rate(epoch: int, base: float) -> float:
    """The learning rate of Burda et al. (2016)'s schedule at a 0-based `epoch`: stage i
    (i = 0..7) lasts 3^i epochs at base * 10^(-i/7); after the 3,280 epochs of the eight
    stages the last rate is kept."""
    stage, end = 0, 1
    while epoch >= end and stage < BURDA_STAGES - 1:
        stage += 1
        end += 3 ** stage
    return base * 10 ** (-stage / 7)


def learning_rate_schedule(schedule: str, base: float):
    """A Keras callback that sets the learning rate at each epoch's start, or None for a
    constant rate."""
    if schedule == "constant":
        return None
    if schedule == "burda":
        return keras.callbacks.LearningRateScheduler(lambda epoch, _: burda_learning_rate(epoch, base))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; known: constant, burda")


class TrainingDiverged(ValueError, FloatingPointError):
    """Training produced a NaN or infinite loss. A ValueError, so `tfvae train` prints it as
    one line (`tfvae: error: ...`, exit status 2); also a FloatingPointError, what `train`
    raised for a diverged run before."""


DIVERGENCE_HINTS = ("Likely causes: a learning rate too high (lower learning_rate), a likelihood scale "
                    "too small (e.g. a fixed gaussian scale, or a learned one without a floor), or "
                    "no gradient clipping (set clipnorm in the training section, e.g. clipnorm: 1.0)")


def non_finite_weights(model) -> list[str]:
    """Paths of the model's variables that hold a NaN or an infinity (empty if none)."""
    def finite(value):
        value = np.asarray(value)
        if value.dtype.kind != "f":          # bfloat16 (an ml_dtypes type): widen losslessly
            value = value.astype(np.float32)
        return np.isfinite(value).all()

    return [w.path for w in model.weights if keras.backend.is_float_dtype(w.dtype) and not finite(w.numpy())]


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first compiled call whose loss is NaN or infinite and raises
    `TrainingDiverged`, naming the epoch and the steps, with the likely causes.

    Keras reports the loss once per compiled call (`steps_per_execution` steps), so the
    error names the range of steps of that call. The loss in the logs is the epoch's
    running mean, which stays non-finite once one step's loss was. The error is raised at
    once, from inside `fit`: no later callback runs (in particular `Checkpoints` never
    sees the diverged weights), and `fit` does not return.

    Args:
      weights_path: named in the message as the file that still holds the last finite
        weights (the previous epoch's), if any.
    """

    def __init__(self, weights_path: str | None = None, monitor: str = "loss"):
        super().__init__()
        self.weights_path, self.monitor = weights_path, monitor
        self.epoch, self.begin_step = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.begin_step = batch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or np.isfinite(float(value)):
            return
        self.model.stop_training = True
        steps = self.params.get("steps")
        where = (f"step {batch + 1}" if batch == self.begin_step
                 else f"steps {self.begin_step + 1}-{batch + 1}")
        where += f" of epoch {self.epoch + 1}" + (f" ({steps} steps per epoch)" if steps else "")
        kept = ""
        if self.weights_path:
            kept = (f"; {self.weights_path} keeps the weights of the last epoch that ended finite"
                    if os.path.isfile(self.weights_path) else "; no epoch ended finite, so no weights were saved")
        raise TrainingDiverged(f"training diverged: the {self.monitor} became {float(value)} at {where}{kept}. "
                               f"{DIVERGENCE_HINTS}")


class KLWarmup(keras.callbacks.Callback):
    """Ramps the model's `kl_weight` linearly from 0 to 1 over the first `epochs` epochs
    (Bowman et al. 2016; Sønderby et al. 2016), set before every compiled call of the
    training step: weight = min(1, step / (epochs * steps_per_epoch)), with `step` the
    global index of the call's first step (the optimizer's iteration count, which a resumed
    run restores). With steps_per_execution = n the weight holds for the n steps of a call.

    steps_per_epoch: the run's steps per epoch (default: `fit`'s, read at each epoch's start).
    """

    def __init__(self, epochs: float, steps_per_epoch: int | None = None):
        super().__init__()
        if epochs <= 0:
            raise ValueError(f"KL warm-up needs a positive number of epochs, got {epochs}")
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps_per_epoch = self.steps_per_epoch or self.params.get("steps") or 1
        step = int(self.model.optimizer.iterations.numpy())
        self.model.kl_weight.assign(min(1.0, step / (self.epochs * steps_per_epoch)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = float(self.model.kl_weight.numpy())


class Checkpoints(keras.callbacks.Callback):
    """Keeps the last weights and the best ones (lowest `monitor`, or highest under mode
    "max") in two `.weights.h5` files, written atomically: a crash while saving leaves the
    previous file intact. An epoch that ends with a non-finite loss, or with a NaN or
    infinity in any weight (a diverged model), counts for neither, so both files only ever
    hold finite weights.

    every_seconds: least training time between two writes of the files (0: at every epoch's
    end). Between writes the epoch's weights wait in memory (`get_weights`, milliseconds;
    Keras' `save_weights` took ~0.1 s, 3.6% of a `vae_bmnist` epoch); `on_train_end` and
    `write` save what is waiting. The first epoch is always written. A run that crashes
    before a write loses nothing: its resume state holds the weights, the best ones included
    (`tfvae.training.resume`). When the best epoch is the one just written, its file is a copy.

    start_from_epoch: the epochs before it (0-based: this many epochs) are not compared with the
    others, because their `monitor` measures another objective (a KL warm-up's loss weighs the
    KL by less than 1, so it rises as the weight grows, whatever the model learns). Until then the
    latest epoch stands in as the best (the closest to the objective); from then on the best is
    the best `monitor` among the epochs from `start_from_epoch` on. An epoch without `monitor`
    (no validation data) is judged by the same metric on the training data (`monitor` without
    its "val_" prefix).
    """

    def __init__(self, last_path: str, best_path: str, monitor: str = "val_loss", every_seconds: float = 0.0,
                 start_from_epoch: int = 0, mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f'mode must be "min" or "max", got {mode!r}')
        self.last_path, self.best_path, self.monitor, self.mode = last_path, best_path, monitor, mode
        self.every_seconds, self.start_from_epoch = every_seconds, start_from_epoch
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = None
        self.best_weights = None          # the best epoch's weights (numpy), once there is one
        self.last_weights = None          # the last finite epoch's weights, while not yet written
        self.best_written = True          # whether best_path holds best_weights
        self._written_at = None           # time.monotonic() of the last write

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not np.isfinite(logs.get("loss", 0.0)) or non_finite_weights(self.model):
            return
        weights = self.model.get_weights()
        value = logs.get(self.monitor, logs.get(self.monitor.removeprefix("val_")))
        finite = value is not None and np.isfinite(value)
        if epoch < self.start_from_epoch and finite:     # not comparable: the latest stands in
            self.best_epoch, self.best_weights, self.best_written = epoch + 1, weights, False
        elif finite and (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.best_epoch = float(value), epoch + 1
            self.best_weights, self.best_written = weights, False
        self.last_weights = weights
        if self._written_at is None or time.monotonic() - self._written_at >= self.every_seconds:
            self.write()

    def on_train_end(self, logs=None):
        self.write()

    def write(self):
        """Writes the weights waiting in memory, if any (the last finite epoch's, the best)."""
        if self.last_weights is not None:
            self._save(self.last_weights, self.last_path)
        if not self.best_written and self.best_weights is not None:
            if self.best_weights is self.last_weights:     # the same epoch: copy its file
                with atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                    shutil.copyfile(self.last_path, tmp)
            else:
                self._save(self.best_weights, self.best_path)
            self.best_written = True
        self.last_weights, self._written_at = None, time.monotonic()

    def _save(self, weights, path):
        """Saves `weights` (numpy, in `get_weights` order) with Keras' `save_weights`, through
        the model: its own weights are put back afterwards, whatever they were."""
        current = self.model.get_weights()
        swap = not all(np.array_equal(a, b) for a, b in zip(weights, current))
        if swap:
            self.model.set_weights(weights)
        try:
            with atomic_path(path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        finally:
            if swap:
                self.model.set_weights(current)


class HistoryCSV(keras.callbacks.Callback):
    """history.csv: one row per epoch, its 0-based index then its logs (columns sorted by
    name), rewritten whole and atomically at every epoch's end, so that a crash never leaves
    a line cut short (Keras' CSVLogger appends in place).

    rows: the rows of earlier epochs, e.g. `read_history(path, before_epoch)` when resuming.
    """

    def __init__(self, path: str, rows=()):
        super().__init__()
        self.path, self.rows = path, [dict(r) for r in rows]

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        columns = ["epoch", *sorted({k for row in self.rows for k in row} - {"epoch"})]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


class LearningCurves(keras.callbacks.Callback):
    """curves.png: the learning curves (`tfvae.training.curves`) of the rows a `HistoryCSV`
    holds, with the best epoch of a `Checkpoints`, drawn after the first epoch, then at most
    every `every_seconds` of training, and at its end (a drawing took 0.4-0.65 s for
    histories of 130-1,600 epochs; a minute apart that is about one percent of the time)."""

    def __init__(self, path: str, history: HistoryCSV, checkpoints: Checkpoints | None = None,
                 every_seconds: float = 60.0):
        super().__init__()
        self.path, self.history, self.checkpoints = path, history, checkpoints
        self.every_seconds = float(every_seconds)
        self._drawn_at = None

    def on_epoch_end(self, epoch, logs=None):
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.every_seconds:
            self.draw()

    def on_train_end(self, logs=None):
        self.draw()

    def draw(self):
        from tfvae.training.curves import plot_learning_curves

        if self.history.rows:
            best = self.checkpoints.best_epoch if self.checkpoints is not None else None
            plot_learning_curves(self.history.rows, self.path, best)
        self._drawn_at = time.monotonic()


def read_history(path: str, before_epoch: int | None = None) -> list[dict]:
    """The rows of a history.csv ({column: text}), those of epochs < `before_epoch` only if
    given (a resumed run trains the later ones again); [] if there is no file."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if before_epoch is None or int(r["epoch"]) < before_epoch]


class ImageGrid(keras.callbacks.Callback):
    """Every `every` epochs, a PNG of fixed inputs, their reconstructions and samples
    from the prior (fixed seed), so that epochs can be compared by eye.

    The reconstructions and samples come from one graph function traced at the first grid
    (the model's variables are read at each call): run eagerly they took ~0.1 s a grid, 3%
    of a `vae_bmnist` epoch."""

    def __init__(self, x, directory: str, condition=None, every: int = 1, n: int = 16, seed: int = 0):
        super().__init__()
        self.x = np.asarray(x[:n])
        self.condition = None if condition is None else np.asarray(condition[:n])
        self.directory, self.every, self.seed = directory, every, seed
        self._draw = None

    def set_model(self, model):
        super().set_model(model)
        self._draw = tf.function(lambda: (model.reconstruct(self.x, self.condition),
                                          model.sample(len(self.x), seed=self.seed, condition=self.condition)),
                                 autograph=False)

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        reconstruction, samples = (t.numpy() for t in self._draw())
        loss = (logs or {}).get("val_loss", (logs or {}).get("loss"))
        save_image_grid({"data": self.x, "reconstruction (mean of p(x|z), z = mean of q)": reconstruction,
                         "samples (mean of p(x|z), z ~ p(z))": samples},
                        os.path.join(self.directory, f"epoch_{epoch + 1:03d}.png"),
                        title=f"epoch {epoch + 1}" + (f", loss {loss:.2f}" if loss is not None else ""))
