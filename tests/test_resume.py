"""Resumable training: a run killed with SIGKILL in the middle of an epoch, resumed, killed
again in its final evaluation and resumed with `tfvae train --resume` ends exactly as the same
run uninterrupted (op determinism on)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from tfvae import from_preset, load_preset
from tfvae.inference.evaluate import evaluate
from tfvae.io import atomic_path, remove_stale_temporaries
from tfvae.models import VAE
from tfvae.training.resume import read_best_weights, read_state, restore_variables, save_state
from tfvae.training.callbacks import HistoryCSV, read_history
from tfvae.training.run import load_eval_data, train

PRESET = """\
description: a tiny run for the resume tests
model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [16]}}
data: {name: shapes}
training: {epochs: 3, steps_per_epoch: 6, batch_size: 16, steps_per_execution: 2, deterministic: true,
           checkpoint_seconds: 0, kl_warmup_epochs: 1, image_every: 0,
           early_stopping_patience: 5, early_stopping_min_delta: 1.0e+9}
evaluation: {k: 10, examples: 20, batch_size: 20}
"""

# Trains the preset and kills its own process with SIGKILL at the end of the compiled call that
# ends with step 4 of epoch 2. The extra callbacks run before the run's state is saved, so the
# last state on disk is the one after step 2: the kill loses the steps taken since.
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import keras
    from tfvae import train

    class KillNine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    train(sys.argv[1], out=sys.argv[2], verbose=0, callbacks=[KillNine()])
""")
# Resumes a run, finishes its training and kills itself with SIGKILL as its evaluation begins.
KILLED_IN_EVALUATION = textwrap.dedent("""
    import os, signal, sys
    import tfvae.training.run as run

    run.evaluate = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    run.train(resume=sys.argv[1], verbose=0)
""")
UNINTERRUPTED_RUN = "import sys; from tfvae import train; train(sys.argv[1], out=sys.argv[2], verbose=0)"


def weights_of(path):
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def test_a_run_killed_mid_epoch_and_resumed_ends_bit_identical_to_the_uninterrupted_run(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    killed, reference = str(tmp_path / "killed"), str(tmp_path / "reference")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = [subprocess.Popen([sys.executable, "-c", code, str(preset), out], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for code, out in ((KILLED_RUN, killed), (UNINTERRUPTED_RUN, reference))]
    (_, killed_err), (_, reference_err) = (run.communicate(timeout=600) for run in runs)
    assert runs[0].returncode == -signal.SIGKILL, killed_err[-2000:]
    assert runs[1].returncode == 0, reference_err[-2000:]

    meta, _ = read_state(os.path.join(killed, "resume_state.npz"))
    assert (meta["epoch"], meta["step"], meta["finished"]) == (1, 2, False)    # mid-epoch 2, after step 2
    assert not os.path.exists(os.path.join(killed, "metadata.json"))

    in_evaluation = subprocess.run([sys.executable, "-c", KILLED_IN_EVALUATION, killed], env=env,
                                   capture_output=True, text=True, timeout=600)
    assert in_evaluation.returncode == -signal.SIGKILL, in_evaluation.stderr[-2000:]
    meta, _ = read_state(os.path.join(killed, "resume_state.npz"))
    assert (meta["epoch"], meta["finished"]) == (3, True) and not os.path.exists(os.path.join(killed, "metadata.json"))

    resumed = subprocess.run([sys.executable, "-m", "tfvae.cli", "train", "--resume", killed], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    for name in ("model.weights.h5", "best.weights.h5"):
        a, b = weights_of(os.path.join(reference, name)), weights_of(os.path.join(killed, name))
        assert a.keys() == b.keys() and a
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    with open(os.path.join(reference, "history.csv")) as f, open(os.path.join(killed, "history.csv")) as g:
        assert f.read() == g.read()
    with open(os.path.join(reference, "evaluation.json")) as f, open(os.path.join(killed, "evaluation.json")) as g:
        a, b = json.load(f), json.load(g)
    assert (a["log_px"], a["elbo"]) == (b["log_px"], b["elbo"])
    # Both evaluated the best epoch's weights (best.weights.h5, metadata's best_epoch), not those
    # of the last epoch that beat the best by min_delta (Keras' restore_best_weights: the first
    # compared epoch, here the second), nor a fresh model.
    best = from_preset(reference, weights=os.path.join(reference, "best.weights.h5"))
    data = load_eval_data(load_preset(reference), None)
    assert evaluate(best, data, k=10, verbose=False)["log_px"] == pytest.approx(a["log_px"], abs=1e-4)
    with open(os.path.join(killed, "metadata.json")) as f, open(os.path.join(reference, "metadata.json")) as g:
        metadata, uninterrupted = json.load(f), json.load(g)
    assert metadata["resumed"] and metadata["epochs"] == 3 and metadata["best_epoch"] == 3
    # The preset's name, not the run directory's: publish ships a run under the name it records.
    assert metadata["preset"] == uninterrupted["preset"] == "tiny"
    assert sorted(os.listdir(killed)) == sorted(os.listdir(reference))   # state file removed, no temporaries


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(ValueError, match="not a run directory"):
        train(resume=str(tmp_path))
    (tmp_path / "config.yaml").write_text(PRESET)
    with pytest.raises(ValueError, match="no preset, overrides or weights"):
        train(resume=str(tmp_path), training={"epochs": 5})
    with pytest.raises(ValueError, match="in place"):
        train(resume=str(tmp_path), out=str(tmp_path / "elsewhere"))
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(ValueError, match="complete"):
        train(resume=str(tmp_path))
    with pytest.raises(ValueError, match="already holds a run; .*--resume"):
        train(str(tmp_path / "config.yaml"), out=str(tmp_path))


def test_history_is_rewritten_whole_and_a_resumed_run_keeps_the_epochs_before_its_own(tmp_path):
    path = str(tmp_path / "history.csv")
    history = HistoryCSV(path)
    for epoch, loss in enumerate([3.5, 2.5, 1.5]):
        history.on_epoch_end(epoch, {"loss": np.float32(loss), "elbo": -loss})
    with open(path) as f:
        assert f.read() == "epoch,elbo,loss\n0,-3.5,3.5\n1,-2.5,2.5\n2,-1.5,1.5\n"
    kept = read_history(path, before_epoch=2)                # epoch 2 is trained again
    assert [r["epoch"] for r in kept] == ["0", "1"]
    resumed = HistoryCSV(path, kept)
    resumed.on_epoch_end(2, {"loss": 1.25, "elbo": -1.25})
    with open(path) as f:
        assert f.read() == "epoch,elbo,loss\n0,-3.5,3.5\n1,-2.5,2.5\n2,-1.25,1.25\n"
    assert read_history(str(tmp_path / "absent.csv")) == []


def test_stale_temporaries_of_a_killed_atomic_write_are_removed(tmp_path):
    class Killed(Exception):
        pass

    target = tmp_path / "state.npz"
    target.write_text("the previous state")
    with pytest.raises(Killed):
        with atomic_path(str(target)) as tmp:
            open(tmp, "w").write("half of")
            raise Killed
    # atomic_path cleans up after an exception; a SIGKILL leaves its directory behind:
    stale = tmp_path / ".state.npz.abc123"
    stale.mkdir()
    (stale / "partial.npz").write_text("half of")
    (tmp_path / ".keep").mkdir()
    (tmp_path / ".keep" / "notes").write_text("not ours")
    assert remove_stale_temporaries(str(tmp_path)) == [str(stale)]
    assert sorted(os.listdir(tmp_path)) == [".keep", "state.npz"] and target.read_text() == "the previous state"


def test_a_state_that_does_not_fit_the_model_is_refused_by_name(tmp_path):
    spec = {"type": "mlp", "hidden": [4]}
    model = VAE(data_shape=(6,), latent_dim=2, encoder=spec)
    model.compile(optimizer="adam")
    model.optimizer.build(model.optimized_variables)
    path = str(tmp_path / "state.npz")
    save_state(path, model, {"epoch": 1, "step": 0})
    state = read_state(path)
    assert {k: v for k, v in state[0].items() if k != "variables"} == {"epoch": 1, "step": 0}
    assert len(state[1]) == len(state[0]["variables"]) == 36   # 10 model, 2 + 16 Adam, 8 metric variables
    assert read_best_weights(path) is None
    best = [w + 1 for w in model.get_weights()]                 # the best epoch's weights ride along
    save_state(path, model, {"epoch": 1, "step": 0}, best)
    assert all(np.array_equal(a, b) for a, b in zip(read_best_weights(path), best))
    assert len(read_state(path)[1]) == 36

    other = VAE(data_shape=(6,), latent_dim=3, encoder=spec)
    other.compile(optimizer="adam")                            # a second Adam: named adam_1, fits by position
    other.optimizer.build(other.optimized_variables)
    with pytest.raises(ValueError, match=r"holds model: vae/encoder/params/kernel with shape \(4, 4\) where "
                                         r"the model has model: vae/encoder/params/kernel with shape \(4, 6\)"):
        restore_variables(other, state, path)
    with pytest.raises(ValueError, match="holds 35 variables, the model and its optimizers 36"):
        restore_variables(model, (state[0] | {"variables": state[0]["variables"][:-1]}, state[1][:-1]), path)

    kernel = model.encoder_net.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))   # a diverged model: nothing is written
    assert not save_state(str(tmp_path / "diverged.npz"), model, {}) and not (tmp_path / "diverged.npz").exists()

    with open(path, "r+b") as f:           # damaged after it was written
        f.truncate(100)
    with pytest.raises(ValueError, match="cannot be read"):
        read_state(path)
