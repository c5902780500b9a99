"""The `align-tf` command: a thin dispatcher; each capability registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`, adding parsers whose `func(args)` does the work.
# Heavy imports (TensorFlow) happen inside `func`, so `align-tf --help` stays fast.
COMMAND_MODULES = [
    "align_tf.cli.convert",
    "align_tf.cli.serving",
    "align_tf.cli.evaluate",
    "align_tf.cli.search",
    "align_tf.cli.train",
    "align_tf.cli.data",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="align-tf",
        description=(
            "ALIGN (EfficientNet image tower + BERT text tower) in TensorFlow / Keras 3: "
            "zero-shot classification, training, export to TF Serving, serving, search."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
