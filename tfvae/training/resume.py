"""Resumable training: the whole training state in one file, written atomically.

`ResumeState` (a Keras callback) writes RUN_DIR/resume_state.npz every `every_seconds` of
training (0: after every compiled call) and at the end of every epoch. The file holds
everything the rest of the run depends on:

* the model's variables: weights, `kl_weight`, and the state of the sampling
  `SeedGenerator`, so the resumed run draws the same z as the uninterrupted one;
* every optimizer's variables: iteration count, learning rate, moments (also a variant's
  second optimizer, such as FactorVAE's discriminator optimizer);
* the metric trackers' running sums of the epoch in progress, so the epoch's logged means
  cover all of its steps;
* where the run stands (JSON under the key "__meta__"): the epoch, the steps done in it, the
  training seconds so far, the last epoch's logs, the best validation loss of
  `Checkpoints` and the counters of `EarlyStopping`.

The arrays are written to a temporary name and renamed over the file (`tfvae.io`), so a
kill -9 at any moment leaves either the previous state or the new one, never half of one.

`tfvae.training.train(resume=RUN_DIR)` rebuilds the run from its config.yaml, restores this
state, and starts the training stream at the same global step: the stream's batch b is a
function of the seed and b alone (`tfvae.data.load(stream_from=...)`), so it yields exactly
the batches the killed run would have read next, at once, however far the run had got. It
finishes the interrupted epoch, then runs the remaining ones; a run killed after its training,
in the final evaluation, restores its final weights and evaluates them. With the same seed, a
resumed run takes the same steps on the same batches with the same random draws as an
uninterrupted one; with `deterministic: true` its weights are bit-identical
(tests/test_resume.py).
"""
from __future__ import annotations

import json
import os
import time
import zipfile

import keras
import numpy as np

from tfvae.io import atomic_path

RESUME_FILE = "resume_state.npz"
META_KEY = "__meta__"
# EarlyStopping's counters that `on_train_begin` resets and a resumed run must carry on.
EARLY_STOPPING_STATE = ("wait", "best", "best_epoch", "stopped_epoch")


def state_variables(model) -> list[tuple[str, object]]:
    """[(name, variable)] of everything a resumed run restores, in a fixed order: the model's
    variables, those of every optimizer the model holds as an attribute, and its metrics'.

    Saved and restored by position: Keras numbers the names of unnamed objects per process
    (a second Adam is "adam_1"), so a name need not be the same in the resuming process."""
    named = [(f"model: {v.path}", v) for v in model.variables]
    for attribute, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer):
            named += [(f"{attribute}: {v.path}", v) for v in value.variables]
    for metric in model.metrics:
        named += [(f"metric: {v.path}", v) for v in metric.variables]
    return named


def build_optimizers(model):
    """Creates the optimizer's slot variables (as its first step would) so that a saved state
    can be loaded into them before training starts."""
    if not model.optimizer.built:
        with model.distribute_strategy.scope():     # mirrored slots under a tf.distribute strategy
            model.optimizer.build(model.optimized_variables)


def _storable(value) -> np.ndarray:
    value = np.asarray(value)
    return value if value.dtype.kind in "fiub" else value.astype(np.float32)  # bfloat16: widen losslessly


def save_state(path: str, model, meta: dict, best_weights=None) -> bool:
    """Writes the model's training state and `meta` (JSON-able) to `path`, atomically, and
    returns True; writes nothing and returns False when a model weight is NaN or infinite (a
    diverged model). The arrays are stored as v0, v1, ... in `state_variables` order, their
    names in meta["variables"]; `best_weights` (the best epoch's `get_weights`, if given) as
    b0, b1, ... (`read_best_weights`)."""
    named = state_variables(model)
    values = [_storable(v.numpy()) for _, v in named]
    if any(name.startswith("model:") and value.dtype.kind == "f" and not np.isfinite(value).all()
           for (name, _), value in zip(named, values)):
        return False
    arrays = {f"v{i}": value for i, value in enumerate(values)}
    arrays.update({f"b{i}": _storable(value) for i, value in enumerate(best_weights or ())})
    meta = {**meta, "variables": [name for name, _ in named]}
    if best_weights:
        meta["best_weights"] = len(best_weights)
    arrays[META_KEY] = np.array(json.dumps(meta))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return True


def read_state(path: str) -> tuple[dict, list] | None:
    """(meta, [array in `state_variables` order]) of a state file, or None if there is none."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[META_KEY]))
            arrays = [data[f"v{i}"] for i in range(len(meta["variables"]))]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"the resume state {path} cannot be read ({type(e).__name__}: {e}); it is written "
                         f"atomically, so it was damaged afterwards") from None
    return meta, arrays


def read_best_weights(path: str) -> list | None:
    """The best epoch's weights (`get_weights` order) kept in a state file, or None."""
    with np.load(path, allow_pickle=False) as data:
        count = json.loads(str(data[META_KEY])).get("best_weights", 0)
        return [data[f"b{i}"] for i in range(count)] or None


def restore_variables(model, state: tuple[dict, list], path: str, only_metrics: bool = False):
    """Assigns a saved state's arrays to the model's state variables (all, or the metrics'
    only). Raises ValueError naming the first variable that does not fit."""
    meta, arrays = state
    named, saved = state_variables(model), meta["variables"]
    if len(named) != len(saved):
        raise ValueError(f"the resume state {path} does not fit this run's model: it holds {len(saved)} "
                         f"variables, the model and its optimizers {len(named)}")
    for (name, variable), saved_name, value in zip(named, saved, arrays):
        if tuple(value.shape) != tuple(variable.shape) or name.split(":")[0] != saved_name.split(":")[0]:
            raise ValueError(f"the resume state {path} does not fit this run's model: it holds {saved_name} "
                             f"with shape {tuple(value.shape)} where the model has {name} with shape "
                             f"{tuple(variable.shape)}")
        if only_metrics and not name.startswith("metric:"):
            continue
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


class ResumeState(keras.callbacks.Callback):
    """Saves the training state for `train(resume=...)` every `every_seconds` and at the end
    of every epoch, and restores it when the run is resumed.

    Args:
      path: the state file (RUN_DIR/resume_state.npz).
      every_seconds: least training time between two saves within an epoch (0: after every
        compiled call, i.e. every `steps_per_execution` steps).
      checkpoints: the run's `Checkpoints`, whose best validation loss the state carries.
      early_stopping: the run's `EarlyStopping`, if any, whose counters the state carries.
      state: (meta, arrays) read from `path` when resuming, else None.
      train_seconds: training seconds of the earlier, interrupted processes.

    Place it after every other callback: it saves what they have updated at an epoch's end.
    Non-finite weights are never saved (a diverged run resumes from its last finite state).
    """

    def __init__(self, path: str, every_seconds: float, checkpoints=None, early_stopping=None, state=None):
        super().__init__()
        self.path, self.every_seconds = path, every_seconds
        self.checkpoints, self.early_stopping = checkpoints, early_stopping
        self.pending = state
        meta = state[0] if state else {}
        self.epoch, self.step = meta.get("epoch", 0), meta.get("step", 0)
        self.finished = meta.get("finished", False)
        self.train_seconds = meta.get("train_seconds", 0.0)
        self.last_logs = meta.get("logs")
        self.step_offset = 0              # steps of the current epoch done before this `fit` call
        self._early_stopping_state = meta.get("early_stopping")
        self._clock = self._last_save = None
        if checkpoints is not None and meta.get("checkpoints"):
            checkpoints.best = meta["checkpoints"]["best"]    # JSON keeps inf as Infinity
            checkpoints.best_epoch = meta["checkpoints"]["best_epoch"]
            best = read_best_weights(path)
            if best is not None:     # the file may predate them: write it again with the next write
                checkpoints.best_weights, checkpoints.best_written = best, False

    # ----------------------------------------------------------------- the state
    def meta(self) -> dict:
        meta = {"epoch": self.epoch, "step": self.step, "finished": self.finished, "train_seconds": self.elapsed(),
                "logs": self.last_logs}
        if self.checkpoints is not None:
            meta["checkpoints"] = {"best": self.checkpoints.best, "best_epoch": self.checkpoints.best_epoch}
        if self.early_stopping is not None:
            meta["early_stopping"] = self._early_stopping_counters()
        return meta

    def _early_stopping_counters(self) -> dict:
        return {k: _json_number(getattr(self.early_stopping, k, None)) for k in EARLY_STOPPING_STATE}

    def elapsed(self) -> float:
        return self.train_seconds + (time.perf_counter() - self._clock if self._clock is not None else 0.0)

    def save(self):
        best = self.checkpoints.best_weights if self.checkpoints is not None else None
        if save_state(self.path, self.model, self.meta(), best):
            self._last_save = time.perf_counter()

    # ----------------------------------------------------------------- Keras hooks
    def on_train_begin(self, logs=None):
        if self.pending is not None:
            self.restore(self.model)
        if self.early_stopping is not None and self._early_stopping_state:
            # EarlyStopping.on_train_begin (earlier in the list) has just reset its counters.
            for key, value in self._early_stopping_state.items():
                setattr(self.early_stopping, key, value)
        self._clock = self._last_save = time.perf_counter()

    def restore(self, model):
        """Sets every variable of `model` (weights, optimizer slots, seed and metric states) to
        the state read when resuming."""
        build_optimizers(model)
        restore_variables(model, self.pending, self.path)

    def on_epoch_begin(self, epoch, logs=None):
        # Keras reset the metrics just before this call; an interrupted epoch continues its sums.
        if self.pending is not None and epoch == self.epoch and self.step:
            restore_variables(self.model, self.pending, self.path, only_metrics=True)
        self.pending = None
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.step_offset + batch + 1
        if time.perf_counter() - self._last_save >= self.every_seconds:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.step, self.step_offset = epoch + 1, 0, 0
        self.last_logs = {k: float(v) for k, v in (logs or {}).items()}
        self.save()

    def on_train_end(self, logs=None):
        self.train_seconds, self._clock = self.elapsed(), None
        if self.early_stopping is not None:
            self._early_stopping_state = self._early_stopping_counters()

    def mark_finished(self):
        """Saves the state of the finished training (with the weights it ends on): a resumed run
        then skips to the evaluation."""
        self.finished = True
        self.save()


def _json_number(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


__all__ = ["RESUME_FILE", "ResumeState", "build_optimizers", "read_best_weights", "read_state", "restore_variables",
           "save_state", "state_variables"]
