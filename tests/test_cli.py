"""The `tfvae` command, end to end on the embedded data set (no network)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfvae
from tfvae.cli import main

RUN_FILES = ["config.yaml", "model.weights.h5", "best.weights.h5", "history.csv", "curves.png", "metadata.json",
             "evaluation.json", "images/epoch_001.png", "images/epoch_002.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "shapes")
    code = main(["train", "--epochs", "2", "--steps-per-epoch", "40", "--eval-k", "20", "--eval-examples", "60",
                 "--out", out, "--set", "latent_dim=4"])
    assert code == 0
    return out


def test_train_on_the_embedded_default_writes_a_complete_run(run_dir):
    for name in RUN_FILES:
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    metadata = json.load(open(os.path.join(run_dir, "metadata.json")))
    assert metadata["dataset"] == "shapes" and metadata["versions"]["tfvae"] == tfvae.__version__
    assert tfvae.load_preset(run_dir).model["latent_dim"] == 4


def test_evaluate_reproduces_the_run_evaluation_from_disk(run_dir, capsys):
    # The trained model in memory (during train) and the model rebuilt from config.yaml and
    # model.weights.h5 must give the same numbers with the same seed and examples.
    out = os.path.join(run_dir, "again.json")
    assert main(["evaluate", run_dir, "--k", "20", "--examples", "60", "--no-disentanglement", "--out", out]) == 0
    first = json.load(open(os.path.join(run_dir, "evaluation.json")))
    again = json.load(open(out))
    assert again["examples"] == 60
    assert again["log_px"] == pytest.approx(first["log_px"], rel=1e-5)
    assert "log p(x) (IWAE, k=20)" in capsys.readouterr().out


def test_evaluate_reports_disentanglement_on_a_data_set_with_factors(run_dir, capsys):
    out = os.path.join(run_dir, "factors.json")
    assert main(["evaluate", run_dir, "--k", "5", "--examples", "20", "--factor-examples", "1500",
                 "--out", out]) == 0
    scores = json.load(open(out))["disentanglement"]
    assert scores["factors"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    for key in ("sap", "dci_disentanglement", "factor_vae_score", "beta_vae_score"):
        assert 0 <= scores[key] <= 1, key
    assert "FactorVAE score" in capsys.readouterr().out
    # The MIG again by hand: the same draws of the factors (seed 0), their images encoded eagerly.
    source = tfvae.data.factor_source("shapes")
    factors = source.sample(None, None, 1500, np.random.default_rng(0))
    codes = tfvae.from_preset(run_dir).encode(source.images(factors)).mean().numpy()
    assert scores["mig"] == pytest.approx(tfvae.metrics.mig(factors, codes)["mig"], rel=1e-6)
    assert main(["evaluate", run_dir, "--k", "5", "--examples", "20", "--no-disentanglement", "--out", out]) == 0
    assert "disentanglement" not in json.load(open(out))


def test_traverse_writes_a_grid_and_a_gif_per_dimension(run_dir, capsys):
    out = os.path.join(run_dir, "trav")
    assert main(["traverse", run_dir, "--examples", "30", "--dims", "0", "2", "--steps", "5", "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["traversals.png", "z0.gif", "z2.gif"]
    assert "z0" in capsys.readouterr().out


def test_from_preset_on_a_run_dir_loads_the_trained_weights(run_dir):
    model = tfvae.from_preset(run_dir)
    fresh = tfvae.from_preset("vae_shapes", latent_dim=4, pretrained=False)
    x = tfvae.data.load_arrays("shapes", "test")[0][:4]
    assert not np.allclose(model.reconstruct(x), fresh.reconstruct(x))
    fresh.load_weights(os.path.join(run_dir, "model.weights.h5"))
    np.testing.assert_allclose(model.reconstruct(x), fresh.reconstruct(x), rtol=1e-6)


def test_sample_writes_a_png(run_dir):
    out = os.path.join(run_dir, "s.png")
    assert main(["sample", run_dir, "--n", "8", "--out", out]) == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_train_refuses_to_overwrite_a_run(run_dir, capsys):
    assert main(["train", "--out", run_dir, "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "vae_shapess"], "Did you mean 'vae_shapes'"),
    (["train", "--set", "latnt_dim=3"], "unknown key 'latnt_dim'"),
    (["train", "--epochs", "0"], "'epochs' must be an integer"),
    (["train", "vae_bmnist", "--data-dir", "/nonexistent-dir"], "binarized_mnist_train.amat"),
    (["evaluate", "/nonexistent-run"], "config.yaml"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfvae: error:") and message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []          # no half-made run directory is left behind


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_above_the_one_line(how, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFVAE_DEBUG", raising=False)
    if how == "environment":
        monkeypatch.setenv("TFVAE_DEBUG", "1")
    argv = (["--debug"] if how == "flag" else []) + ["train", "vae_shapess"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "load_preset" in err
    assert err.rstrip().splitlines()[-1].startswith("tfvae: error:") and "Did you mean 'vae_shapes'" in err


def test_the_console_script_is_installed():
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "tfvae"), "list"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("vae_bmnist", "vae_shapes", "linear_gaussian", "binarized_mnist"):
        assert name in result.stdout
