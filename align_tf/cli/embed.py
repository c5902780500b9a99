"""`align-tf embed`: embed a corpus into Parquet shards, in this process or on Ray."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

MODEL_HELP = ("a SavedModel from `align-tf export` (what the workers load), or a checkpoint "
              "folder / hub id exported into OUTPUT/model first; default: the demo model")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="embed a corpus of images (and captions) into Parquet shards, on Ray or here",
        description="Embed every image (and caption) into Parquet shards in --output, with the "
                    "exported SavedModel's embed_image / embed_text signatures. Inputs: image "
                    "files, folders, globs, TSV/CSV tables of image<TAB>caption, TFRecord shards "
                    "from `align-tf data write-tfrecords`, Parquet files with an image-bytes "
                    "column; local paths or URIs (s3://, gs://, file://). Images that cannot be "
                    "read or decoded go to errors.jsonl. Running the same command again after an "
                    "interruption skips the finished shards.")
    p.add_argument("--images", nargs="+", default=[], metavar="PATH",
                   help="inputs: image files, folders, globs, tables, TFRecord or Parquet files")
    p.add_argument("--texts", nargs="+", default=[], metavar="TABLE",
                   help="TSV/CSV tables of image<TAB>caption: each row's image and caption are "
                        "embedded (caption, text_embedding columns)")
    p.add_argument("--output", required=True, help="output folder (created)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: in this process; ray: Ray Data actors (default: %(default)s)")
    p.add_argument("--ray-address", default=None,
                   help="an existing Ray cluster (host:port of its head, ray://head:10001 or "
                        "auto; or the RAY_ADDRESS variable); a cluster with token "
                        "authentication takes its token from RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN; default: a new local Ray on 127.0.0.1")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, one model each")
    p.add_argument("--batch-size", type=int, default=32, help="images per signature call")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray actor")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs per Ray actor (default: this machine's cores / --workers locally, "
                        "1 on a cluster)")
    p.add_argument("--shard-size", type=int, default=1000,
                   help="images per output shard for files and tables (a TFRecord or Parquet "
                        "input file is one shard)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage type of the embeddings")
    p.add_argument("--serving-url", default=None,
                   help="send images to this TF Serving endpoint (host:8500 gRPC or "
                        "http://host:8501 REST) instead of loading the model in each worker")
    p.add_argument("--serving-model-name", default="align", help="model name on that server")
    p.add_argument("--image-root", default=None, help="folder a table's image paths are "
                                                      "relative to (default: the table's folder)")
    p.add_argument("--image-column", default=None, help="image column of tables / Parquet")
    p.add_argument("--caption-column", default=None, help="caption column of tables / Parquet")
    p.add_argument("--id-column", default=None, help="id column of Parquet inputs (default: id, "
                                                     "key, path or url, else file#row)")
    p.add_argument("--restart", action="store_true",
                   help="discard the shards in --output and start over")
    p.set_defaults(func=run_embed)


def run_embed(args) -> int:
    from align_tf.corpus.embed import embed_corpus

    if not args.images and not args.texts:
        print("align-tf embed: give --images and/or --texts", file=sys.stderr)
        return 2
    if args.model and args.serving_url:
        print("align-tf embed: give --model or --serving-url, not both", file=sys.stderr)
        return 2
    quiet = args.engine == "ray" and not args.verbose
    with ray_lines_hidden() if quiet else contextlib.nullcontext():
        manifest = embed_corpus(
            args.images, args.output, model=args.model, texts=args.texts, engine=args.engine,
            ray_address=args.ray_address, workers=args.workers, batch_size=args.batch_size,
            gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
            dtype=args.dtype, shard_size=args.shard_size, serving_url=args.serving_url,
            serving_model_name=args.serving_model_name, image_root=args.image_root,
            image_column=args.image_column, caption_column=args.caption_column,
            id_column=args.id_column, restart=args.restart, verbose=args.verbose)
    counts = manifest["counts"]
    print(f"{args.output}: {counts['embedded']} embedded, {counts['errors']} error(s) "
          f"(errors.jsonl), {counts['shards']} shard(s), {counts['shards_this_run']} written "
          f"this run, {manifest['time']['seconds_this_run']:.1f} s")
    return 0


@contextlib.contextmanager
def ray_lines_hidden():
    """The quiet rule of the other commands, for Ray: its log lines (its Python loggers, which
    write to whatever sys.stderr is, and the C++ core worker of this process, which writes to
    file descriptor 2 itself) go to a temporary file while Ray runs; the progress bar is drawn on
    the terminal, and errors are printed by `align-tf` after the block. `--verbose` skips this.
    Should something other than an align-tf error end the block, the hidden lines are shown."""
    from align_tf.errors import AlignTFError
    from align_tf.progress import bars_drawn_on

    sys.stderr.flush()
    saved = os.dup(2)
    terminal = open(saved, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with bars_drawn_on(terminal):
                yield
        except (AlignTFError, KeyboardInterrupt):
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            terminal.close()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))
                sys.stderr.flush()
