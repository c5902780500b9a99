"""The training options, defined once: `TrainingConfig` fields carry their default, their help and
their choices, validate themselves, and `align-tf train`'s parser is built from them."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from align_tf.errors import ConfigError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
FREEZE_CHOICES = ("vision", "text")
SAVE_DTYPES = ("float32", "float16")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("lamb", "adamw")
GROUPS = ("data and model", "schedule", "checkpoints and logs")


def option(default, help: str, group: str, *, choices=None, minimum=None, **argparse_kwargs):
    """A dataclass field that is also a command-line flag (`--field-name`)."""
    metadata = dict(help=help, group=group, choices=choices, minimum=minimum, argparse=argparse_kwargs)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainingConfig:
    """Everything `train()` reads. Wrong values raise `ConfigError` naming the option."""

    data: str = option(
        "demo", "'demo' or 'demo:COUNT' (generated shapes x colours, default 8000 pairs), 'digits' "
        "(scikit-learn's digits), a TFRecord glob, a TSV file or a Karpathy JSON (read by "
        "align_tf.data); default: demo", "data and model")
    image_root: str | None = option(
        None, "image folder for a Karpathy JSON (default for a TSV: the TSV's folder)", "data and model")
    model: str | None = option(
        None, "checkpoint folder or hub id to fine-tune, a config.json to train from scratch, or a "
        "preset (demo-config, align-base-config, or their short names demo, align-base); "
        "default: demo-config for --data demo",
        "data and model")
    text_model: str | None = option(
        None, "initialise the text tower from this HF BERT checkpoint (folder or hub id)", "data and model")
    output: str = option("runs/align", "output folder (default: runs/align)", "data and model")

    strategy: str = option("default", "tf.distribute strategy; multi_worker reads TF_CONFIG",
                           "schedule", choices=STRATEGIES)
    global_batch_size: int = option(
        32, "examples per step over all replicas (the contrastive batch)", "schedule", minimum=1)
    steps: int | None = option(None, "optimizer steps (or give --epochs)", "schedule", minimum=1)
    epochs: float | None = option(None, "passes over the data (demo and digits sets)", "schedule",
                                  minimum=0)
    learning_rate: float = option(1e-3, "peak learning rate", "schedule", minimum=0)
    warmup_steps: int = option(0, "linear warmup steps", "schedule", minimum=0)
    optimizer: str = option("lamb", "optimizer", "schedule", choices=OPTIMIZERS)
    weight_decay: float = option(
        1e-5, "decoupled weight decay (not on BatchNorm, LayerNorm, biases or the temperature)",
        "schedule", minimum=0)
    precision: str = option("float32", "Keras dtype policy for the run", "schedule", choices=PRECISIONS)
    freeze: list[str] = option(
        [], "keep a tower fixed (a frozen vision tower keeps BatchNorm in inference mode); repeatable",
        "schedule", choices=FREEZE_CHOICES)
    gradient_accumulation_steps: int = option(
        1, "apply the mean gradient of this many batches at once", "schedule", minimum=1)
    augment: bool = option(False, "random crop and flip of in-memory images (files follow "
                                  "align_tf.data)", "schedule")
    seed: int = option(0, "random seed (weights, data order, augmentation)", "schedule")

    save_every: int | None = option(
        None, "optimizer steps between backups and checkpoints (default: a tenth of the run)",
        "checkpoints and logs", minimum=1)
    keep_checkpoints: int = option(2, "OUTPUT/checkpoints/step-N folders to keep (0: none)",
                                   "checkpoints and logs", minimum=0)
    save_dtype: str = option("float32", "dtype of the saved weights (float16: half the size)",
                             "checkpoints and logs", choices=SAVE_DTYPES)
    logdir: str | None = option(None, "TensorBoard folder (default: OUTPUT/logs)", "checkpoints and logs")
    eval_count: int = option(480, "fresh demo images for the final zero-shot accuracy",
                             "checkpoints and logs", minimum=0)
    label_smoothing: float = option(0.1, "label smoothing of the contrastive loss",
                                    "checkpoints and logs", minimum=0)
    min_temperature: float | None = option(None, "lower bound of the learnable temperature",
                                           "checkpoints and logs", minimum=0)
    verbose: int = option(1, "no progress bars", "checkpoints and logs", flag="--quiet",
                          action="store_const", const=0, dest="training_verbosity")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for spec in dataclasses.fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            flag = meta["argparse"].get("flag", "--" + spec.name.replace("_", "-"))
            values = value if isinstance(value, list) else [value]
            if meta["choices"] is not None and any(v not in meta["choices"] for v in values):
                raise ConfigError(f"{flag} must be one of {', '.join(meta['choices'])}; got {value!r}")
            if meta["minimum"] is not None and value is not None and value < meta["minimum"]:
                raise ConfigError(f"{flag} must be >= {meta['minimum']}; got {value!r}")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give --steps or --epochs, not both")
        if not self.data.startswith("demo") and self.model is None:
            raise ConfigError("--model: give a checkpoint to fine-tune, a config.json, or a preset "
                              "(demo-config, align-base-config, or align-base)")


def _flag_type(spec: dataclasses.Field):
    """bool, list, or the type a flag's text converts to (`int | None` -> int)."""
    hint = typing.get_type_hints(TrainingConfig)[spec.name]
    if typing.get_origin(hint) is list:
        return list
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return kinds[0]


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainingConfig` field, grouped as in `GROUPS`, with the field's help."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for spec in dataclasses.fields(TrainingConfig):
        meta = dict(spec.metadata)
        extra = dict(meta["argparse"])
        flag = extra.pop("flag", "--" + spec.name.replace("_", "-"))
        kind = _flag_type(spec)
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        kwargs = dict(help=meta["help"], default=default, dest=extra.pop("dest", spec.name))
        if kind is bool:
            kwargs["action"] = "store_true"
        elif kind is list:
            kwargs.update(action="append", choices=meta["choices"])
        elif "action" not in extra:
            kwargs.update(type=kind, choices=meta["choices"])
        kwargs.update(extra)
        groups[meta["group"]].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The `TrainingConfig` a parsed `align-tf train` command line asks for."""
    values = {}
    for spec in dataclasses.fields(TrainingConfig):
        dest = spec.metadata["argparse"].get("dest", spec.name)
        values[spec.name] = getattr(args, dest)
    return TrainingConfig(**values)
