"""scripts/reproduce.py: train under a protocol, set the result next to the published number.
Its `main` runs in this process (a subprocess would import TensorFlow again, ~10 s each)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"
_spec = importlib.util.spec_from_file_location("reproduce_script", SCRIPT)
reproduce_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce_script)

TINY = """\
description: tiny shapes VAE for the reproduce script's test
model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [16]}}
data: {name: shapes}
training: {epochs: 3, batch_size: 50, steps_per_epoch: 2, image_every: 0, jit_compile: false}
evaluation: {k: 10, examples: 20, batch_size: 20}
paper:
  source: "a made-up paper"
  test_nll: 40.0
  training: {epochs: 1}
"""


def run(*args, cwd, capsys, monkeypatch):
    """(stdout, stderr) of the script's main on `args`, run in `cwd`."""
    monkeypatch.chdir(cwd)
    reproduce_script.main(list(args))
    return capsys.readouterr()


def test_reproduce_writes_the_result_next_to_the_published_number_and_resumes(tmp_path, capsys, monkeypatch):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    here = {"cwd": tmp_path, "capsys": capsys, "monkeypatch": monkeypatch}
    out, _ = run(str(preset), "--out-root", "out", "--table", "out/table.md", **here)
    run_dir = tmp_path / "out" / "tiny_paper"
    result = json.loads((run_dir / "reproduce.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert result["epochs"] == 1                                   # the paper protocol's epochs, not 3
    assert result["test_log_px"] == evaluation["log_px"] and result["examples"] == 20 and result["k"] == 10
    assert result["nll_minus_published"] == -evaluation["log_px"] - 40.0
    assert "tiny: paper protocol, 1 epochs" in out and "a made-up paper" in out
    table = (tmp_path / "out" / "table.md").read_text()
    assert f"{evaluation['log_px']:.2f}" in table and "| 40.0 |" in table

    _, err = run(str(preset), "--out-root", "out", **here)            # already done: not retrained
    assert "already reproduced" in err
    assert json.loads((run_dir / "reproduce.json").read_text()) == result

    run(str(preset), "--protocol", "short", "--out-root", "out", "--k", "5", **here)
    short_result = json.loads((tmp_path / "out" / "tiny_short" / "reproduce.json").read_text())
    assert short_result["epochs"] == 3 and short_result["k"] == 5


@pytest.mark.parametrize("preset, message", [("vae_shapes", "has no paper section"),      # no paper section
                                             ("vae_bmnsit", "Did you mean 'vae_bmnist'")])
def test_reproduce_refuses_what_it_cannot_do(preset, message, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as refused:       # a one-line message, no traceback
        run(preset, "--out-root", "out", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert str(refused.value).startswith("error: ") and message in str(refused.value)
    assert not (tmp_path / "out").exists()
