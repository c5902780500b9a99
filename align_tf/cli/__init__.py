"""The `align-tf` command: a thin dispatcher; each capability registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import os
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
    "align_tf.cli.embed",
]


def _leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser under `parser` that has no subcommands of its own (and `parser` itself)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield parser
        return
    for action in actions:
        for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            yield from _leaf_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="align-tf",
        description=(
            "ALIGN (EfficientNet image tower + BERT text tower) in TensorFlow / Keras 3: "
            "zero-shot classification, training, export to TF Serving, serving, search."
        ),
        epilog="Errors print one line on stderr and exit with status 2; --verbose shows the "
               "traceback and TensorFlow's own log lines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for leaf in _leaf_parsers(parser):
        if leaf is parser:
            continue
        leaf.add_argument("--verbose", action="store_true",
                          help="show TensorFlow's log lines and full tracebacks")
        leaf.set_defaults(prog=leaf.prog)
    return parser


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up lines (cuInit / CUDA driver errors on machines without a
    GPU, oneDNN notices) and its Python warnings, unless the user set TF_CPP_MIN_LOG_LEVEL.

    TensorFlow 2.21 prints its start-up lines through absl before absl logging is initialised,
    where TF_CPP_MIN_LOG_LEVEL does not reach them: so TensorFlow is imported (and its devices
    listed, where CUDA initialises) with the process's stderr pointed at a temporary file, which
    is shown only if the import fails."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import logging
    import tempfile
    import warnings

    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|google\.protobuf)(\.|$)")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                import tensorflow as tf

                tf.config.list_physical_devices()
            except BaseException:
                os.dup2(saved, 2)
                sink.seek(0)
                sys.stderr.buffer.write(sink.read())
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not args.verbose:
        quiet_tensorflow()
    from align_tf.errors import AlignTFError

    try:
        result = args.func(args)
    except AlignTFError as error:
        if args.verbose:
            raise
        # One line: the problem, named by the error itself (which says what was expected).
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{args.prog}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
