"""Zoo presets: pick a model by name, the keras-hub way.

A preset is a YAML file in `zoo_configs/` (installed as `tfvae.zoo_configs`) with these
sections, each validated against the dataclasses below:

    description: one line, then the protocol
    model:       {class: <registered model name>, ...constructor arguments}
    data:        DataSection
    training:    TrainingSection (the short CPU recipe: what `tfvae train` runs)
    evaluation:  EvaluationSection
    paper:       PaperSection (optional: the published protocol and number)
    pretrained:  PretrainedSection (optional, written by scripts/train_zoo.py: the trained
                 weights shipped next to the YAML, how they were made and what they score)

`protocol="paper"` (`tfvae train --protocol paper`, `scripts/reproduce.py`) applies the
paper section's training and evaluation overrides on top of the short recipe;
`protocol="converge"` trains the short recipe until the validation loss stops improving
(`CONVERGENCE`).

`from_preset(name)` returns the trained model when the preset ships weights: their sha256
is checked before they are loaded. `from_preset(name, pretrained=False)` returns a fresh one.

A run directory written by `tfvae train` holds the same YAML as `config.yaml` next to
`model.weights.h5`, so `from_preset(run_dir)` rebuilds the trained model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import keras
import tensorflow as tf
import yaml

from tfvae.config import ConfigError, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, validate
from tfvae.optimizers import FusedAdam
from tfvae.registry import close_matches_message, get_model_class

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.weights.h5"


@dataclasses.dataclass(frozen=True)
class DataSection:
    """name: a `tfvae.data` data set; binarize: None keeps the data set's default;
    labels: feed one-hot labels as the condition (conditional models). train_split: the
    training data; eval_split: where the run's final evaluation (and `tfvae evaluate`)
    measures; validation_split: the split scored after every epoch, which chooses the best
    weights and drives early stopping (None: the eval split; a held-out split such as
    binarized MNIST's "valid" keeps the test split out of every choice)."""

    name: str = "shapes"
    binarize: Literal["static", "dynamic", "none"] | None = None
    labels: bool = False
    train_split: str = "train"
    eval_split: str = "test"
    validation_split: str | None = None


@dataclasses.dataclass(frozen=True)
class TrainingSection:
    """schedule: "constant" learning rate, or "burda": Burda et al. (2016)'s stages
    i = 0..7 of 3^i epochs at learning_rate * 10^(-i/7) (3,280 epochs in all; the last rate
    is kept after them). adam_epsilon: epsilon of Adam/Adamax (None: Keras' 1e-7).
    monitor: the validation metric that picks the best epoch (best.weights.h5) and drives
    early stopping: "val_loss" (lower is better), the objective trained, which is the negative
    bound for most models; or "val_elbo" (higher is better), for a model whose loss carries
    terms that do not measure the fit (vqvae_bmnist's commitment term grew from 5.5 to 14
    nats while its validation ELBO improved by 7, so its loss stayed flat).
    early_stopping_patience: stop after this many epochs without a monitor better than the
    best by more than early_stopping_min_delta; the run then ends on the weights of its best
    monitor, not on those of the last epoch that beat the best by that margin.
    kl_warmup_epochs: the KL's weight grows linearly from 0 to 1 over this many epochs; their
    validation losses weigh the KL by less than 1 and are not compared with the later ones
    (neither the best epoch nor early stopping counts them). steps_per_execution: training
    steps per compiled call (10 by default: it saved 10-20% of the time per step on a 2-core CPU by calling into
    the graph, the callbacks and the metrics once per 10 steps; see docs/performance.md).
    The KL warm-up then ramps its weight once per call. jit_compile: compile the steps with
    XLA (default on: 1.1-3.5x faster training steps than the graph executor for every preset
    measured on a 2-core CPU but vamp_bmnist, where it is even; docs/performance.md lists them
    and the conv preset that turns it off), and run each call's steps as one XLA program
    (`tfvae.steps`). It stays off
    for a model that cannot compile (`supports_jit` False, e.g. svae's Power Spherical
    draws) and under a tf.distribute strategy, whose replica steps Keras runs outside XLA.
    deterministic: also enable
    TensorFlow's op determinism, for bit-identical runs from one seed (process-global and
    one-way; on a GPU, ops without a deterministic kernel raise; see `tfvae.training.train`).
    Every run is seeded with `seed` either way. checkpoint_seconds: the run saves its whole
    training state for `--resume` at every epoch's end and, within an epoch, after at most
    this many seconds of training (0: after every compiled call); model.weights.h5 and
    best.weights.h5 are written after the first epoch, then at most this often, and at the
    end (the resume state holds the waiting weights meanwhile). validation_batch_size:
    examples per batch of the validation pass after every epoch. Its loss is a mean over
    the examples, so the batch changes only the Monte Carlo draws; the default 1000 took
    0.21 s for `vae_bmnist`'s 10,000 validation images where batch 100 took 0.35 s, a tenth
    of a training epoch (docs/performance.md)."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 100
    optimizer: Literal["adam", "adamax", "rmsprop", "sgd"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    schedule: Literal["constant", "burda"] = "constant"
    adam_epsilon: PositiveFloat | None = None
    monitor: Literal["val_loss", "val_elbo"] = "val_loss"
    early_stopping_patience: PositiveInt | None = None
    early_stopping_min_delta: NonNegativeFloat = 0.0
    clipnorm: PositiveFloat | None = None
    kl_warmup_epochs: NonNegativeInt = 0
    steps_per_epoch: PositiveInt | None = None
    steps_per_execution: PositiveInt = 10
    jit_compile: bool = True
    seed: int = 0
    deterministic: bool = False
    image_every: NonNegativeInt = 1
    checkpoint_seconds: NonNegativeFloat = 60.0
    validation_batch_size: PositiveInt = 1000


@dataclasses.dataclass(frozen=True)
class EvaluationSection:
    """k importance samples on `examples` test examples drawn at random (None: all), drawn
    from `proposal` (`tfvae.evaluate`'s: None is the encoder's q, or the model's own
    refinement of it; "optimized" fits a diagonal Gaussian to each example, for a model
    whose encoder is a poor proposal)."""

    k: PositiveInt = 5000
    examples: PositiveInt | None = 1000
    batch_size: PositiveInt = 100
    proposal: Literal["encoder", "refined", "optimized"] | None = None


@dataclasses.dataclass(frozen=True)
class PaperSection:
    """The published protocol of a preset: where its number comes from (source), the
    published test NLL in nats (None if the paper gives none for this setting), and the
    overrides of the model, training and evaluation sections that reproduce its protocol
    (e.g. more refinement steps or pseudo-inputs than the short CPU recipe affords).
    not_comparable: why test_nll, though published for this kind of model, does not measure
    this preset's data and network (other binarization, more layers): the zoo table then
    shows it with that reason and no difference."""

    source: str
    test_nll: float | None = None
    not_comparable: str | None = None
    model: dict | None = None
    training: dict | None = None
    evaluation: dict | None = None


@dataclasses.dataclass(frozen=True)
class PretrainedSection:
    """The trained weights shipped with a preset, written by `scripts/train_zoo.py`.

    file: the `.weights.h5` file next to the YAML (the model's variables only); sha256: its
    digest, checked before loading. model: overrides of the model section the weights were
    trained with (a paper protocol's, e.g. more refinement steps), applied with them.
    command: the command that made them; protocol: the protocol's name and the training
    actually run; train_seconds, machine, tfvae_version, created: when, where and with what.
    test: the test-split numbers (ELBO, log p(x) by importance sampling with standard
    errors, KL, active units, k, examples); None while they are not yet measured
    (`tfvae.zoo.record_test`). fingerprint: the mean single-draw ELBO
    (`tfvae.zoo.fingerprint`) of `examples` images of `split` drawn with `seed`, recorded at
    training time so that a change that alters the shipped model shows.
    """

    file: str
    sha256: str
    command: str
    protocol: dict
    test: dict | None
    fingerprint: dict
    model: dict | None = None
    train_seconds: NonNegativeFloat | None = None
    machine: str | None = None
    tfvae_version: str | None = None
    created: str | None = None


DEFAULT_PRESET = "vae_shapes"     # its data set is generated in-process: it trains with no download
PROTOCOLS = ("short", "paper", "converge")
# The "converge" protocol: the short recipe, until the validation loss has not improved by more
# than min_delta nats for `patience` epochs (the best epoch's weights kept), at most max_epochs;
# then evaluated with at least eval_k importance samples on at least eval_examples test images.
CONVERGENCE = {"max_epochs": 3000, "patience": 50, "min_delta": 0.1, "image_every": 50,
               "eval_k": 5000, "eval_examples": 1000}
# A paper protocol that does not set image_every writes about this many image grids in all
# (Burda et al.'s 3,280 epochs: one every 32), not one per epoch.
PAPER_IMAGE_GRIDS = 100


@dataclasses.dataclass(frozen=True)
class Preset:
    description: str
    model: dict
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    paper: PaperSection | None = None
    pretrained: PretrainedSection | None = None
    name: str = ""
    # Where the YAML was read from (a directory path, or the zoo's package resource): the
    # pretrained weights file sits there.
    location: Any = dataclasses.field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("name")
        out.pop("location")
        for optional in ("paper", "pretrained"):
            if out[optional] is None:
                out.pop(optional)
        return out

    def with_protocol(self, protocol: str) -> "Preset":
        """This preset with the training and evaluation of `protocol`: "short" (as written)
        or "paper" (the paper section's overrides applied)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if protocol == "short":
            return self
        if protocol == "converge":
            examples = self.evaluation.examples
            return dataclasses.replace(
                self,
                training=dataclasses.replace(
                    self.training, epochs=CONVERGENCE["max_epochs"], early_stopping_patience=CONVERGENCE["patience"],
                    early_stopping_min_delta=CONVERGENCE["min_delta"], image_every=CONVERGENCE["image_every"]),
                evaluation=dataclasses.replace(
                    self.evaluation, k=max(self.evaluation.k, CONVERGENCE["eval_k"]),
                    examples=None if examples is None else max(examples, CONVERGENCE["eval_examples"])))
        if self.paper is None:
            raise ValueError(f"preset {self.name!r} has no paper section, so no paper protocol")
        paper_training = self.paper.training or {}
        training = dataclasses.replace(self.training, **paper_training)
        if "image_every" not in paper_training and training.image_every:
            training = dataclasses.replace(
                training, image_every=max(training.image_every, training.epochs // PAPER_IMAGE_GRIDS))
        return dataclasses.replace(
            self, model={**self.model, **(self.paper.model or {})}, training=training,
            evaluation=dataclasses.replace(self.evaluation, **(self.paper.evaluation or {})))

    @property
    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


def parse_preset(raw: Any, name: str, location: Any = None) -> Preset:
    """A validated Preset from a parsed YAML mapping; `location` is the directory it was read
    from (where a pretrained section's weights file is looked for)."""
    where = f"preset {name!r}"
    top = validate(_TopLevel, raw, where, fill_defaults=False)
    model = top.get("model")
    if "class" not in model:
        raise ConfigError(f"{where}: the model section needs 'class' (one of the registered models)")
    model = dict(model)
    cls = get_model_class(_model_class_name(model.pop("class"), where))
    model = validate(cls, model, f"{where}, model {cls.registered_name!r}", fill_defaults=False)
    paper = None
    if top.get("paper") is not None:
        paper = validate(PaperSection, top["paper"], f"{where}, paper section")
        paper["model"] = validate(cls, paper["model"], f"{where}, paper.model", False)
        paper["training"] = validate(TrainingSection, paper["training"], f"{where}, paper.training", False)
        paper["evaluation"] = validate(EvaluationSection, paper["evaluation"], f"{where}, paper.evaluation", False)
        paper = PaperSection(**paper)
    pretrained = None
    if top.get("pretrained") is not None:
        pretrained = validate(PretrainedSection, top["pretrained"], f"{where}, pretrained section")
        pretrained["model"] = validate(cls, pretrained["model"], f"{where}, pretrained.model", False)
        pretrained = PretrainedSection(**pretrained)
    return Preset(
        description=top.get("description", ""),
        model={"class": cls.registered_name, **model},
        data=DataSection(**validate(DataSection, top.get("data"), f"{where}, data section")),
        training=TrainingSection(**validate(TrainingSection, top.get("training"), f"{where}, training section")),
        evaluation=EvaluationSection(**validate(EvaluationSection, top.get("evaluation"),
                                                f"{where}, evaluation section")),
        paper=paper, pretrained=pretrained, name=name, location=location)


@dataclasses.dataclass(frozen=True)
class _TopLevel:
    model: dict
    description: str = ""
    data: dict | None = None
    training: dict | None = None
    evaluation: dict | None = None
    paper: dict | None = None
    pretrained: dict | None = None


def _model_class_name(name: Any, where: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: the model's 'class' must be a string naming a registered model, "
                          f"got {name!r}")
    return name


def _read_text(path: str) -> str:
    """The UTF-8 text of a preset file; undecodable bytes raise ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from None


def _zoo_files() -> dict[str, Any]:
    root = resources.files("tfvae.zoo_configs")
    return {entry.name[:-5]: entry for entry in root.iterdir() if entry.name.endswith(".yaml")}


def _read_yaml(text: str, source: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {e}") from None


def load_preset(name_or_dir: str) -> Preset:
    """The Preset of a zoo entry (by name), a run directory, or a YAML file path."""
    if isinstance(name_or_dir, (str, os.PathLike)) and os.path.isdir(name_or_dir):
        path = os.path.join(name_or_dir, CONFIG_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"{name_or_dir} is not a run directory: it has no {CONFIG_FILE}")
        return parse_preset(_read_yaml(_read_text(path), path), os.path.basename(os.path.normpath(name_or_dir)),
                            os.path.abspath(name_or_dir))
    if isinstance(name_or_dir, str) and name_or_dir.endswith((".yaml", ".yml")) and os.path.isfile(name_or_dir):
        return parse_preset(_read_yaml(_read_text(name_or_dir), name_or_dir),
                            os.path.basename(name_or_dir).rsplit(".", 1)[0],
                            os.path.dirname(os.path.abspath(name_or_dir)))
    files = _zoo_files()
    if isinstance(name_or_dir, (str, os.PathLike)) and os.sep in str(name_or_dir) and name_or_dir not in files:
        raise ValueError(f"{name_or_dir} does not exist: expected a run directory (with {CONFIG_FILE}), "
                         f"a preset YAML file, or a zoo preset name ({', '.join(sorted(files))})")
    if name_or_dir not in files:
        raise ValueError(close_matches_message("preset", name_or_dir, files))
    return parse_preset(_read_yaml(files[name_or_dir].read_text(), f"zoo config {name_or_dir}.yaml"), name_or_dir,
                        resources.files("tfvae.zoo_configs"))


def list_presets() -> dict[str, str]:
    """Zoo preset names -> their one-line descriptions."""
    return {name: load_preset(name).summary for name in sorted(_zoo_files())}


def build_model(model_config: Mapping, **overrides) -> keras.Model:
    """The model described by a `{class: name, ...arguments}` mapping, with overrides applied."""
    config = dict(model_config)
    cls = get_model_class(_model_class_name(config.pop("class"), "model"))
    config.update(overrides)
    return cls(**validate(cls, config, f"model {cls.registered_name!r}"))


def make_optimizer(training: TrainingSection) -> keras.optimizers.Optimizer:
    optimizers = {"adam": FusedAdam, "adamax": keras.optimizers.Adamax,
                  "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}
    options = {}
    if training.adam_epsilon is not None:
        if training.optimizer not in ("adam", "adamax"):
            raise ConfigError(f"training: adam_epsilon applies to adam and adamax, not {training.optimizer!r}")
        options["epsilon"] = training.adam_epsilon
    return optimizers[training.optimizer](learning_rate=training.learning_rate, clipnorm=training.clipnorm,
                                          **options)


def uses_xla(model, training: TrainingSection) -> bool:
    """Whether `compile_model` compiles `model`'s steps with XLA: `jit_compile` is on, the
    model supports it, and no tf.distribute strategy is in scope (Keras runs the replicas'
    steps, with their all-reduce, outside XLA)."""
    return bool(training.jit_compile and getattr(model, "supports_jit", True) and not tf.distribute.has_strategy())


def compile_model(model, training: TrainingSection):
    """Compiles `model` with the preset's optimizer and step settings (no Keras loss: the
    model's own objective is the loss)."""
    model.compile(optimizer=make_optimizer(training), steps_per_execution=training.steps_per_execution,
                  jit_compile=uses_xla(model, training))
    return model


def load_weights(model, path: str):
    """Loads a `.weights.h5` file. A file that does not fit the model as configured raises
    ValueError naming the first differing variable and both shapes; a corrupt file raises
    ValueError naming it. Either way the model's weights are left unchanged."""
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found: {path}")
    prefix = f"the weights in {path} do not fit model {model.name!r} as configured"
    if path.endswith(".weights.h5"):
        problem = _weights_mismatch(model, path)
        if problem:
            raise ValueError(f"{prefix}: {problem}")
    snapshot = [v.numpy() for v in model.weights]
    try:
        with warnings.catch_warnings():
            # Run checkpoints carry the optimizer's slots; a freshly built model has none yet.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(path)
    except (ValueError, OSError) as e:
        for v, value in zip(model.weights, snapshot):
            v.assign(value)
        if isinstance(e, OSError):
            raise ValueError(f"cannot read the weights in {path} (corrupt or truncated?): {e}") from None
        raise ValueError(f"{prefix}: {e}") from None


def _stored_shapes(path: str) -> dict:
    """Dataset path -> (shape, name of the layer holding it) of an `.weights.h5` file."""
    import h5py

    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = (tuple(obj.shape), obj.parent.attrs.get("name", ""))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise ValueError(f"cannot read the weights in {path} (corrupt or truncated?): {e}") from None
    return out


def _weights_mismatch(model, path: str) -> str | None:
    """The first difference between the variables in `path` and those `model.save_weights`
    would write (the optimizer's slots aside), in words; None when they agree."""
    found = _stored_shapes(path)
    with tempfile.TemporaryDirectory() as tmp:
        own = os.path.join(tmp, "model.weights.h5")
        model.save_weights(own)
        expected = _stored_shapes(own)
    for key, (shape, layer) in expected.items():
        if key.startswith("optimizer/"):
            continue
        where = f"variable {key} (layer {layer!r})"
        if key not in found:
            return f"{where} is missing from the file"
        if found[key][0] != shape:
            return f"{where} has shape {found[key][0]} in the file, but the model expects {shape}"
    extra = [k for k in found if k not in expected and not k.startswith("optimizer/")]
    if extra:
        return f"the file has variable(s) the model does not: {', '.join(extra[:5])}"
    return None


def pretrained_weights_path(preset: Preset) -> str:
    """The verified path of a preset's shipped weights: the file named by its pretrained
    section, next to its YAML, whose sha256 matches the recorded one. Raises ValueError naming
    the file when the preset ships none, or the file is missing or altered."""
    if preset.pretrained is None:
        raise ValueError(f"preset {preset.name!r} ships no trained weights (no pretrained section); "
                         f"use pretrained=False for a fresh model")
    if preset.location is None:
        raise ValueError(f"preset {preset.name!r} was not read from a file, so its weights file "
                         f"{preset.pretrained.file!r} cannot be found")
    # The zoo's resource directory is a real directory (tfvae is not installed zipped).
    path = os.path.join(os.fspath(preset.location), preset.pretrained.file)
    if not os.path.isfile(path):
        raise ValueError(f"the trained weights of preset {preset.name!r} are missing: {path} "
                         f"(reinstall tfvae, or retrain with: {preset.pretrained.command})")
    digest = file_sha256(path)
    if digest != preset.pretrained.sha256:
        raise ValueError(f"the trained weights of preset {preset.name!r} in {path} have been altered: "
                         f"sha256 {digest}, recorded {preset.pretrained.sha256}")
    return path


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def from_preset(name: str, weights: str | None = None, compile: bool = True, pretrained: bool = True,
                training: Mapping | None = None, **overrides) -> keras.Model:
    """A zoo model, built (and compiled with its preset's optimizer, ready for `fit`).

    Args:
      name: a zoo preset name (`list_presets()`), a preset YAML file, or a run directory
        written by `tfvae train` (its trained weights are loaded unless `weights` is given).
      weights: a `.weights.h5` file to load instead, e.g. to fine-tune a trained model.
      compile: compile with the preset's optimizer, learning rate and step settings.
      training: settings of the preset's training section to change for that compile, e.g.
        {"learning_rate": 1e-4} to fine-tune a trained model at a tenth of its rate (the
        optimizer, its epsilon, XLA and steps per call stay the preset's).
      pretrained: load the preset's shipped trained weights (the default, when it ships them;
        their sha256 is checked first). False returns a freshly initialised model. A preset
        that ships none gives a fresh model and a warning unless pretrained=False.
      **overrides: model constructor arguments replacing the preset's (e.g. latent_dim=10);
        with trained weights they must leave the variables' shapes as they are (a ValueError
        says so, and that pretrained=False gives the fresh network).
    """
    preset = load_preset(name)
    if training:
        changed = validate(TrainingSection, training, f"from_preset({preset.name!r}): training", False)
        preset = dataclasses.replace(preset, training=dataclasses.replace(preset.training, **changed))
    model_config = preset.model
    if weights is None and os.path.isdir(str(name)) and os.path.isfile(os.path.join(name, WEIGHTS_FILE)):
        weights = os.path.join(name, WEIGHTS_FILE)
    shipped = None
    if weights is None and pretrained and not os.path.isdir(str(name)):
        if preset.pretrained is None:
            warnings.warn(f"preset {preset.name!r} ships no trained weights yet: returning an untrained "
                          f"model (pass pretrained=False to ask for one explicitly)", stacklevel=2)
        else:
            weights = shipped = pretrained_weights_path(preset)
            model_config = {**preset.model, **(preset.pretrained.model or {})}
    model = build_model(model_config, **overrides)
    if weights is not None:
        try:
            load_weights(model, weights)
        except ValueError as error:
            if not (overrides and weights == shipped):
                raise
            raise ValueError(f"{error}. The overrides {overrides} change the network that preset "
                             f"{preset.name!r} ships trained: pass pretrained=False for a fresh model") from None
    if compile:
        compile_model(model, preset.training)
    return model
