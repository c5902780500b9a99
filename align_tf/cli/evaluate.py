"""`align-tf classify`, `align-tf evaluate zero-shot`, `align-tf evaluate retrieval`."""

from __future__ import annotations

import json
import os
import sys

MODEL_HELP = ("checkpoint folder or hub id (e.g. kakaobrain/align-base); default: the small "
              "demo model bundled with align-tf")
TEMPLATE_HELP = ("prompt template with {} for the label, or a set: 'single' (\"a photo of {}.\") "
                 "or 'imagenet' (the 80 CLIP/ALIGN ImageNet prompts, ensembled); repeat to "
                 "ensemble your own")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "classify", help="zero-shot classify images against labels you name",
        description="Zero-shot classification: which of the --labels fits each image best. "
                    "Example: align-tf classify photos/ --labels cat dog 'red car'")
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or glob patterns")
    p.add_argument("--labels", nargs="+", required=True,
                   help="candidate labels (space separated; quote multi-word labels, or give "
                        "one comma-separated string)")
    p.add_argument("--template", action="append", default=None, help=TEMPLATE_HELP)
    p.add_argument("--top-k", type=int, default=None, help="labels shown per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=run_classify)

    evaluate = subparsers.add_parser(
        "evaluate", help="zero-shot classification accuracy or image-text retrieval recall",
        description="Evaluate a model zero-shot on a labelled image folder, or on image-text "
                    "retrieval (Flickr30K / MSCOCO protocol).")
    tasks = evaluate.add_subparsers(dest="task", metavar="TASK")

    z = tasks.add_parser(
        "zero-shot", help="top-1 / top-5 / per-class accuracy and a confusion matrix",
        description="Zero-shot accuracy on a folder with one subfolder of images per class. "
                    "Writes results.json and confusion_matrix.png to --output.")
    z.add_argument("--data", required=True, help="folder with one subfolder per class")
    z.add_argument("--class-names", default=None,
                   help="JSON file mapping subfolder name -> class name (default: the folder "
                        "names, '_' read as a space)")
    z.add_argument("--template", action="append", default=None, help=TEMPLATE_HELP)
    z.add_argument("--output", default="zero-shot-eval", help="output folder (created)")
    _common(z)
    z.set_defaults(func=run_evaluate_zero_shot)

    r = tasks.add_parser(
        "retrieval", help="R@1/5/10 both ways, mean and median rank",
        description="Image-text retrieval: every image with its captions; R@1/5/10 for "
                    "image->text and text->image. --data is a Karpathy split JSON "
                    "(dataset_coco.json / dataset_flickr30k.json, with --images and --split) "
                    "or a TSV of image_path<TAB>caption.")
    r.add_argument("--data", required=True, help="Karpathy JSON or image/caption TSV")
    r.add_argument("--images", default=None, help="image folder (Karpathy JSON: required; "
                                                   "TSV: base of relative paths)")
    r.add_argument("--split", default="test", help="Karpathy split (default: test)")
    r.add_argument("--cache", default=".align-tf-cache",
                   help="folder for cached embeddings (default: .align-tf-cache)")
    r.add_argument("--no-cache", action="store_true", help="always recompute embeddings")
    r.add_argument("--output", default=None, help="write the metrics JSON here too")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(r)
    r.set_defaults(func=run_evaluate_retrieval)
    evaluate.set_defaults(func=lambda args: (evaluate.print_help(), 2)[1])


def _common(parser) -> None:
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--batch-size", type=int, default=32, help="images / texts per batch")


def embedder_for(args):
    """Load the model named by --model (or the demo model, saying so on stderr)."""
    from align_tf.applications.embedder import DEMO_MODEL_NOTE, load_embedder

    embedder = load_embedder(args.model, batch_size=args.batch_size)
    if embedder.is_demo:
        print(DEMO_MODEL_NOTE, file=sys.stderr)
    return embedder


def model_fingerprint(embedder) -> str:
    """Model name plus its folder's newest file time: a retrained model misses the cache."""
    folder = getattr(embedder.model, "source_folder", None)
    if not folder or not os.path.isdir(folder):
        return str(embedder.source)
    newest = max(os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder))
    return f"{embedder.source}|{os.path.abspath(folder)}|{newest}"


def parse_labels(values) -> list[str]:
    if len(values) == 1 and "," in values[0]:
        values = values[0].split(",")
    labels = [v.strip() for v in values if v.strip()]
    if not labels:
        from align_tf.errors import ConfigError

        raise ConfigError("--labels: no labels given; expected one or more labels")
    return labels


def run_classify(args) -> int:
    from align_tf.applications.image_files import find_images
    from align_tf.applications.zero_shot import ZeroShotClassifier

    paths = find_images(args.images)
    labels = parse_labels(args.labels)
    top_k = args.top_k or min(3, len(labels))
    classifier = ZeroShotClassifier(embedder_for(args), class_names=labels,
                                    templates=args.template or "single",
                                    batch_size=args.batch_size, progress="auto")
    results = classifier(paths, top_k=top_k)
    if args.json:
        print(json.dumps([{"image": p, "labels": r} for p, r in zip(paths, results)], indent=2))
        return 0
    rows = [[p] + [f"{r['label']} ({r['score']:.3f})" for r in result]
            for p, result in zip(paths, results)]
    header = ["image"] + [f"#{i + 1} label (score)" for i in range(top_k)]
    print(format_table(header, rows))
    return 0


def format_table(header, rows) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_evaluate_zero_shot(args) -> int:
    from align_tf.evaluation.classification_metrics import (classification_metrics,
                                                            save_confusion_matrix_png)
    from align_tf.applications.image_files import read_class_folders
    from align_tf.applications.zero_shot import ZeroShotClassifier

    paths, labels, class_names = read_class_folders(args.data, args.class_names)
    embedder = embedder_for(args)
    classifier = ZeroShotClassifier(embedder, class_names=class_names,
                                    templates=args.template or "single",
                                    batch_size=args.batch_size, progress="auto")
    logits = classifier.logits(paths)
    metrics = classification_metrics(logits, labels, class_names)
    metrics.update(data=os.path.abspath(args.data), model=embedder.source,
                   templates=list(classifier.templates), class_names=class_names)
    os.makedirs(args.output, exist_ok=True)
    png = save_confusion_matrix_png(metrics["confusion_matrix"], class_names,
                                    os.path.join(args.output, "confusion_matrix.png"))
    results_path = os.path.join(args.output, "results.json")
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    print(f"zero-shot on {metrics['num_images']} images, {len(class_names)} classes "
          f"({len(classifier.templates)} template(s))")
    print(f"top-1 {metrics['top1']:.2f}%   top-5 {metrics['top5']:.2f}%   "
          f"mean per-class {metrics['mean_per_class']:.2f}%")
    width = max(len(n) for n in class_names)
    for name, accuracy in metrics["per_class"].items():
        shown = "   n/a" if accuracy is None else f"{accuracy:6.2f}%"
        print(f"  {name.ljust(width)}  {shown}")
    print(f"wrote {results_path} and {png}")
    return 0


def run_evaluate_retrieval(args) -> int:
    from align_tf.evaluation.retrieval import evaluate_retrieval, read_retrieval_dataset

    dataset = read_retrieval_dataset(args.data, args.images, args.split)
    missing = [p for p in dataset.image_paths if not os.path.exists(p)]
    if missing:
        print(f"align-tf evaluate retrieval: {len(missing)} of {len(dataset.image_paths)} images "
              f"not found (first: {missing[0]})", file=sys.stderr)
        return 2
    embedder = embedder_for(args)
    metrics = evaluate_retrieval(embedder, dataset, None if args.no_cache else args.cache,
                                 model_id=model_fingerprint(embedder), progress="auto")
    metrics.update(data=os.path.abspath(args.data), split=args.split, model=embedder.source)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"retrieval on {metrics['num_images']} images, {metrics['num_texts']} captions")
    header = ["direction", "R@1", "R@5", "R@10", "mean rank", "median rank"]
    rows = [[name.replace("_", " "), *(f"{metrics[name][f'R@{k}']:.2f}" for k in (1, 5, 10)),
             f"{metrics[name]['mean_rank']:.2f}", f"{metrics[name]['median_rank']:.1f}"]
            for name in ("image_to_text", "text_to_image")]
    print(format_table(header, rows))
    print(f"rsum {metrics['rsum']:.2f}")
    return 0

