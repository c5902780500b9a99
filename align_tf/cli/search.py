"""`align-tf index build` and `align-tf search`: a cross-modal image index on disk."""

from __future__ import annotations

import json
import os
import sys

from align_tf.cli.evaluate import MODEL_HELP, format_table


def register(subparsers) -> None:
    index = subparsers.add_parser(
        "index", help="build a searchable index of image embeddings",
        description="Manage image-embedding indexes for `align-tf search`.")
    actions = index.add_subparsers(dest="action", metavar="ACTION")
    b = actions.add_parser(
        "build", help="embed images into an index folder (resumable)",
        description="Embed every image into --output (shards of .npy + metadata.jsonl + "
                    "index.json). Re-running the same command after an interruption continues "
                    "where it stopped.")
    b.add_argument("images", nargs="*", help="image files, folders (recursive) or glob patterns")
    b.add_argument("--from-embeddings", default=None, metavar="DIR",
                   help="build from the Parquet shards of `align-tf embed --output DIR` instead "
                        "of embedding images (no model runs; one shard in memory at a time)")
    b.add_argument("--output", required=True, help="index folder")
    b.add_argument("--model", default=None, help=MODEL_HELP)
    b.add_argument("--batch-size", type=int, default=32, help="images per batch")
    b.add_argument("--shard-size", type=int, default=4096,
                   help="images per shard file; progress is saved after each shard")
    b.add_argument("--float16", action="store_true", help="store embeddings as float16 (half "
                                                          "the disk; ranking barely changes)")
    b.add_argument("--restart", action="store_true", help="discard a partial index and start over")
    b.add_argument("--faiss", action="store_true",
                   help="also build the approximate HNSW index (needs faiss-cpu) and report its "
                        "recall@10 against exact search on up to 200 indexed images as queries")
    b.add_argument("--ivfpq", action="store_true",
                   help="also build a compressed faiss IVF-PQ index (for corpora past memory; "
                        "search --backend ivfpq) and report its recall@10 against exact search")
    b.add_argument("--nlist", type=int, default=None, help="IVF-PQ lists (default ~4 sqrt(rows))")
    b.add_argument("--pq-m", type=int, default=None,
                   help="IVF-PQ bytes per vector (a divisor of the embedding size; default D/10)")
    b.add_argument("--nprobe", type=int, default=None,
                   help="IVF-PQ lists searched per query (default nlist/8; stored in the index)")
    b.set_defaults(func=run_index_build)
    index.set_defaults(func=lambda args: (index.print_help(), 2)[1])

    s = subparsers.add_parser(
        "search", help="query an index by text, image, or image plus/minus text",
        description="Top-k images of an index for a text query, an image query, or an image "
                    "query with texts added (--plus-text) and subtracted (--minus-text), e.g. "
                    "--image blue_circle.png --plus-text red --minus-text blue.")
    s.add_argument("--index", required=True, help="index folder from `align-tf index build`")
    query = s.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", help="image query (a file)")
    s.add_argument("--plus-text", action="append", default=[], help="add this text (repeatable)")
    s.add_argument("--minus-text", action="append", default=[],
                   help="subtract this text (repeatable)")
    s.add_argument("--weight", type=float, default=1.0,
                   help="weight of the added / subtracted text embeddings (default 1)")
    s.add_argument("--text-template", action="append", default=None,
                   help="embed every query text inside this template ({} for the text) and "
                        "average over the templates given (repeatable), e.g. "
                        "--text-template 'a {} circle' --text-template 'a {} square'")
    s.add_argument("--top-k", type=int, default=5, help="results to show (default 5)")
    s.add_argument("--backend", choices=("exact", "faiss", "ivfpq"), default="exact",
                   help="exact chunked search, approximate HNSW (needs faiss-cpu), or the IVF-PQ "
                        "index built with `index build --ivfpq`")
    s.add_argument("--model", default=None,
                   help="model to embed the query (default: the one that built the index)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_search)


def run_index_build(args) -> int:
    if args.from_embeddings:
        if args.images:
            print("align-tf index build: give images or --from-embeddings, not both",
                  file=sys.stderr)
            return 2
        index = index_from_embeddings(args)
    else:
        if not args.images:
            print("align-tf index build: give images (or --from-embeddings DIR)", file=sys.stderr)
            return 2
        index = index_from_images(args)
    print(f"index {args.output}: {len(index)} images, {index.dim}-d {index.dtype}, "
          f"{len(index.shards)} shard(s)")
    report_approximate_indexes(index, args)
    return 0


def index_from_embeddings(args):
    from align_tf.applications.search import EmbeddingIndex
    from align_tf.corpus.shards import iter_embedding_shards, read_manifest

    manifest = read_manifest(args.from_embeddings)
    dtype = "float16" if args.float16 else (manifest or {}).get("dtype", "float32")
    # `align-tf search` embeds queries with the index's model: --model, else the checkpoint the
    # corpus came from. A corpus embedded by a SavedModel or a server has none.
    model = args.model or ((manifest or {}).get("model") or {}).get("checkpoint")
    if model is None:
        print("note: the corpus was embedded by a SavedModel or a server, so the index records no "
              "checkpoint for queries: give `index build --model CHECKPOINT` (the one exported), "
              "or `align-tf search --model CHECKPOINT`", file=sys.stderr)
    return EmbeddingIndex.build_from_shards(iter_embedding_shards(args.from_embeddings),
                                            args.output, dtype=dtype, model=model)


def index_from_images(args):
    from align_tf.cli.evaluate import embedder_for
    from align_tf.applications.image_files import find_images
    from align_tf.applications.search import EmbeddingIndex

    paths = [os.path.abspath(p) for p in find_images(args.images)]
    embedder = embedder_for(args)
    model = embedder.source
    if model and os.path.isdir(model):
        model = os.path.abspath(model)
    index = EmbeddingIndex.build(paths, embedder, args.output,
                                 dtype="float16" if args.float16 else "float32",
                                 batch_size=args.batch_size, shard_size=args.shard_size,
                                 progress=len(paths) > 48, model=model, resume=not args.restart)
    return index


def report_approximate_indexes(index, args) -> None:
    """Build the approximate indexes asked for and print their recall@10 against exact search,
    with up to 200 indexed rows as queries."""
    import numpy as np

    sample = np.random.default_rng(0).choice(len(index), min(200, len(index)), replace=False)
    k = min(10, len(index))
    if args.ivfpq:
        settings = index.build_ivfpq(nlist=args.nlist, m=args.pq_m, nprobe=args.nprobe)
        recall = index.approximate_recall(index.rows(sample), k=k, backend="ivfpq")
        print(f"faiss IVF-PQ index built (nlist {settings['nlist']}, m {settings['m']}, "
              f"{settings['nbits']} bits, nprobe {settings['nprobe']}, "
              f"{settings['bytes_per_row']:g} bytes/row); recall@{k} against exact search on "
              f"{len(sample)} indexed images as queries: {recall:.3f}")
    if args.faiss:
        recall = index.approximate_recall(index.rows(sample), k=k)
        print(f"faiss HNSW index built; recall@{k} against exact search on {len(sample)} "
              f"indexed images as queries: {recall:.3f}")


def run_search(args) -> int:
    from align_tf.cli.evaluate import embedder_for
    from align_tf.applications.search import EmbeddingIndex

    if args.text is not None and (args.plus_text or args.minus_text):
        print("align-tf search: --plus-text / --minus-text modify an --image query",
              file=sys.stderr)
        return 2
    index = EmbeddingIndex.load(args.index)
    args.model = args.model or index.model
    args.batch_size = 32
    index.embedder = embedder_for(args)
    hits = index.query(text=args.text, image=args.image, plus_text=args.plus_text,
                       minus_text=args.minus_text, weight=args.weight, k=args.top_k,
                       backend=args.backend, text_templates=args.text_template)
    if args.json:
        print(json.dumps(hits, indent=2))
        return 0
    keys = [k for k in hits[0] if k not in ("rank", "score", "id")] if hits else []
    rows = [[h["rank"], f"{h['score']:.4f}", *(h.get(k, "") for k in keys)] for h in hits]
    print(format_table(["rank", "score", *keys], rows))
    return 0
