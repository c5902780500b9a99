"""Inference throughput and peak memory: align-tf (TensorFlow backend) against the reference
transformers AlignModel (PyTorch), same converted weights, same machine, same script.

Runs alternate between the two implementations; each figure is the median of --repeats runs.
Writes benchmarks/results/inference.json (and a throughput-vs-batch PNG).

    python benchmarks/bench_inference.py                 # align-base size, batches 1 8 32
    python benchmarks/bench_inference.py --quick         # batches 1 8, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from machine_info import machine_info  # noqa: E402

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


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def build_models(image_size):
    import torch
    import transformers

    from align_tf.configuration import AlignConfig
    from align_tf.models.align import AlignModel
    from support import randomize_reference, save_hf_checkpoint

    torch.manual_seed(0)
    reference = randomize_reference(transformers.AlignModel(
        transformers.AlignConfig.from_dict(AlignConfig().to_dict())), seed=0)
    folder = save_hf_checkpoint(reference, tempfile.mkdtemp(prefix="bench_align_"))
    ours = AlignModel.from_pretrained(folder)
    return reference, ours, folder


def tokenize(captions, fixed_64):
    import transformers

    from support import minilm_folder

    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_folder())
    if fixed_64:
        # 64 real tokens per row: nothing to trim, pure compute.
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, 30000, (len(captions), 64)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # The reference processor's default: padding="max_length", 64.
    batch = tokenizer(captions, padding="max_length", max_length=64, truncation=True, return_tensors="np")
    return {k: v.astype(np.int32) for k, v in batch.items()}


def run_throughput(args):
    import tensorflow as tf
    import torch

    torch.set_num_threads(os.cpu_count())
    reference, ours, _ = build_models(args.image_size)
    results = {"image": {}, "text_fixed_64": {}, "text_captions": {}}
    rng = np.random.default_rng(1)
    for batch in args.batches:
        pixels = rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(np.float32)
        torch_pixels = torch.tensor(pixels).permute(0, 3, 1, 2).contiguous()

        def ref_image():
            with torch.inference_mode():
                reference.get_image_features(pixel_values=torch_pixels)

        def our_image():
            np.asarray(ours.get_image_features(pixels))

        ref_image(), our_image()  # warm-up (and our one trace)
        ref_t, our_t = [], []
        for _ in range(args.repeats):
            ref_t.append(median_time(ref_image, 1))
            our_t.append(median_time(our_image, 1))
        r, o = float(np.median(ref_t)), float(np.median(our_t))
        results["image"][batch] = {"reference_per_s": batch / r, "ours_per_s": batch / o, "ratio": r / o}
        print(f"image batch {batch}: reference {batch / r:.2f}/s, ours {batch / o:.2f}/s, ratio {r / o:.2f}",
              flush=True)
        for kind, fixed in (("text_fixed_64", True), ("text_captions", False)):
            text_batch_size = max(batch, 1)
            captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(text_batch_size)]
            tokens = tokenize(captions, fixed)
            torch_tokens = {k: torch.tensor(v, dtype=torch.long) for k, v in tokens.items()}

            def ref_text():
                with torch.inference_mode():
                    reference.get_text_features(**torch_tokens)

            def our_text():
                np.asarray(ours.get_text_features(**tokens))

            ref_text(), our_text()
            ref_t, our_t = [], []
            for _ in range(args.repeats * 2):
                ref_t.append(median_time(ref_text, 1))
                our_t.append(median_time(our_text, 1))
            r, o = float(np.median(ref_t)), float(np.median(our_t))
            results[kind][batch] = {"reference_per_s": text_batch_size / r,
                                    "ours_per_s": text_batch_size / o, "ratio": r / o}
            print(f"{kind} batch {batch}: reference {text_batch_size / r:.1f}/s, "
                  f"ours {text_batch_size / o:.1f}/s, ratio {r / o:.2f}", flush=True)
    # Parity of what was timed, so a fast wrong path cannot pass unnoticed.
    pixels = rng.uniform(-1, 1, (2, args.image_size, args.image_size, 3)).astype(np.float32)
    with torch.inference_mode():
        ref = reference.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2)).pooler_output
    results["image_features_max_abs_diff"] = float(np.max(np.abs(np.asarray(ours.get_image_features(pixels)) - ref.numpy())))
    tokens = tokenize(CAPTIONS[:4], False)
    with torch.inference_mode():
        ref = reference.get_text_features(**{k: torch.tensor(v, dtype=torch.long) for k, v in tokens.items()}).pooler_output
    results["text_features_max_abs_diff"] = float(np.max(np.abs(np.asarray(ours.get_text_features(**tokens)) - ref.numpy())))
    results["caption_median_tokens"] = float(np.median(tokenize(CAPTIONS, False)["attention_mask"].sum(1)))
    results["tf_version"], results["torch_version"] = tf.__version__, torch.__version__
    return results


def peak_memory_child(which, image_size, batch):
    """Run in a fresh process: load one implementation, embed a batch, report peak RSS."""
    import torch

    reference, ours, _ = build_models(image_size)
    model = reference if which == "reference" else ours
    if which == "reference":
        del ours
    else:
        del reference
    import gc

    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels = np.random.default_rng(0).uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32)
    tokens = tokenize(CAPTIONS[:batch], False)
    if which == "reference":
        with torch.inference_mode():
            model.get_image_features(pixel_values=torch.tensor(pixels).permute(0, 3, 1, 2))
            model.get_text_features(**{k: torch.tensor(v, dtype=torch.long) for k, v in tokens.items()})
    else:
        np.asarray(model.get_image_features(pixels))
        np.asarray(model.get_text_features(**tokens))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": peak / 1024, "inference_increase_mib": (peak - base) / 1024}))


def run_memory(args):
    out = {}
    for which in ("reference", "ours"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--image-size", str(args.image_size)],
            capture_output=True, text=True, check=True)
        out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"peak memory {which}: {out[which]}", flush=True)
    # Both processes also hold the other framework's build-time copy; the inference increase is
    # the figure that compares the two inference paths.
    out["ratio_inference_increase"] = out["ours"]["inference_increase_mib"] / max(
        out["reference"]["inference_increase_mib"], 1e-9)
    return out


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
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "inference.json"))
    parser.add_argument("--memory-child", choices=["reference", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return peak_memory_child(args.memory_child, args.image_size, 8)
    if args.quick:
        args.batches, args.repeats = [1, 8], 2
    results = run_throughput(args)
    if not args.no_memory:
        results["peak_memory"] = run_memory(args)
    record = {"benchmark": "inference", "machine": machine_info(), "image_size": args.image_size,
              "repeats": args.repeats, "results": results,
              "command": "python benchmarks/bench_inference.py " + " ".join(sys.argv[1:])}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=2)
    plot(results, os.path.splitext(args.output)[0] + ".png")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
