"""Exported SavedModel signatures against in-process Keras inference, same weights, same
process, alternating runs (align-base size, random weights). Writes
benchmarks/results/export.json.

    python benchmarks/bench_export.py [--batch 1 8] [--repeats 5]

Both sides run the frozen inference graphs (align_tf/models/frozen.py); in process under oneDNN
the depthwise convs are grouped Conv2Ds, in the SavedModel DepthwiseConv2dNative (portable).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from machine_info import write_result  # noqa: E402


def alternate(a, b, repeats):
    a(), b()  # warm-up
    times = {"a": [], "b": []}
    for _ in range(repeats):
        for name, fn in (("a", a), ("b", b)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return float(np.median(times["a"])), float(np.median(times["b"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "export.json"))
    args = parser.parse_args()

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    from align_tf.configuration import AlignConfig
    from align_tf.export import export_saved_model
    from align_tf.models.align import AlignModel
    from align_tf.training.recipe import make_processor

    model = AlignModel(AlignConfig())
    model.build()
    processor = make_processor()
    path = export_saved_model(model, processor, tempfile.mkdtemp(prefix="bench_export_"), warmup=False)
    loaded = tf.saved_model.load(path)
    results = {}
    for batch in args.batch:
        results[f"batch {batch}"] = compare(model, processor, loaded, batch, args.repeats)
    write_result(args.output, "export_vs_keras", batch=args.batch, repeats=args.repeats, results=results)


def compare(model, processor, loaded, batch, repeats):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.uniform(-1, 1, (batch, 289, 289, 3)).astype(np.float32)
    texts = ["a photo of two cats sleeping on a pink blanket"] * batch
    tokens = {k: tf.constant(v) for k, v in processor.tokenizer(texts).items()}
    results = {}

    def norm(x):
        x = np.asarray(x)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    cases = {
        "embed_pixels": (lambda: norm(model.get_image_features(pixels)),
                         lambda: loaded.signatures["embed_pixels"](pixel_values=tf.constant(pixels))["image_embeds"].numpy()),
        "embed_tokens": (lambda: norm(model.get_text_features(**tokens)),
                         lambda: loaded.signatures["embed_tokens"](**tokens)["text_embeds"].numpy()),
        "embed_text (strings, tokenized in-graph) vs get_text_features on tokens": (
            lambda: norm(model.get_text_features(**processor.tokenizer(texts))),
            lambda: loaded.signatures["embed_text"](text=tf.constant(texts))["text_embeds"].numpy()),
    }
    for name, (in_process, exported) in cases.items():
        diff = float(np.max(np.abs(in_process() - exported())))
        keras_s, export_s = alternate(in_process, exported, repeats)
        results[name] = {"keras_s": keras_s, "export_s": export_s,
                         "export_over_keras": export_s / keras_s, "max_abs_diff": diff}
        print(f"batch {batch}, {name}: exported / in-process time = {export_s / keras_s:.3f} "
              f"(diff {diff:.1e})", flush=True)
    return results


if __name__ == "__main__":
    main()
