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
    from align_tf.training.options import add_training_arguments

    add_training_arguments(parser)


def config_from_args(args):
    from align_tf.training.options import config_from_args as from_args

    return from_args(args)


def run_train(args, extra_callbacks=()) -> int:
    from align_tf.training.recipe import train

    summary = train(config_from_args(args), extra_callbacks=extra_callbacks)
    print(summary.describe())
    return 0
