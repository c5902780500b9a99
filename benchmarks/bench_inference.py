"""Inference throughput and peak memory: align-tf (TensorFlow backend) against the reference
transformers AlignModel (PyTorch), same converted weights, same machine, same script.

Each implementation runs in its own worker process (benchmarks/paired.py); runs alternate,
each figure is the median of --repeats runs, and peak memory is each worker's peak RSS.
Writes benchmarks/results/inference.json (and a throughput-vs-batch PNG).

    python benchmarks/bench_inference.py                 # align-base size, batches 1 8 32
    python benchmarks/bench_inference.py --quick         # batches 1 8, 2 repeats
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from machine_info import write_result  # noqa: E402
from paired import Pair, add_settle_argument, mark_imported, serve  # noqa: E402

# Real-looking alt-text captions (median about 12 wordpieces with [CLS]/[SEP]).
CAPTIONS = [
    "a photo of two cats sleeping on a pink blanket",
    "red double decker bus driving down a city street",
    "a plate of pasta with tomato sauce and basil",
    "aerial view of a beach with turquoise water at sunset",
    "a man riding a wave on top of a surfboard",
    "vintage wooden chair isolated on white background",
    "a bowl of fresh strawberries on a kitchen table",
    "snow covered mountains reflected in a calm lake",
    "close-up of a bee collecting pollen from a yellow flower",
    "the skyline of new york city at night",
    "a golden retriever puppy playing in the grass",
    "hand drawn illustration of a lighthouse on a cliff",
    "people walking through a busy market in marrakech",
    "a cup of coffee with latte art on a wooden table",
    "black and white portrait of an old fisherman",
    "a modern kitchen with marble countertops",
]


def make_checkpoint(folder: str | None = None, image_size: int | None = None, config=None) -> str:
    """The reference AlignModel at align-base size (or `config`) with random weights
    (randomised BatchNorm statistics, random biases and LayerNorm affine weights), saved as an HF folder that the workers load. With
    `image_size`, the image tower's convolutions fan-in scaled and its BatchNorm statistics
    measured at that size (support.fan_in_vision_weights: features that depend on the image)."""
    import torch
    import transformers

    from align_tf.presets import get_preset
    from support import fan_in_vision_weights, randomize_affine, randomize_reference, save_hf_checkpoint

    config = config or get_preset("align-base").config()
    torch.manual_seed(0)
    reference = randomize_reference(transformers.AlignModel(
        transformers.AlignConfig.from_dict(config.to_dict())), seed=0)
    randomize_affine(reference, seed=0)
    if image_size:
        fan_in_vision_weights(reference, image_size, seed=0)
    return save_hf_checkpoint(reference, folder or tempfile.mkdtemp(prefix="bench_align_"))


def tokenize(captions, fixed_64, length: int = 64, vocab_size: int = 30522):
    import transformers

    from support import minilm_folder

    if fixed_64:
        # `length` (64) real tokens per row: nothing to trim, pure compute. Ordinary wordpieces
        # (ids 1000-29999) in bert-base's vocabulary, any id past the specials in a smaller one.
        rng = np.random.default_rng(0)
        low, high = (1000, 30000) if vocab_size >= 30000 else (103, vocab_size)
        ids = rng.integers(low, high, (len(captions), length)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # The reference processor's default: padding="max_length", 64.
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_folder())
    batch = tokenizer(captions, padding="max_length", max_length=64, truncation=True, return_tensors="np")
    return {k: v.astype(np.int32) for k, v in batch.items()}


def reference_jobs(folder, threads: int | None = None) -> dict:
    """The reference's inference path as a worker's jobs: NHWC float32 pixels (transposed to
    NCHW inside the timed call) and int32 tokens in, float32 features out."""
    import torch
    import transformers

    mark_imported()
    torch.set_num_threads(threads or os.cpu_count())
    model = transformers.AlignModel.from_pretrained(folder).eval()

    def image(pixels):
        with torch.inference_mode():
            return model.get_image_features(
                pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()).pooler_output.numpy()

    def text(tokens):
        with torch.inference_mode():
            return model.get_text_features(
                **{k: torch.from_numpy(v).long() for k, v in tokens.items()}).pooler_output.numpy()

    def info(_):
        return {"torch_threads": torch.get_num_threads()}

    return {"image": image, "text": text, "info": info}


def ours_jobs(folder, **from_pretrained) -> dict:
    """Ours: `AlignModel.from_pretrained(folder, **from_pretrained)` (e.g. dtype=...), timed
    through the public `get_image_features` / `get_text_features`."""
    from align_tf.models.align import AlignModel

    mark_imported()
    model = AlignModel.from_pretrained(folder, **from_pretrained)

    def image(pixels):
        return np.asarray(model.get_image_features(pixels))

    def text(tokens):
        return np.asarray(model.get_text_features(**tokens))

    def info(_):
        import collections

        import tensorflow as tf

        stored = collections.Counter(str(getattr(v.dtype, "name", v.dtype)) for v in model.weights)
        return {"dtype_policy": model.dtype_policy.name, "weight_dtypes": dict(stored),
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}

    return {"image": image, "text": text, "info": info}


def worker(which, folder, conn):
    def setup():
        if which == "keras_applications":
            # The issue's yardstick: keras.applications' EfficientNetB7 trunk (plain TF, no XLA,
            # random weights), the same network family at the same size, as users build it.
            import keras
            import tensorflow as tf

            trunk = keras.applications.EfficientNetB7(include_top=False, weights=None,
                                                      input_shape=(None, None, 3), pooling="avg")
            run = tf.function(lambda x: trunk(x, training=False),
                              input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

            def image(pixels):
                run(pixels).numpy()  # to host, as the other two workers' outputs are

            return {"image": image}
        if which == "reference":
            return reference_jobs(folder)
        return ours_jobs(folder)

    serve(conn, setup)


def run_benchmark(args):
    extra = () if args.no_keras_applications else ("keras_applications",)
    pair = Pair(worker, (make_checkpoint(),), settle_s=args.settle_s, extra=extra)
    results = {"image": {}, "text_fixed_64": {}, "text_captions": {}}
    rng = np.random.default_rng(1)
    try:
        for batch in args.batches:
            pixels = rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(np.float32)
            results["image"][batch] = row = pair.compare("image", pixels, batch, args.repeats, extra=True)
            print(f"image batch {batch}: ratio {row['ratio']:.2f} ({row['reference_per_s']:.2f} -> "
                  f"{row['ours_per_s']:.2f} images/s)", flush=True)
            if extra:
                print(f"  keras.applications EfficientNetB7: ratio {row['keras_applications_ratio']:.2f} "
                      f"({row['keras_applications_per_s']:.2f} images/s)", flush=True)
            captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
            for kind, fixed in (("text_fixed_64", True), ("text_captions", False)):
                row = pair.compare("text", tokenize(captions, fixed), batch, args.repeats)
                results[kind][batch] = row
                print(f"{kind} batch {batch}: ratio {row['ratio']:.2f} ({row['reference_per_s']:.1f} -> "
                      f"{row['ours_per_s']:.1f} texts/s)", flush=True)
    finally:
        results["memory"] = pair.close()
    print(f"memory (MiB, whole worker process): {results['memory']}", flush=True)
    results["caption_median_tokens"] = float(np.median(tokenize(CAPTIONS, False)["attention_mask"].sum(1)))
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, kind, unit in zip(axes, ("image", "text_fixed_64", "text_captions"),
                              ("images/s", "texts/s", "texts/s")):
        batches = sorted(int(b) for b in results[kind])
        for who, label in (("reference_per_s", "transformers (PyTorch)"), ("ours_per_s", "align-tf (TF)")):
            ax.plot(batches, [results[kind][b][who] for b in batches], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(unit)
        ax.set_title(kind.replace("_", " "))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=289)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, 2 repeats")
    parser.add_argument("--no-keras-applications", action="store_true",
                        help="skip the keras.applications EfficientNetB7 yardstick (image tower)")
    add_settle_argument(parser)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "inference.json"))
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeats = [1, 8], 2
    results = run_benchmark(args)
    write_result(args.output, "inference", image_size=args.image_size, repeats=args.repeats,
                 settle_s=args.settle_s, results=results)
    plot(results, os.path.splitext(args.output)[0] + ".png")


if __name__ == "__main__":
    main()
