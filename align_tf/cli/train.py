"""`align-tf train`: the training recipe from the command line."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Contrastive training with model.fit under a tf.distribute strategy: negatives from the whole
global batch (embeddings all-gathered across replicas), label smoothing 0.1, learnable
temperature, LAMB (or AdamW) with weight decay off BatchNorm / LayerNorm / biases / temperature,
linear warmup then linear decay. Killed and started again with the same command, a run resumes
from OUTPUT/backup and ends with the same weights. OUTPUT gets config.json, model.weights.h5,
the tokenizer and preprocessor files, training_summary.json, checkpoints/step-N/ and logs/
(TensorBoard: loss, temperature, accuracy, learning rate).

examples:
  align-tf train --data demo --steps 300 --output runs/demo        # the shapes x colours demo
  align-tf train --data digits --model demo-config --epochs 40 --output runs/digits
  align-tf train --data 'shards/train-*.tfrecord' --model kakaobrain/align-base \\
      --strategy mirrored --global-batch-size 256 --steps 10000 --warmup-steps 500 \\
      --learning-rate 1e-4 --precision mixed_float16 --output runs/finetune
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train or fine-tune with the contrastive loss (model.fit, tf.distribute)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run_train)


def add_arguments(parser) -> None:
    from align_tf.presets import PRESETS
    from align_tf.training.recipe import FREEZE_CHOICES, PRECISIONS

    data = parser.add_argument_group("data and model")
    data.add_argument("--data", default="demo",
                      help="'demo' or 'demo:COUNT' (generated shapes x colours, default 8000 pairs), "
                           "'digits' (scikit-learn's digits), a TFRecord glob, a TSV file or a "
                           "Karpathy JSON (read by align_tf.data); default: demo")
    data.add_argument("--image-root", default=None,
                      help="image folder for a Karpathy JSON (default for a TSV: the TSV's folder)")
    data.add_argument("--model", default=None,
                      help="checkpoint folder or hub id to fine-tune, a config.json to train from "
                           f"scratch, or a preset ({', '.join(PRESETS)}); default: demo-config "
                           "for --data demo")
    data.add_argument("--text-model", default=None,
                      help="initialise the text tower from this HF BERT checkpoint (folder or hub id)")
    data.add_argument("--output", default="runs/align", help="output folder (default: runs/align)")

    run = parser.add_argument_group("schedule")
    run.add_argument("--strategy", default="default",
                     choices=["default", "mirrored", "multi_worker", "tpu"],
                     help="tf.distribute strategy; multi_worker reads TF_CONFIG")
    run.add_argument("--global-batch-size", type=int, default=32,
                     help="examples per step over all replicas (the contrastive batch)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument("--epochs", type=float, default=None,
                        help="passes over the data (demo and digits sets)")
    run.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    run.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps")
    run.add_argument("--optimizer", choices=["lamb", "adamw"], default="lamb")
    run.add_argument("--weight-decay", type=float, default=1e-5)
    run.add_argument("--precision", choices=PRECISIONS, default="float32")
    run.add_argument("--freeze", action="append", choices=FREEZE_CHOICES, default=[],
                     help="keep a tower fixed (a frozen vision tower keeps BatchNorm in inference "
                          "mode); repeatable")
    run.add_argument("--gradient-accumulation-steps", type=int, default=1,
                     help="apply the mean gradient of this many batches at once")
    run.add_argument("--augment", action="store_true",
                     help="random crop and flip of in-memory images (files follow align_tf.data)")
    run.add_argument("--seed", type=int, default=0)

    out = parser.add_argument_group("checkpoints and logs")
    out.add_argument("--save-every", type=int, default=None,
                     help="optimizer steps between backups and checkpoints (default: a tenth of the run)")
    out.add_argument("--keep-checkpoints", type=int, default=2,
                     help="OUTPUT/checkpoints/step-N folders to keep (0: none)")
    out.add_argument("--save-dtype", choices=["float32", "float16"], default="float32",
                     help="dtype of the saved weights (float16: half the size)")
    out.add_argument("--logdir", default=None, help="TensorBoard folder (default: OUTPUT/logs)")
    out.add_argument("--eval-count", type=int, default=480,
                     help="fresh demo images for the final zero-shot accuracy")
    out.add_argument("--label-smoothing", type=float, default=0.1)
    out.add_argument("--min-temperature", type=float, default=None,
                     help="lower bound of the learnable temperature")
    out.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args):
    from align_tf.training.recipe import TrainingConfig

    return TrainingConfig(
        data=args.data, image_root=args.image_root, model=args.model, text_model=args.text_model,
        output=args.output,
        strategy=args.strategy, global_batch_size=args.global_batch_size, steps=args.steps,
        epochs=args.epochs, learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, optimizer=args.optimizer, precision=args.precision,
        freeze=list(args.freeze), gradient_accumulation_steps=args.gradient_accumulation_steps,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, logdir=args.logdir,
        save_dtype=args.save_dtype,
        label_smoothing=args.label_smoothing, min_temperature=args.min_temperature,
        augment=args.augment, seed=args.seed, eval_count=args.eval_count,
        verbose=0 if args.quiet else 1)


def run_train(args, extra_callbacks=()) -> int:
    from align_tf.training.recipe import train

    try:
        summary = train(config_from_args(args), extra_callbacks=extra_callbacks)
    except (ValueError, FileNotFoundError) as error:
        import sys

        print(f"align-tf train: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0
