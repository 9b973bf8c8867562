"""The trained zoo: the weights shipped with a preset, how they are made and checked.

A preset ships trained weights as `zoo_configs/<preset>.weights.h5` (the model's variables,
no optimizer slots) beside its YAML, whose `pretrained:` section (`PretrainedSection`)
records how they were made and what they score. `scripts/train_zoo.py` trains a preset with a
protocol into a run directory (resumable), then `publish` turns the run into that pair:

  * the weights of the run's best validation epoch (`best.weights.h5`), loaded into a fresh,
    uncompiled model and saved again, so the file holds the variables only;
  * the test numbers (`record_test`, run after the weights and the rest of the section are
    written, and again on its own if that evaluation was cut short): the ELBO and log p(x) by
    importance sampling (the protocol's k and examples), with standard errors, the KL and the
    active units;
  * a fingerprint: the mean single-draw ELBO of a fixed batch of test images under a fixed
    seed (`fingerprint`). The test suite recomputes it for every shipped preset, so a change
    that alters what a shipped model computes cannot pass unnoticed.

`tfvae.from_preset(name)` then checks the file's sha256 and loads it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re

import numpy as np
import yaml

from tfvae.inference import evaluate
from tfvae.inference.units import active_units
from tfvae.io import atomic_path, atomic_write_text, replace_marked_block
from tfvae.presets import (build_model, file_sha256, list_presets, load_preset, load_weights, parse_preset,
                           pretrained_weights_path)
from tfvae.training.callbacks import read_history
from tfvae.training.run import BEST_WEIGHTS_FILE, load_eval_data, started_with
from tfvae.version import __version__

FINGERPRINT_EXAMPLES = 100
FINGERPRINT_SEED = 0
# A run whose training loss rose after its best epoch by more than this many times the best
# epoch's (at least 1) blew up: its best weights are not those of a converged run.
BLOW_UP_FACTOR = 10.0
# How the zoo table names a test evaluation's proposal when it is not the encoder's q.
PROPOSAL_LABELS = {"refined": ", refined q", "optimized": ", per-example q*"}


def fingerprint(model, x, condition=None, seed: int = FINGERPRINT_SEED) -> float:
    """The mean over x of the single-draw ELBO log p(x|z) - KL(q(z|x) || p(z)), z ~ q(z|x) drawn
    from the stateless seed [seed, 0] (`model.elbo_terms(x, k=1, seed=[seed, 0])`), in nats."""
    return float(np.mean(model.elbo_terms(x, k=1, condition=condition, seed=[seed, 0])["elbo"].numpy()))


def fingerprint_batch(preset, data_dir=None, examples: int = FINGERPRINT_EXAMPLES, seed: int = FINGERPRINT_SEED):
    """(x, condition) of the fingerprint: `examples` images of the preset's evaluation split
    drawn at random with `seed` (condition None for an unconditional data set)."""
    batch = next(iter(load_eval_data(preset, data_dir, examples=examples, batch_size=examples, seed=seed)))
    return batch if isinstance(batch, tuple) else (batch, None)


def machine() -> str:
    """"<n>-core <CPU model>" of this machine (the CPU model from /proc/cpuinfo where there is one)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), flags=re.MULTILINE)
        model = names[0].strip() if names else model
    except OSError:
        pass
    return f"{os.cpu_count()}-core {model}"


def check_no_blow_up(run_dir: str, best_epoch: int | None):
    """Raises ValueError when the run's training loss rose after its best epoch (1-based) by
    more than BLOW_UP_FACTOR times the best epoch's loss (at least 1): the run blew up with
    finite numbers, and early stopping then ended it on its best epoch, which is not a
    converged model. (`ladder_bmnist` without gradient clipping went from a training loss of
    104 at its best epoch to 2.4e11 two epochs later, and stayed above 2.8e5 for the 29
    epochs it ran on.)"""
    losses = {int(row["epoch"]) + 1: float(row["loss"]) for row in read_history(os.path.join(run_dir, "history.csv"))}
    if best_epoch not in losses:
        return
    best = losses[best_epoch]
    later = [(loss, epoch) for epoch, loss in losses.items() if epoch > best_epoch]
    if not later:
        return
    worst, epoch = max(later)
    if worst - best > BLOW_UP_FACTOR * max(abs(best), 1.0):
        raise ValueError(f"{run_dir} blew up after its best epoch {best_epoch}: its training loss went from "
                         f"{best:.4g} to {worst:.4g} at epoch {epoch} (history.csv), so its best weights are not "
                         f"those of a converged run. Train it again with gradient clipping (training.clipnorm), "
                         f"a KL warm-up or a lower learning rate.")


def publish(run_dir: str, zoo_dir: str, command: str, data_dir: str | None = None, verbose: bool = True,
            preset: str | None = None) -> dict:
    """Ships a finished run's best weights with its preset: writes `<zoo_dir>/<preset>.weights.h5`
    and the preset's `pretrained:` section (replacing any earlier one) in `<zoo_dir>/<preset>.yaml`,
    and returns that section.

    Args:
      run_dir: a complete run of `tfvae train` (its metadata.json written) of a preset in zoo_dir.
      zoo_dir: the directory of the preset YAML files (the repository's zoo_configs/).
      command: the command that reproduces the run, recorded in the section.
      data_dir: where the data set's files are (default: where the run found them).
      preset: the preset the run trained (default: the one its metadata names; runs resumed
        before train_args.json recorded the name carry their directory's name there).

    Raises:
      ValueError: the run is unfinished, zoo_dir has no such preset, the run's network is
        not the preset's under the run's protocol, or the run blew up (`check_no_blow_up`).
    """
    metadata_path = os.path.join(run_dir, "metadata.json")
    if not os.path.isfile(metadata_path):
        raise ValueError(f"{run_dir} is not a finished run (no metadata.json): train or resume it first")
    with open(metadata_path) as f:
        metadata = json.load(f)
    name = preset or metadata["preset"]
    yaml_path = os.path.join(zoo_dir, f"{name}.yaml")
    if not os.path.isfile(yaml_path):
        raise ValueError(f"{run_dir} is a run of preset {name!r}, which {zoo_dir} does not hold")
    if data_dir is None:
        data_dir = started_with(run_dir).get("data_dir")
    run, zoo = load_preset(run_dir), load_preset(yaml_path)
    expected = zoo.with_protocol(metadata["protocol"]).model
    if run.model != expected:
        differ = sorted(key for key in {*run.model, *expected} if run.model.get(key) != expected.get(key))
        raise ValueError(f"{run_dir} trained another network than preset {name!r} under the "
                         f"{metadata['protocol']} protocol (they differ in {', '.join(differ)})")
    check_no_blow_up(run_dir, metadata["best_epoch"])
    model = build_model(run.model)                       # uncompiled: no optimizer slots to save
    load_weights(model, os.path.join(run_dir, BEST_WEIGHTS_FILE))
    weights_file = f"{name}.weights.h5"
    with atomic_path(os.path.join(zoo_dir, weights_file), suffix=".weights.h5") as tmp:
        model.save_weights(tmp)

    x, condition = fingerprint_batch(run, data_dir)
    t = run.training
    section = {
        "file": weights_file,
        "sha256": file_sha256(os.path.join(zoo_dir, weights_file)),
        "command": command,
        "protocol": {"name": metadata["protocol"], "epochs_run": metadata["epochs"],
                     "best_epoch": metadata["best_epoch"], "weights": "best validation epoch", "monitor": t.monitor,
                     "max_epochs": t.epochs, "batch_size": t.batch_size, "optimizer": t.optimizer,
                     "learning_rate": t.learning_rate, "schedule": t.schedule, "adam_epsilon": t.adam_epsilon,
                     "clipnorm": t.clipnorm, "kl_warmup_epochs": t.kl_warmup_epochs,
                     "early_stopping_patience": t.early_stopping_patience,
                     "early_stopping_min_delta": t.early_stopping_min_delta, "seed": t.seed,
                     "train_split": run.data.train_split, "validation_split": run.data.validation_split},
        "test": None,
        "fingerprint": {"split": run.data.eval_split, "examples": len(x), "seed": FINGERPRINT_SEED,
                        "elbo": round(fingerprint(model, x, condition), 4)},
        "model": {key: value for key, value in run.model.items() if zoo.model.get(key) != value} or None,
        "train_seconds": round(float(metadata["train_seconds"]), 1),
        "machine": machine(),
        "tfvae_version": __version__,
        "created": datetime.date.today().isoformat(),
    }
    # Shipped first, scored second: an evaluation cut short (k = 5000 on a whole test set takes
    # minutes) leaves a consistent preset whose test numbers `record_test` adds later.
    write_pretrained_section(yaml_path, section)
    return record_test(yaml_path, data_dir, verbose=verbose)


def record_test(yaml_path: str, data_dir: str | None = None, verbose: bool = True) -> dict:
    """Evaluates the weights a preset ships on its test split, with the evaluation of the
    protocol they were trained with (k importance samples, the examples), and writes the
    numbers into its `pretrained:` section's `test` (the ELBO and log p(x) with standard
    errors, the KL, the active units (and per stochastic layer, z1 first, for a model with
    several), and the proposal: "refined" for a model that refines
    its encoder's q itself, see `evaluate`). Returns the section."""
    preset = load_preset(yaml_path)
    if preset.pretrained is None:
        raise ValueError(f"{yaml_path} ships no trained weights (no pretrained section)")
    run = preset.with_protocol(preset.pretrained.protocol["name"])
    model = build_model({**preset.model, **(preset.pretrained.model or {})})
    load_weights(model, pretrained_weights_path(preset))
    test_data = load_eval_data(run, data_dir)
    report = evaluate(model, test_data, k=run.evaluation.k, verbose=verbose, proposal=run.evaluation.proposal)
    units = active_units(model, test_data)
    section = dataclasses.asdict(preset.pretrained)
    section["test"] = {"split": run.data.eval_split, "k": report["k"], "examples": report["examples"],
                       "proposal": report["proposal"],
                       **{key: round(float(report[key]), 4) for key in
                          ("elbo", "elbo_se", "log_px", "log_px_se", "kl", "kl_se")},
                       "active_units": units["active"]}
    if "active_per_layer" in units:
        section["test"]["active_units_per_layer"] = units["active_per_layer"]
    write_pretrained_section(yaml_path, section)
    return section


def write_pretrained_section(yaml_path: str, section: dict):
    """Replaces the `pretrained:` section of a preset YAML with `section` (appended at the end),
    leaving the rest of the text as it was; checks that the result parses as a preset."""
    with open(yaml_path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    kept, skipping = [], False
    for line in lines:
        top_level = re.match(r"^[A-Za-z_]\w*:", line)
        if top_level:
            skipping = line.startswith("pretrained:")
        if not skipping:
            kept.append(line)
    text = "".join(kept)
    if text and not text.endswith("\n"):
        text += "\n"
    text += yaml.safe_dump({"pretrained": section}, sort_keys=False, width=100)
    name = os.path.basename(yaml_path).rsplit(".", 1)[0]
    parse_preset(yaml.safe_load(text), name, os.path.dirname(os.path.abspath(yaml_path)))
    atomic_write_text(yaml_path, text)


def zoo_table() -> str:
    """The zoo table of the README, from the presets' YAML files: per preset the protocol its
    shipped weights were trained with, the epochs run (and the best, whose weights ship), the
    training time, the test ELBO and log p(x) with standard errors (k importance samples on
    `examples` test images), the published test NLL and our NLL minus it (positive: worse than
    the paper). A published number that does not measure the preset's data and network
    (`paper.not_comparable`) is shown with its reason below the table and no difference."""
    rows = ["| preset | protocol | epochs (best) | training | test ELBO | test log p(x) | evaluation | "
            "published NLL | ours - published |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    notes = []
    for name in list_presets():
        preset = load_preset(name)
        published = preset.paper.test_nll if preset.paper is not None else None
        caveat = preset.paper.not_comparable if preset.paper is not None else None
        paper = "–" if published is None else f"{published:.2f}"
        if published is not None and caveat:
            notes.append(f"{len(notes) + 1}. `{name}`: {caveat}.")
            paper += f" (not comparable: note {len(notes)})"
        trained = preset.pretrained
        if trained is None:
            rows.append(f"| `{name}` | not trained yet | | | | | | {paper} | |")
            continue
        run = trained.protocol
        epochs = f"{run['epochs_run']:,} ({run['best_epoch']:,})"
        hours = (trained.train_seconds or 0) / 3600
        time = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        test = trained.test
        if test is None:
            rows.append(f"| `{name}` | {run['name']} | {epochs} | {time} | not yet evaluated | | | {paper} | |")
            continue
        difference = "" if published is None or caveat else f"{-test['log_px'] - published:+.2f}"
        proposal = PROPOSAL_LABELS.get(test.get("proposal"), "")
        rows.append(f"| `{name}` | {run['name']} | {epochs} | {time} | {test['elbo']:.2f} ± {test['elbo_se']:.2f} | "
                    f"{test['log_px']:.2f} ± {test['log_px_se']:.2f} | k = {test['k']:,}, {test['examples']:,} "
                    f"images{proposal} | {paper} | {difference} |")
    return "\n".join(rows + ([""] + notes if notes else [])) + "\n"


def replace_zoo_table(text: str) -> str:
    """`text` (the README) with the part between the zoo-table markers replaced by `zoo_table()`."""
    return replace_marked_block(text, "zoo-table", zoo_table())
