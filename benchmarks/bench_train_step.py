"""One training step (forward, contrastive loss, backward, optimizer update): align-tf's
compiled `train_step` (AdamW) against transformers AlignModel + torch.optim.AdamW, same
starting weights, each in its own worker process, timed alternately (benchmarks/paired.py).
Writes benchmarks/results/train_step.json.

    python benchmarks/bench_train_step.py                     # small config and align-base
    python benchmarks/bench_train_step.py --sizes small       # small config only
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

SIZES = {
    # name: (config factory, image size, batch)
    "small": ("small_config", 96, 16),
    "align-base": ("base_config", 289, 4),
}


def small_config():
    from align_tf.configuration import AlignConfig, AlignTextConfig, AlignVisionConfig

    vision = AlignVisionConfig(width_coefficient=0.5, depth_coefficient=0.5, image_size=96)
    text = AlignTextConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=512)
    return AlignConfig(text_config=text, vision_config=vision, projection_dim=vision.output_channels)


def base_config():
    from align_tf.configuration import AlignConfig

    return AlignConfig()


def make_checkpoint(size) -> str:
    import torch
    import transformers

    from support import randomize_reference, save_hf_checkpoint

    config = globals()[SIZES[size][0]]()
    torch.manual_seed(0)
    reference = randomize_reference(transformers.AlignModel(
        transformers.AlignConfig.from_dict(config.to_dict())), seed=0, temperature=1.0)
    return save_hf_checkpoint(reference, tempfile.mkdtemp(prefix=f"bench_train_{size}_"))


def make_batch(size):
    _, image_size, batch = SIZES[size]
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (batch, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[batch // 2:, 10:] = 0
    return {"pixel_values": rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32),
            "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def worker(which, folder, conn):
    def setup():
        if which == "reference":
            import torch
            import transformers

            mark_imported()
            torch.set_num_threads(os.cpu_count())
            model = transformers.AlignModel.from_pretrained(folder).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-5)

            def step(batch):
                inputs = {k: torch.from_numpy(v).long() for k, v in batch.items() if k != "pixel_values"}
                inputs["pixel_values"] = torch.from_numpy(batch["pixel_values"]).permute(0, 3, 1, 2).contiguous()
                loss = model(**inputs, return_loss=True).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return None
        else:
            import keras

            from align_tf.models.align import AlignModel

            mark_imported()
            model = AlignModel.from_pretrained(folder)
            model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-5, weight_decay=1e-5))

            def step(batch):
                model.train_on_batch(batch)
                return None
        return {"step": step}

    serve(conn, setup)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    add_settle_argument(parser)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "train_step.json"))
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        pair = Pair(worker, (make_checkpoint(size),), settle_s=args.settle_s)
        try:
            batch = make_batch(size)
            n = batch["input_ids"].shape[0]
            row = pair.compare("step", batch, n, args.repeats)
        finally:
            row_memory = pair.close()
        row["memory"] = row_memory
        row["image_size"], row["batch"] = SIZES[size][1], n
        results[size] = row
        print(f"{size}: ratio {row['ratio']:.2f} ({row['reference_per_s']:.2f} -> "
              f"{row['ours_per_s']:.2f} examples/s)", flush=True)
    write_result(args.output, "train_step", repeats=args.repeats, settle_s=args.settle_s, results=results)


if __name__ == "__main__":
    main()
