"""`align-tf convert`: an HF checkpoint (folder or hub id) -> an align-tf folder."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Hugging Face ALIGN/BERT checkpoint to align-tf's format",
        description=(
            "Read a Hugging Face checkpoint (a folder with config.json and model.safetensors or "
            "pytorch_model.bin, or a hub id such as kakaobrain/align-base), check every weight "
            "against the model (strict: missing, extra or mis-shaped keys are an error), and "
            "write OUT/config.json + OUT/model.weights.h5 plus the tokenizer and preprocessor "
            "files. --format hf writes model.safetensors in the Hugging Face layout instead."
        ),
    )
    parser.add_argument("source", help="HF checkpoint folder or hub id")
    parser.add_argument("output", help="folder to write")
    parser.add_argument("--format", choices=["keras", "hf"], default="keras",
                        help="keras: model.weights.h5 (default); hf: model.safetensors, HF layout")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.set_defaults(func=run_convert)


def run_convert(args) -> int:
    from align_tf.checkpoints.hub import resolve_pretrained
    from align_tf.configuration import AlignConfig, AlignTextConfig, load_config

    folder = resolve_pretrained(args.source, revision=args.revision)
    config = load_config(folder)
    if isinstance(config, AlignConfig):
        from align_tf.models.align import AlignModel as cls
    elif isinstance(config, AlignTextConfig):
        from align_tf.models.bert import AlignTextModel as cls
    else:
        from align_tf.models.efficientnet import AlignVisionModel as cls
    model = cls.from_pretrained(folder)
    model.save_pretrained(args.output, format=args.format)
    count = sum(int(w.numpy().size) for w in model.weights)
    print(f"converted {args.source} -> {args.output} ({cls.__name__}, {len(model.weights)} "
          f"variables, {count:,} values, format {args.format})")
    return 0
