"""`align-tf data write-tfrecords`: shard a TSV / CSV of (image path, caption) into TFRecords."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare training data (TFRecord shards)")
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    write = commands.add_parser(
        "write-tfrecords",
        help="shard a TSV/CSV of image paths and captions into TFRecords",
        description=(
            "Read TABLE (a .tsv or .csv of `image path, caption` rows; a header row naming the "
            "columns is recognised), check every image's header (format, size, decompression-bomb "
            "guard), and write the image bytes with their captions into OUTPUT-NNNNN-of-MMMMM.tfrecord "
            "shards. Unreadable or refused images are skipped and summarised at the end."
        ),
    )
    write.add_argument("table", help="TSV / CSV file: image path, caption")
    write.add_argument("output", help="shard prefix, e.g. data/train (gives data/train-00000-of-00004.tfrecord)")
    write.add_argument("--image-root", default=None, help="folder the image paths are relative to (default: the table's folder)")
    write.add_argument("--num-shards", type=int, default=None, help="number of shards (default: from --examples-per-shard)")
    write.add_argument("--examples-per-shard", type=int, default=1000, help="pairs per shard when --num-shards is not given")
    write.add_argument("--shuffle-seed", type=int, default=None, help="shuffle the rows with this seed before sharding")
    write.add_argument("--image-column", default=None, help="column index or header name of the image path (default 0)")
    write.add_argument("--caption-column", default=None, help="column index or header name of the caption (default 1)")
    write.add_argument("--max-pixels", type=int, default=40_000_000, help="refuse images whose header declares more pixels")
    write.add_argument("--verify", action="store_true", help="also decode every image (slower; catches truncated files)")
    write.add_argument("--gzip", action="store_true", help="GZIP-compress the shards (.tfrecord.gz)")
    write.add_argument("--no-progress", action="store_true", help="no progress bar")
    write.set_defaults(func=run_write_tfrecords)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _column(value):
    if value is None:
        return None
    return int(value) if str(value).isdigit() else value


def run_write_tfrecords(args) -> int:
    from align_tf.data.pipelines import DataSpecError, read_caption_table
    from align_tf.data.tfrecord import write_tfrecords
    from align_tf.preprocessing.image import AlignImageProcessor

    pairs = read_caption_table(args.table, args.image_root, image_column=_column(args.image_column),
                               caption_column=_column(args.caption_column))
    if not pairs:
        raise DataSpecError(f"{args.table} has no rows; expected image<TAB>caption lines")
    checker = AlignImageProcessor(max_pixels=args.max_pixels)
    summary = write_tfrecords(
        pairs,
        args.output,
        num_shards=args.num_shards,
        examples_per_shard=args.examples_per_shard,
        shuffle_seed=args.shuffle_seed,
        check=checker.describe_problem if not args.verify else checker.find_decode_problem,
        compression="GZIP" if args.gzip else None,
        progress=not args.no_progress,
    )
    print(summary.describe())
    return 0 if summary.written else 1
