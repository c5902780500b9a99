"""`align-tf export` (a trained model -> a TF Serving SavedModel) and `align-tf serve` (local server)."""

from __future__ import annotations

import os
from align_tf.errors import ConfigError


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export",
        help="export a model as a TF Serving SavedModel (saved_models/<name>/<version>/)",
        description=(
            "Load MODEL (an align-tf folder written by save_pretrained, an HF checkpoint folder, "
            "a hub id, or 'demo' for the bundled demo model) with its tokenizer and image "
            "processor, and write OUTPUT/<version>/ with the signatures serving_default (= "
            "classify), embed_text, embed_image, embed_pixels, embed_tokens and similarity. "
            "The export is refused if its graph needs an op that stock TF Serving lacks."
        ),
    )
    export.add_argument("--model", required=True, help="model folder, hub id, or 'demo'")
    export.add_argument("--output", default=os.path.join("saved_models", "align"),
                        help="model base path; the version folder goes inside (default: %(default)s)")
    export.add_argument("--version", type=int, default=None,
                        help="version number (default: one more than the largest present)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version folder")
    export.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="what the towers compute in (inputs and outputs stay float32): "
                             "bfloat16 is about 1.5-2x faster on CPUs with AVX512_BF16 or AMX, "
                             "at cosine >= 0.999 with float32 (docs/performance.md); float16 "
                             "for GPUs. Default: %(default)s")
    export.add_argument("--no-op-check", dest="check_ops", action="store_false",
                        help="skip the TF Serving op allow-list check")
    export.add_argument("--labels", default=None, metavar="FILE",
                        help="text file, one label per line: adds the classify signature zero_shot "
                             "(tf.Examples with image bytes under image/encoded -> classes, scores) "
                             "for TF Serving's Classify API")
    export.add_argument("--template", action="append", default=None,
                        help="with --labels: prompt template with {} for the label, or a set: "
                             "'single' (\"a photo of {}.\") or 'imagenet'; repeat to ensemble "
                             "(as align-tf classify)")
    export.set_defaults(func=run_export)

    serve = subparsers.add_parser(
        "serve",
        help="serve exported SavedModels over TF Serving's gRPC and REST APIs (local/CI stand-in)",
        description=(
            "A local stand-in for tensorflow_model_server with the same flags, gRPC services "
            "(PredictionService, ModelService, grpc.health.v1) and REST routes. It loads the "
            "newest version under --model_base_path and polls for new ones. For development and "
            "CI; production runs real TF Serving (see serving/README.md)."
        ),
    )
    add_server_flags(serve)
    serve.set_defaults(func=run_serve)


def add_server_flags(parser) -> None:
    """Every flag of tensorflow_model_server (ServerOptions: name, type, default, help), written
    as TF Serving takes them: `--name=value`, booleans also as a bare `--name`."""
    from dataclasses import MISSING, fields

    from align_tf.serving.server import ServerOptions

    for f in fields(ServerOptions):
        default = f.default if f.default is not MISSING else None
        note = f.metadata.get("help") or f"accepted; no effect here: {f.metadata.get('no_effect')}"
        if isinstance(default, bool):
            parser.add_argument(f"--{f.name}", type=_flag_bool, nargs="?", const=True, default=default,
                                help=f"{note} (default: {str(default).lower()})")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(f"--{f.name}", type=kind, default=default,
                                help=f"{note} (default: %(default)s)")


def _flag_bool(text: str) -> bool:
    """TF Serving's booleans: `--flag`, `--flag=true`, `--flag=false`."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ConfigError(f"not a boolean: {text!r}")


def run_export(args) -> int:
    from align_tf.assets import resolve_model
    from align_tf.export import export_saved_model, non_core_ops
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    labels = read_labels_file(args.labels) if args.labels else None
    if args.template and labels is None:
        raise ConfigError("--template: only used with --labels FILE (the zero_shot signature)")
    source, _ = resolve_model(args.model)
    model = AlignModel.from_pretrained(source)
    processor = AlignProcessor.from_pretrained(source)
    target = export_saved_model(model, processor, args.output, args.version,
                                check_ops=args.check_ops, overwrite=args.overwrite,
                                precision=args.precision,
                                labels=labels, templates=args.template or "single")
    extra = sorted(non_core_ops(target))
    print(f"exported {args.model} -> {target} ({args.precision})")
    print("signatures: serving_default (= classify), embed_text, embed_image, embed_pixels, "
          "embed_tokens, similarity" + (f", zero_shot ({len(labels)} labels)" if labels else ""))
    print(f"non-core ops: {', '.join(extra) if extra else 'none'} (all linked by TF Serving 2.20)")
    return 0


def read_labels_file(path: str) -> list[str]:
    """One label per line; blank lines and surrounding spaces ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ConfigError(f"--labels {path}: cannot read it ({e.strerror}); expected a text file "
                          "with one label per line") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--labels {path}: not UTF-8 text (byte {e.start}); expected a text file "
                          "with one label per line") from None
    if not labels:
        raise ConfigError(f"--labels {path}: no labels in it; expected one label per line")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"--labels {path}: duplicate labels {duplicates}; expected each label once")
    return labels


def run_serve(args) -> int:
    from dataclasses import fields

    from align_tf.serving.server import ServerOptions, serve

    return serve(ServerOptions(**{f.name: getattr(args, f.name) for f in fields(ServerOptions)}))
