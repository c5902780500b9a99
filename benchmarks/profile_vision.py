"""Where the image tower's time goes on this CPU: per-op-type time from TensorFlow's step
statistics (the same data the TensorBoard trace viewer shows), for the folded and unfolded
BatchNorm paths. Writes benchmarks/results/profile_vision.json.

    python benchmarks/profile_vision.py --batch 8
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from machine_info import write_result  # noqa: E402


def op_profile(model, pixels, fold, runs=2):
    import tensorflow as tf

    # Static height / width, as align_tf.models.compiled traces it (implicit stride-2 padding).
    fn = tf.function(lambda x: model(x, fold_batch_norm=fold)["pooler_output"],
                     input_signature=[tf.TensorSpec([None, *pixels.shape[1:]], tf.float32)])
    # Freeze the variables and run the graph in a v1 session, where FULL_TRACE step stats
    # exist; grappler (constant folding, oneDNN remapper fusions) runs as for tf.function.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(frozen.graph.as_graph_def(), name="")
    session = tf.compat.v1.Session(graph=graph)
    feed = {frozen.inputs[0].name: pixels}
    output = frozen.outputs[0].name
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    totals = collections.Counter()
    wall = []
    for _ in range(runs):
        metadata = tf.compat.v1.RunMetadata()
        start = time.perf_counter()
        session.run(output, feed_dict=feed, options=options, run_metadata=metadata)
        wall.append(time.perf_counter() - start)
        run_totals = collections.Counter()
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                label = node.timeline_label or node.node_name
                op = label.split("= ")[-1].split("(")[0] if "= " in label else node.node_name.split(":")[0]
                run_totals[op] += node.all_end_rel_micros
        totals = run_totals
    total = sum(totals.values())
    top = [{"op": op, "ms": us / 1000, "share": us / total} for op, us in totals.most_common(15)]
    return {"wall_s": float(np.median(wall)), "op_time_ms": total / 1000, "top_ops": top}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=289)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "profile_vision.json"))
    args = parser.parse_args()

    from align_tf.configuration import AlignVisionConfig
    from align_tf.models.efficientnet import AlignVisionModel

    model = AlignVisionModel(AlignVisionConfig())
    model.build()
    pixels = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.image_size, args.image_size, 3)).astype(np.float32)
    record = {"batch": args.batch, "image_size": args.image_size}
    for fold in (False, True):
        result = op_profile(model, pixels, fold)
        record["folded" if fold else "unfolded"] = result
        print(f"fold_batch_norm={fold}: wall {result['wall_s']:.2f}s")
        for row in result["top_ops"][:10]:
            print(f"  {row['op']:<40} {row['ms']:9.1f} ms  {100 * row['share']:5.1f}%")
    write_result(args.output, "profile_vision", **record)


if __name__ == "__main__":
    main()
