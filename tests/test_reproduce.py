"""scripts/reproduce.py: train under a protocol, set the result next to the published number."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"

TINY = """\
description: tiny shapes VAE for the reproduce script's test
model: {class: vae, data_shape: [28, 28, 1], latent_dim: 2, encoder: {type: mlp, hidden: [16]}}
data: {name: shapes}
training: {epochs: 3, batch_size: 50, steps_per_epoch: 2, image_every: 0}
evaluation: {k: 10, examples: 20, batch_size: 20}
paper:
  source: "a made-up paper"
  test_nll: 40.0
  training: {epochs: 1}
"""


def run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd)


def test_reproduce_writes_the_result_next_to_the_published_number_and_resumes(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    proc = run(str(preset), "--out-root", "out", "--table", "out/table.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "out" / "tiny_paper"
    result = json.loads((run_dir / "reproduce.json").read_text())
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert result["epochs"] == 1                                   # the paper protocol's epochs, not 3
    assert result["test_log_px"] == evaluation["log_px"] and result["examples"] == 20 and result["k"] == 10
    assert result["nll_minus_published"] == -evaluation["log_px"] - 40.0
    assert "tiny: paper protocol, 1 epochs" in proc.stdout and "a made-up paper" in proc.stdout
    table = (tmp_path / "out" / "table.md").read_text()
    assert f"{evaluation['log_px']:.2f}" in table and "| 40.0 |" in table

    again = run(str(preset), "--out-root", "out", cwd=tmp_path)      # already done: not retrained
    assert again.returncode == 0 and "already reproduced" in again.stderr
    assert json.loads((run_dir / "reproduce.json").read_text()) == result

    short = run(str(preset), "--protocol", "short", "--out-root", "out", "--k", "5", cwd=tmp_path)
    assert short.returncode == 0, short.stderr[-2000:]
    short_result = json.loads((tmp_path / "out" / "tiny_short" / "reproduce.json").read_text())
    assert short_result["epochs"] == 3 and short_result["k"] == 5


def test_reproduce_refuses_what_it_cannot_do(tmp_path):
    proc = run("vae_shapes", "--out-root", "out", cwd=tmp_path)        # no paper section
    assert proc.returncode != 0 and "has no paper section" in proc.stderr
    proc = run("vae_bmnsit", "--out-root", "out", cwd=tmp_path)
    assert proc.returncode != 0 and "Did you mean 'vae_bmnist'" in proc.stderr
    assert "Traceback" not in proc.stderr
