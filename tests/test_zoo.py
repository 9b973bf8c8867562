"""The trained zoo: scripts/train_zoo.py ships a run's best weights with its preset, and
`from_preset` loads them only when their sha256 matches; every shipped preset still computes
the fingerprint recorded when it was trained."""
import hashlib
import importlib.util
import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import tfvae
from tfvae.presets import load_preset
from tfvae.training.run import load_eval_data
from tfvae.zoo import fingerprint, fingerprint_batch, replace_zoo_table, zoo_table

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_zoo = _script("train_zoo")

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
    # An override that keeps the variables' shapes loads the trained weights; one that changes
    # them is refused with the way out, and pretrained=False gives that fresh network.
    assert tfvae.from_preset(str(zoo / "tiny.yaml"), compile=False, kl="monte_carlo").get_weights()[0].tolist() \
        == trained.get_weights()[0].tolist()
    with pytest.raises(ValueError, match=r"latent_dim.*change the network that preset 'tiny' ships trained: "
                                         r"pass pretrained=False"):
        tfvae.from_preset(str(zoo / "tiny.yaml"), latent_dim=3)
    assert tfvae.from_preset(str(zoo / "tiny.yaml"), latent_dim=3, pretrained=False).latent_dim == 3


def test_publish_refuses_an_unfinished_run_and_a_run_of_another_network(shipped, tmp_path):
    from tfvae.zoo import publish
    zoo, run_dir, _ = shipped
    other = tmp_path / "zoo"
    other.mkdir()
    (other / "tiny.yaml").write_text(TINY.replace("latent_dim: 2", "latent_dim: 3"))
    with pytest.raises(ValueError, match=r"another network than preset 'tiny' .*differ in latent_dim"):
        publish(str(run_dir), str(other), "cmd", preset="tiny")
    assert not (other / "tiny.weights.h5").exists() and "pretrained" not in (other / "tiny.yaml").read_text()
    with pytest.raises(ValueError, match="not a finished run"):
        publish(str(tmp_path), str(zoo), "cmd")


def test_publish_refuses_a_run_that_blew_up_after_its_best_epoch(shipped, tmp_path):
    """A finite blow-up (the loss 10x its best and more) ends in early stopping on the best
    epoch: publishing it as converged is refused, the zoo left as it was; a rise below the
    factor (overfitting) is published."""
    import shutil

    from tfvae.zoo import publish
    zoo, run_dir, _ = shipped
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    best_epoch = json.loads((run / "metadata.json").read_text())["best_epoch"]
    history = (run / "history.csv").read_text().splitlines()
    columns = history[0].split(",")
    best_loss = float(history[best_epoch].split(",")[columns.index("loss")])
    other = tmp_path / "zoo"
    other.mkdir()
    (other / "tiny.yaml").write_text(TINY)

    def with_later_loss(loss):
        row = ["0.0"] * len(columns)
        row[0], row[columns.index("loss")] = str(len(history) - 1), str(loss)
        (run / "history.csv").write_text("\n".join(history + [",".join(row)]) + "\n")

    with_later_loss(best_loss + 11 * max(abs(best_loss), 1))
    with pytest.raises(ValueError, match=rf"blew up after its best epoch {best_epoch}: .* at epoch {len(history)}"):
        publish(str(run), str(other), "cmd", preset="tiny")
    assert not (other / "tiny.weights.h5").exists() and "pretrained" not in (other / "tiny.yaml").read_text()
    with_later_loss(best_loss + 9 * max(abs(best_loss), 1))
    assert publish(str(run), str(other), "cmd", preset="tiny")["file"] == "tiny.weights.h5"


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


def test_the_commands_on_a_run_take_a_trained_preset_too(shipped, tmp_path, monkeypatch, capsys):
    """`tfvae evaluate PRESET` scores the shipped model (into ./PRESET/), as tfvae.evaluate does
    on the same examples; a preset that ships no weights is one line of error."""
    from tfvae.cli import main
    zoo, _, _ = shipped
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(zoo / "tiny.yaml"), "--k", "3", "--examples", "20", "--no-disentanglement"]) == 0
    written = yaml.safe_load((tmp_path / "tiny" / "evaluation.json").read_text())
    preset = load_preset(str(zoo / "tiny.yaml"))
    direct = tfvae.evaluate(tfvae.from_preset(str(zoo / "tiny.yaml"), compile=False),
                            load_eval_data(preset, None, examples=20), k=3, seed=0, verbose=False)
    assert written["log_px"] == pytest.approx(direct["log_px"], abs=1e-4) and written["examples"] == 20
    assert main(["sample", str(zoo / "tiny.yaml"), "--n", "4"]) == 0
    assert (tmp_path / "tiny" / "samples_seed0.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    (tmp_path / "untrained.yaml").write_text(TINY)
    assert main(["evaluate", str(tmp_path / "untrained.yaml")]) == 2
    assert "preset 'untrained' ships no trained weights" in capsys.readouterr().err


def test_an_evaluation_cut_short_is_completed_by_test_only(shipped, tmp_path, capsys):
    """publish writes the weights and their section before the test evaluation; --test-only
    measures the shipped weights alone and records what the whole publish recorded."""
    from tfvae.cli import _preset_line
    from tfvae.zoo import write_pretrained_section
    zoo, _, _ = shipped
    copy = tmp_path / "zoo"
    copy.mkdir()
    (copy / "tiny.weights.h5").write_bytes((zoo / "tiny.weights.h5").read_bytes())
    (copy / "tiny.yaml").write_text((zoo / "tiny.yaml").read_text())
    published = yaml.safe_load((zoo / "tiny.yaml").read_text())["pretrained"]
    write_pretrained_section(str(copy / "tiny.yaml"), {**published, "test": None})
    assert _preset_line(str(copy / "tiny.yaml"), "tiny").startswith("[trained, not yet evaluated]")
    train_zoo.main(["tiny", "--test-only", "--zoo-dir", str(copy)])
    assert yaml.safe_load((copy / "tiny.yaml").read_text())["pretrained"] == published
    assert _preset_line(str(copy / "tiny.yaml"), "tiny").startswith(
        f"[trained: test log p(x) {published['test']['log_px']:.2f}")


def test_fine_tuning_a_trained_preset_on_the_users_own_data(shipped, tmp_path):
    """The README's fine-tuning path, on a numpy array of the user's: the trained preset compiled
    at a tenth of its learning rate, fit, evaluated, saved as .keras, reloaded, exported. Checked
    against Adam's first step (every weight moves by at most the learning rate, most by almost
    exactly it: the move is lr * g / (|g| + eps')), against the shipped weights it must start
    from, and against the reloaded and exported models, which must compute what it computes."""
    zoo, _, _ = shipped
    preset = str(zoo / "tiny.yaml")
    images = next(iter(tfvae.data.load("shapes", split="test", batch_size=200, seed=1))).numpy()
    new_data = np.ascontiguousarray(np.transpose(images, (0, 2, 1, 3)))     # shapes transposed: unseen data
    shipped_weights = tfvae.from_preset(preset, compile=False).get_weights()
    model = tfvae.from_preset(preset, training={"learning_rate": 1e-4})
    for a, b in zip(model.get_weights(), shipped_weights):
        np.testing.assert_array_equal(a, b)
    before = fingerprint(model, new_data)

    model.fit(new_data[:20], batch_size=20, epochs=1, verbose=0)                  # one step
    moves = np.concatenate([np.abs(a - b).ravel() for a, b in zip(model.get_weights(), shipped_weights)])
    assert moves.max() <= 1e-4 * (1 + 1e-3) and moves.max() >= 1e-4 * 0.99
    assert np.median(moves) > 0.5e-4

    model.fit(tf.data.Dataset.from_tensor_slices(new_data).batch(20), epochs=3, verbose=0)   # a pipeline too
    assert fingerprint(model, new_data) > before + 1.0
    report = tfvae.evaluate(model, new_data[:40], k=20, seed=3, verbose=False)

    path = str(tmp_path / "fine_tuned.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    again = tfvae.evaluate(reloaded, new_data[:40], k=20, seed=3, verbose=False)
    assert again["log_px"] == pytest.approx(report["log_px"], abs=1e-4)

    tfvae.export(reloaded, str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    served_elbo = np.mean(served.elbo(tf.constant(new_data))["elbo"].numpy())
    assert served_elbo == pytest.approx(fingerprint(model, new_data, seed=0), abs=1e-3)


def test_the_fine_tuning_comparison_starts_from_the_shipped_model(shipped, tmp_path):
    """scripts/finetune.py: the trained start's first point is the shipped model as scored
    directly; both curves are scored at every requested epoch count; the files are written."""
    zoo, _, _ = shipped
    out = tmp_path / "cmp"
    result = _script("finetune").main([str(zoo / "tiny.yaml"), "--data", "shapes", "--epochs", "2,1",
                                       "--train-examples", "100", "--examples", "40", "--k", "5", "--out", str(out)])
    held_out = tfvae.data.load("shapes", split="test", batch_size=100, shuffle=False, seed=0, max_examples=40)
    direct = tfvae.evaluate(tfvae.from_preset(str(zoo / "tiny.yaml"), compile=False), held_out, k=5, seed=0,
                            verbose=False)
    trained, scratch = result["trained_start"], result["from_scratch"]
    assert trained["points"][0]["log_px"] == pytest.approx(direct["log_px"], abs=1e-3)
    assert [p["epochs"] for p in trained["points"]] == [0, 1, 2] and [p["epochs"] for p in scratch["points"]] == [1, 2]
    assert trained["learning_rate"] == pytest.approx(scratch["learning_rate"] / 10)
    assert (out.with_suffix(".png")).stat().st_size > 0
    assert (out.with_suffix(".md")).read_text().count("\n| ") == 4     # the rule and 3 rows


def test_a_training_override_is_checked_like_the_preset(shipped):
    zoo, _, _ = shipped
    with pytest.raises(ValueError, match="unknown key 'learning_rat'.*learning_rate"):
        tfvae.from_preset(str(zoo / "tiny.yaml"), training={"learning_rat": 1e-4})
    with pytest.raises(ValueError, match="'learning_rate' must be"):
        tfvae.from_preset(str(zoo / "tiny.yaml"), training={"learning_rate": -1.0})


def test_the_readme_shows_the_zoo_as_shipped():
    """The README's zoo table is the one the YAML files give (scripts/zoo_table.py --write)."""
    readme = (SCRIPTS.parent / "README.md").read_text(encoding="utf-8")
    assert replace_zoo_table(readme) == readme, "the README's zoo table is stale: run python scripts/zoo_table.py --write"
    table = zoo_table()
    assert len([line for line in table.splitlines() if line.startswith("| `")]) == len(tfvae.list_presets())
    for name in ("hvae2_bmnist", "ladder_bmnist"):            # published, but for other data or networks
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        assert "not comparable" in cells[-2] and cells[-1] == ""     # no difference to a published number


SHIPPED = sorted(name for name in tfvae.list_presets() if load_preset(name).pretrained is not None)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_computes_its_recorded_fingerprint(name, shared_data):
    """Fast: no refactor may change what a shipped model computes (1e-3 nats on 100 images)."""
    preset = load_preset(name)
    model = tfvae.from_preset(name, compile=False)
    x, condition = fingerprint_batch(preset, _data_dir(preset, shared_data), preset.pretrained.fingerprint["examples"],
                                     preset.pretrained.fingerprint["seed"])
    assert fingerprint(model, x, condition) == pytest.approx(preset.pretrained.fingerprint["elbo"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_reproduces_its_recorded_test_log_px(name, shared_data):
    """Slow (minutes at k = 5000): the recorded test log p(x), measured again on the same test
    examples with other importance samples, lies within 3 standard errors."""
    preset = load_preset(name)
    recorded = preset.pretrained.test
    if recorded is None:
        pytest.skip(f"{name}'s test numbers are not recorded yet (scripts/train_zoo.py --test-only)")
    run = preset.with_protocol(preset.pretrained.protocol["name"])
    model = tfvae.from_preset(name, compile=False)
    again = tfvae.evaluate(model, load_eval_data(run, _data_dir(preset, shared_data)), k=recorded["k"], seed=1,
                           verbose=False)
    assert again["examples"] == recorded["examples"]
    assert abs(again["log_px"] - recorded["log_px"]) <= 3 * recorded["log_px_se"]


def _data_dir(preset, shared_data):
    """The shared data folder of the preset's data set (None for the embedded ones)."""
    folder = Path(shared_data) / preset.data.name
    return str(folder) if folder.is_dir() else None
