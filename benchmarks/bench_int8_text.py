"""Does int8 pay for the text tower's dense layers on this CPU? Two ways TensorFlow / Keras
offer, each against float32 in the same process, alternating (align-base size, random weights):

1. Keras's own: `text_model.quantize("int8")` (int8 weights, activations quantized per call),
   run through the Keras layers' graph, against our float32 frozen text graph: texts/s at
   batch 1 and 8 (64 tokens) and the cosine of the text features with float32's.
2. TensorFlow's `QuantizedMatMul` kernel (the int8 GEMM TF ships for CPUs) against `MatMul` on
   one feed-forward matmul of a batch of 8 x 64 tokens, [512, 768] x [768, 3072].

Writes benchmarks/results/int8_text.json.

    python benchmarks/bench_int8_text.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from machine_info import write_result  # noqa: E402


def alternate(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        fn(), fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def cosines(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def keras_int8(repeats: int) -> dict:
    import keras

    from align_tf.configuration import AlignConfig
    from align_tf.models.align import AlignModel

    keras.utils.set_random_seed(0)
    full = AlignModel(AlignConfig())
    full.build()
    quantized = AlignModel(AlignConfig())
    quantized.build()
    quantized.set_weights(full.get_weights())
    quantized.text_model.quantize("int8")
    quantized.text_projection.quantize("int8")
    quantized.frozen_inference = False  # Keras's int8 layers run in the Keras graph only
    rng = np.random.default_rng(0)
    results = {}
    for batch in (1, 8):
        ids = rng.integers(1000, 30000, (batch, 64)).astype(np.int32)
        tokens = dict(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
        cosine = cosines(full.get_text_features(**tokens), quantized.get_text_features(**tokens))
        seconds = alternate({"float32 frozen": lambda: np.asarray(full.get_text_features(**tokens)),
                             "keras int8": lambda: np.asarray(quantized.get_text_features(**tokens))},
                            repeats)
        results[f"batch {batch}"] = {
            "texts_per_s": {name: batch / s for name, s in seconds.items()},
            "int8_over_float32_speed": seconds["float32 frozen"] / seconds["keras int8"],
            "min_cosine": float(cosine.min())}
        print(f"keras int8, batch {batch}: {results[f'batch {batch}']}", flush=True)
    return results


def tf_quantized_matmul(repeats: int) -> dict:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(512, 768)).astype(np.float32))
    w = (rng.normal(size=(768, 3072)) * 0.03).astype(np.float32)
    bound = float(np.abs(w).max())
    # quint8 x quint8 -> qint32: the only type pair TF's CPU QuantizedMatMul kernel registers.
    wq = tf.quantization.quantize(tf.constant(w), -bound, bound, tf.quint8, mode="MIN_FIRST")

    @tf.function
    def float32(x):
        return tf.matmul(x, w)

    @tf.function
    def int8(x):
        xq = tf.quantization.quantize(x, tf.reduce_min(x), tf.reduce_max(x), tf.quint8, mode="MIN_FIRST")
        out, low, high = tf.raw_ops.QuantizedMatMul(
            a=xq.output, b=wq.output, min_a=xq.output_min, max_a=xq.output_max,
            min_b=wq.output_min, max_b=wq.output_max, Toutput=tf.qint32)
        return tf.quantization.dequantize(out, low, high, mode="MIN_FIRST")

    a, b = float32(x).numpy(), int8(x).numpy()
    seconds = alternate({"MatMul float32": lambda: float32(x).numpy(),
                         "QuantizedMatMul": lambda: int8(x).numpy()}, repeats)
    result = {"ms": {name: s * 1e3 for name, s in seconds.items()},
              "int8_over_float32_speed": seconds["MatMul float32"] / seconds["QuantizedMatMul"],
              "cosine": float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))}
    print(f"QuantizedMatMul: {result}", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "int8_text.json"))
    args = parser.parse_args()
    write_result(args.output, "int8_text_tower", repeats=args.repeats,
                 keras_quantize_int8=keras_int8(args.repeats),
                 tf_quantized_matmul=tf_quantized_matmul(args.repeats * 3))


if __name__ == "__main__":
    main()
