"""The trained zoo: scripts/train_zoo.py ships a run's best weights with its preset, and
`from_preset` loads them only when their sha256 matches; every shipped preset still computes
the fingerprint recorded when it was trained."""
import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import tfvae
from tfvae.presets import load_preset
from tfvae.zoo import fingerprint, fingerprint_batch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_zoo.py"
_spec = importlib.util.spec_from_file_location("train_zoo_script", SCRIPT)
train_zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_zoo)

TINY = """\
description: a tiny shapes VAE for the zoo tests
model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [16]}}
data: {name: shapes}
training: {epochs: 3, batch_size: 50, steps_per_epoch: 2, image_every: 0, jit_compile: false}
evaluation: {k: 10, examples: 40, batch_size: 20}
"""


def weights_in(path):
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A tiny preset trained and shipped by the script into a zoo directory of its own."""
    root = tmp_path_factory.mktemp("zoo")
    zoo = root / "zoo_configs"
    zoo.mkdir()
    (zoo / "tiny.yaml").write_text(TINY)
    args = ["tiny", "--protocol", "short", "--runs", str(root / "runs"), "--zoo-dir", str(zoo)]
    train_zoo.main(args)
    return zoo, root / "runs" / "tiny_short", args


def test_the_script_ships_the_best_weights_with_a_section_that_describes_them(shipped):
    zoo, run_dir, _ = shipped
    section = yaml.safe_load((zoo / "tiny.yaml").read_text())["pretrained"]
    path = zoo / section["file"]
    assert section["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = weights_in(path)
    assert stored and not any(key.startswith("optimizer") for key in stored)      # variables only
    best = weights_in(run_dir / "best.weights.h5")
    for key, value in stored.items():
        np.testing.assert_array_equal(value, best[key], err_msg=key)
    assert section["protocol"]["name"] == "short" and section["protocol"]["epochs_run"] == 3
    assert section["test"]["k"] == 10 and section["test"]["examples"] == 40
    assert section["test"]["log_px"] >= section["test"]["elbo"] - 3 * section["test"]["elbo_se"]
    assert 0 <= section["test"]["active_units"] <= 2
    assert section["command"].startswith("python scripts/train_zoo.py tiny --protocol short")


def test_from_preset_loads_the_shipped_weights_and_reproduces_the_fingerprint(shipped):
    zoo, run_dir, _ = shipped
    preset = load_preset(str(zoo / "tiny.yaml"))
    trained = tfvae.from_preset(str(zoo / "tiny.yaml"), compile=False)
    from_run = tfvae.from_preset(str(run_dir), weights=str(run_dir / "best.weights.h5"), compile=False)
    for a, b in zip(trained.get_weights(), from_run.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, condition = fingerprint_batch(preset)
    assert fingerprint(trained, x, condition) == pytest.approx(preset.pretrained.fingerprint["elbo"], abs=1e-3)
    fresh = tfvae.from_preset(str(zoo / "tiny.yaml"), compile=False, pretrained=False)
    assert fingerprint(fresh, x, condition) != pytest.approx(preset.pretrained.fingerprint["elbo"], abs=1e-3)


def test_an_altered_or_missing_weights_file_is_refused_by_name(shipped, tmp_path):
    zoo, _, _ = shipped
    copy = tmp_path / "zoo"
    copy.mkdir()
    (copy / "tiny.yaml").write_text((zoo / "tiny.yaml").read_text())
    data = bytearray((zoo / "tiny.weights.h5").read_bytes())
    data[-1] ^= 1
    (copy / "tiny.weights.h5").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"tiny.weights.h5 have been altered"):
        tfvae.from_preset(str(copy / "tiny.yaml"))
    (copy / "tiny.weights.h5").unlink()
    with pytest.raises(ValueError, match=r"weights of preset 'tiny' are missing: .*tiny.weights.h5"):
        tfvae.from_preset(str(copy / "tiny.yaml"))
    assert tfvae.from_preset(str(copy / "tiny.yaml"), pretrained=False, compile=False).built


def test_running_the_script_again_publishes_without_training_again(shipped, capsys):
    zoo, run_dir, args = shipped
    history = (run_dir / "history.csv").read_text()
    train_zoo.main(args)
    assert (run_dir / "history.csv").read_text() == history
    text = (zoo / "tiny.yaml").read_text()
    assert text.count("\npretrained:") == 1 and text.startswith(TINY)
    assert "test log p(x)" in capsys.readouterr().out


SHIPPED = sorted(name for name in tfvae.list_presets() if load_preset(name).pretrained is not None)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_computes_its_recorded_fingerprint(name, shared_data):
    """Fast: no refactor may change what a shipped model computes (1e-3 nats on 100 images)."""
    preset = load_preset(name)
    model = tfvae.from_preset(name, compile=False)
    x, condition = fingerprint_batch(preset, _data_dir(preset, shared_data), preset.pretrained.fingerprint["examples"],
                                     preset.pretrained.fingerprint["seed"])
    assert fingerprint(model, x, condition) == pytest.approx(preset.pretrained.fingerprint["elbo"], abs=1e-3)


def _data_dir(preset, shared_data):
    """The shared data folder of the preset's data set (None for the embedded ones)."""
    folder = Path(shared_data) / preset.data.name
    return str(folder) if folder.is_dir() else None
