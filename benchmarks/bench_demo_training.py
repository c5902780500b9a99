"""The demo task end to end: run the documented `align-tf train` command for the shapes x colours
model from scratch on this machine's CPU, time it (the whole command: start-up, data generation,
tracing, training, saving), then classify freshly generated held-out images zero-shot over all
24 classes. Writes benchmarks/results/demo_training.json.

    python benchmarks/bench_demo_training.py                      # the documented command
    python benchmarks/bench_demo_training.py --output runs/demo   # keep the model there
    python benchmarks/bench_demo_training.py --digits             # also the digits run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]

from machine_info import machine_info  # noqa: E402

HELDOUT_SEED = 20240611  # never used for training data
HELDOUT_PER_CLASS = 40


def run_command(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "align_tf.cli", *args], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def heldout_accuracy(folder: str, task: str) -> dict:
    """Zero-shot top-1 on fresh images (demo) or the digits test split, per class too."""
    import numpy as np

    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor
    from align_tf.training.heldout import zero_shot_accuracy
    from align_tf.training.inputs import PairData, demo_pairs, digits_pairs

    model, processor = AlignModel.from_pretrained(folder), AlignProcessor.from_pretrained(folder)
    size = processor.image_processor.output_size[0]
    if task == "demo":
        data = demo_pairs(24 * HELDOUT_PER_CLASS, seed=HELDOUT_SEED, image_size=size)
    else:
        data = digits_pairs("test", image_size=size)
    per_class = {}
    for name in data.class_names:
        rows = [i for i, label in enumerate(data.labels) if label == name]
        subset = PairData(data.images[rows], [data.captions[i] for i in rows],
                          [data.labels[i] for i in rows], data.class_names)
        per_class[name] = round(zero_shot_accuracy(model, processor, subset), 4)
    counts = {name: data.labels.count(name) for name in data.class_names}
    overall = sum(per_class[n] * counts[n] for n in per_class) / sum(counts.values())
    return {"top1": round(float(overall), 4), "images": len(data), "classes": len(data.class_names),
            "chance": round(1 / len(data.class_names), 4), "per_class_top1": per_class,
            "weights_mb": round(os.path.getsize(os.path.join(folder, "model.weights.h5")) / 2**20, 2),
            "parameters": int(sum(np.prod(w.shape) for w in model.weights))}


def main() -> None:
    from align_tf.assets import DEMO_TRAIN_COMMAND
    from align_tf.training.recipe import DIGITS_TRAIN_COMMAND

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="where the trained demo model goes "
                        "(default: a temporary folder)")
    parser.add_argument("--digits", action="store_true", help="also run the digits command")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "demo_training.json"))
    args = parser.parse_args()

    results = {"machine": machine_info(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task, command in (("demo", DEMO_TRAIN_COMMAND), ("digits", DIGITS_TRAIN_COMMAND)):
            if task == "digits" and not args.digits:
                continue
            argv = shlex.split(command)[1:]
            output = args.output if (task == "demo" and args.output) else os.path.join(tmp, task)
            argv[argv.index("--output") + 1] = output
            if "--logdir" in argv:
                argv[argv.index("--logdir") + 1] = os.path.join(tmp, f"{task}-logs")
            load_before = os.getloadavg()
            seconds = run_command(argv)
            load_after = os.getloadavg()
            with open(os.path.join(output, "training_summary.json")) as f:
                summary = json.load(f)["summary"]
            results["runs"][task] = {
                "command": command, "wall_seconds": round(seconds, 1),
                # The 2 cores are shared with other jobs: the load says how busy they were.
                "load_average_1_5_15_before": [round(x, 2) for x in load_before],
                "load_average_1_5_15_after": [round(x, 2) for x in load_after],
                "train_seconds": summary["seconds"], "steps": summary["steps"],
                "examples_per_second": summary["examples_per_second"],
                "final_loss": summary["final_loss"], "final_temperature": summary["final_temperature"],
                "heldout": heldout_accuracy(output, task)}
            print(json.dumps({task: {k: v for k, v in results["runs"][task].items()
                                     if k != "heldout"} | {"top1": results["runs"][task]["heldout"]["top1"]}},
                             indent=1))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
