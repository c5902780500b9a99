"""ALIGN inference on CPU across runtimes: ours against PyTorch eager, ONNX Runtime and OpenVINO.

What a user who wants ALIGN fast on CPUs would try, side by side on the same weights and inputs:

  pytorch                  Hugging Face transformers AlignModel, PyTorch eager (the reference)
  onnxruntime              the reference exported to ONNX (torch.onnx.export, one file per
                           tower), ONNX Runtime, GraphOptimizationLevel.ORT_ENABLE_ALL,
                           intra-op threads = --threads (default: all cores)
  openvino_f32_latency     the same ONNX files in OpenVINO, INFERENCE_PRECISION_HINT f32,
                           PERFORMANCE_HINT LATENCY, one synchronous request
  openvino_f32_throughput  ... PERFORMANCE_HINT THROUGHPUT: the batch split over the compiled
                           model's optimal number of requests, run as an AsyncInferQueue
  openvino_default         OpenVINO with no settings: its default precision (bf16 on CPUs
                           with AVX512_BF16 or AMX, else f32) and hint (LATENCY)
  ours_<precision>         align_tf AlignModel.from_pretrained(checkpoint, dtype=<precision>),
                           timed through get_image_features / get_text_features; one engine
                           per --precisions entry

Model: align-base size (align_tf/presets/align-base/config.json) with random weights, the image
tower's convolutions fan-in scaled and its BatchNorm statistics measured on random images
(tests/support.py fan_in_vision_weights: otherwise the features barely depend on the image),
saved once as an HF checkpoint; ours converts it on load, the ONNX files are exported from it.
The reference's image pooler, AvgPool2d(kernel=hidden_dim, ceil_mode=True), is a global mean
that OpenVINO's converter refuses; the export swaps in AdaptiveAvgPool2d(1) after checking both
give the same features. Image features = the vision model's pooled output; text features =
text_projection of the [CLS] state (the reference's get_image_features / get_text_features).

Workloads: image tower at --image-size (289) and text tower at --seq-len (64) real tokens (no
padding), each at --batches (1 8). Image inputs are NHWC float32 for every engine; those taking
NCHW transpose inside the timed call, and int64 token ids are cast there too.

How it runs: the checkpoint and the ONNX export are made in a worker process of their own, then
for each tower every engine gets its own worker process (benchmarks/paired.py) that loads its
model once and runs every batch. Per batch: one warm-up call per engine whose outputs are
checked first (every float32 engine against PyTorch: max |diff| relative to max |reference|
must stay under --f32-rtol, else the run stops; reduced precision engines: cosine against
PyTorch float32 and ours float32 recorded), then --repeats rounds that run every engine once,
in turn, each call after --settle-s of idle time. Reported per engine: items/s from the median,
ratios to every other engine, CPU use (the worker's CPU time over the call's wall time, all its
threads: 2.0 = two cores busy), peak RSS (VmHWM) of the worker.

Agreement on random weights: 55 random MBConv blocks amplify rounding, so the image tower's
float32 engines differ from PyTorch by ~3e-5 of max |feature| (the text tower: ~1e-6), and
bf16 engines reach cosines of only ~0.91-0.98 there (OpenVINO's bf16 and ours alike; the text
tower: 0.9999). Those cosines compare engines with each other on this network; whether a
precision keeps a trained model's answers is for trained weights (the demo set) to say.

Writes benchmarks/results/runtimes.json (--output), a PNG next to it, and prints the tables.

    python benchmarks/bench_runtimes.py                       # the full run: quiet machine
    python benchmarks/bench_runtimes.py --quick               # 2 repeats, for development
    python benchmarks/bench_runtimes.py --quick --towers text --batches 1 --engines pytorch ours
    python benchmarks/bench_runtimes.py --precisions float32 mixed_bfloat16 bfloat16
    python benchmarks/bench_runtimes.py --workdir /tmp/rt     # keep checkpoint + ONNX for next time

Needs the `bench` extra (onnx, onnxruntime, openvino) and the dev one (torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from bench_inference import make_checkpoint, ours_jobs, reference_jobs, tokenize  # noqa: E402
from machine_info import cpu_flags, write_result  # noqa: E402
from paired import Workers, add_settle_argument, mark_imported, serve  # noqa: E402

ANCHORS = ("pytorch", "onnxruntime", "openvino_f32_latency", "openvino_f32_throughput", "openvino_default")
ENGINE_CHOICES = ANCHORS + ("ours",)
OURS = "ours_"
FLOAT32 = ("float32", "f32")
TOWERS = {"image": "img/s", "text": "texts/s"}
OUTPUT_NAMES = {"image": "image_features", "text": "text_features"}
TOKEN_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPENVINO_CONFIGS = {
    "openvino_f32_latency": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
    "openvino_f32_throughput": {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"},
    "openvino_default": {},
}
# Bump when the checkpoint recipe or the export changes: a --workdir made before is rebuilt.
RECIPE = "align-base; randomize_reference + randomize_affine seed 0; fan_in_vision_weights seed 0; onnx dynamo=False v2"


class AgreementError(RuntimeError):
    """A float32 engine's features differ from PyTorch's by more than --f32-rtol."""


# -- preparation: checkpoint + ONNX export, in a worker of its own (memory) -------------------
def _reference_towers(folder):
    """The reference loaded from `folder`, with the tower modules that the ONNX files hold."""
    import torch
    import transformers

    model = transformers.AlignModel.from_pretrained(folder).eval()

    class ImageFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    class TextFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                                token_type_ids=token_type_ids).pooler_output

    # eval() on the wrappers too: torch.onnx.export restores the wrapper's training flag
    # afterwards, recursively, which would put the model in training mode (dropout on).
    return model, ImageFeatures().eval(), TextFeatures().eval()


def prepare(workdir: str, image_size: int, tiny: bool = False) -> dict:
    """Checkpoint and ONNX files in `workdir`, reused when `prepared.json` says they were made
    by the same recipe at the same image size."""
    marker = os.path.join(workdir, "prepared.json")
    key = {"recipe": RECIPE, "image_size": image_size, "tiny": tiny}
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done.get("key") == key and all(os.path.exists(p) for p in done["paths"].values()):
            return {**done, "cached": True}
    import torch

    start = time.perf_counter()
    paths = {"checkpoint": os.path.join(workdir, "checkpoint"),
             "image": os.path.join(workdir, f"image_features_{image_size}.onnx"),
             "text": os.path.join(workdir, "text_features.onnx")}
    if tiny:
        from support import tiny_align_config

        config = tiny_align_config()
    else:
        from align_tf.presets import get_preset

        config = get_preset("align-base").config()
    make_checkpoint(paths["checkpoint"], image_size, config)
    checkpoint_s = time.perf_counter() - start
    model, image_features, text_features = _reference_towers(paths["checkpoint"])

    # The pooler swap: the same global mean, so the same features (checked, not assumed).
    pixels = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (2, 3, image_size, image_size))
                              .astype(np.float32))
    with torch.inference_mode():
        before = image_features(pixels).numpy()
        original = model.vision_model.pooler
        model.vision_model.pooler = torch.nn.AdaptiveAvgPool2d(1)
        after = image_features(pixels).numpy()
    pooler = {"replaced": repr(original), "by": "AdaptiveAvgPool2d(1)",
              "max_abs_diff": float(np.max(np.abs(before - after))),
              "max_abs_features": float(np.max(np.abs(before)))}
    if not pooler["max_abs_diff"] <= 1e-6 * pooler["max_abs_features"]:
        raise AgreementError(f"AdaptiveAvgPool2d(1) does not reproduce the reference's pooler: {pooler}")

    start = time.perf_counter()
    torch.onnx.export(image_features, (pixels[:1],), paths["image"], dynamo=False,
                      input_names=["pixel_values"], output_names=[OUTPUT_NAMES["image"]],
                      dynamic_axes={"pixel_values": {0: "batch"}, OUTPUT_NAMES["image"]: {0: "batch"}})
    vocab_size = config.text_config.vocab_size
    ids = torch.from_numpy(tokenize([None] * 2, True, 16, vocab_size)["input_ids"]).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in TOKEN_NAMES}
    torch.onnx.export(text_features, (ids, torch.ones_like(ids), torch.zeros_like(ids)), paths["text"],
                      dynamo=False, input_names=list(TOKEN_NAMES), output_names=[OUTPUT_NAMES["text"]],
                      dynamic_axes={**axes, OUTPUT_NAMES["text"]: {0: "batch"}})
    import onnx

    opsets = {}
    for tower in TOWERS:
        onnx.checker.check_model(paths[tower])
        graph = onnx.load(paths[tower], load_external_data=False)
        opsets[tower] = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    done = {"key": key, "paths": paths, "vocab_size": vocab_size, "pooler_check": pooler,
            "checkpoint_s": checkpoint_s,
            "export_s": time.perf_counter() - start, "exporter": "torch.onnx.export(dynamo=False)",
            "opsets": opsets, "onnx_mib": {t: os.path.getsize(paths[t]) / 2**20 for t in TOWERS}}
    with open(marker, "w") as f:
        json.dump(done, f, indent=2)
    return {**done, "cached": False}


def prepare_worker(which, workdir, image_size, tiny, conn):
    serve(conn, lambda: {"prepare": lambda _: prepare(workdir, image_size, tiny)})


# -- engines ----------------------------------------------------------------------------------
def _nchw(pixels):
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


def _onnx_feeds(tower, data):
    if tower == "image":
        return {"pixel_values": _nchw(data)}
    return {name: data[name].astype(np.int64) for name in TOKEN_NAMES}


def onnxruntime_jobs(tower, settings):
    import onnxruntime as ort

    mark_imported()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings["threads"]
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(settings["paths"][tower], options, providers=["CPUExecutionProvider"])

    def features(data):
        return session.run(None, _onnx_feeds(tower, data))[0]

    def info(_):
        return {"precision": "float32", "onnxruntime": ort.__version__, "providers": session.get_providers(),
                "graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_threads": settings["threads"],
                "inter_op_threads": 1}

    return {"features": features, "info": info}


def openvino_jobs(engine, tower, settings):
    import openvino as ov

    mark_imported()
    core = ov.Core()
    model = core.read_model(settings["paths"][tower])
    if tower == "text":  # batch stays dynamic; the sequence length is the workload's
        model.reshape({name: ov.PartialShape([-1, settings["seq_len"]]) for name in TOKEN_NAMES})
    compiled = core.compile_model(model, "CPU", OPENVINO_CONFIGS[engine])
    output = compiled.output(0)
    if str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT"):
        # As a throughput user runs it: the batch split over parallel requests (streams).
        requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = ov.AsyncInferQueue(compiled, requests)
        parts = {}
        queue.set_callback(lambda request, i: parts.__setitem__(i, request.get_tensor(output).data.copy()))

        def run(feeds):
            parts.clear()
            n = len(next(iter(feeds.values())))
            bounds = np.linspace(0, n, min(requests, n) + 1).astype(int)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                queue.start_async({k: v[a:b] for k, v in feeds.items()}, i)
            queue.wait_all()
            return np.concatenate([parts[i] for i in range(len(bounds) - 1)])
    else:
        requests = 1
        request = compiled.create_infer_request()

        def run(feeds):
            return request.infer(feeds)[output].copy()

    def features(data):
        return run(_onnx_feeds(tower, data))

    def info(_):
        prop = compiled.get_property
        precision = prop("INFERENCE_PRECISION_HINT")  # an ov.Type: "f32", "bf16", "f16"
        return {"precision": getattr(precision, "get_type_name", lambda: str(precision))(),
                "config": OPENVINO_CONFIGS[engine],
                "performance_hint": str(prop("PERFORMANCE_HINT")), "num_streams": str(prop("NUM_STREAMS")),
                "inference_num_threads": int(prop("INFERENCE_NUM_THREADS")),
                "infer_requests": requests,  # a call splits its batch over up to this many
                "input_shapes": [str(i.get_partial_shape()) for i in compiled.inputs],
                "openvino": ov.get_version()}

    return {"features": features, "info": info}


def engine_jobs(engine, tower, settings):
    folder = settings["paths"]["checkpoint"]
    if engine == "pytorch":
        jobs = reference_jobs(folder, settings["threads"])
        info = jobs["info"]
        return {"features": jobs[tower], "info": lambda _: {"precision": "float32", **info(None)}}
    if engine.startswith(OURS):
        precision = engine[len(OURS):]
        jobs = ours_jobs(folder, dtype=precision)
        info = jobs["info"]
        return {"features": lambda data: jobs[tower](data).astype(np.float32, copy=False),
                "info": lambda _: {"precision": precision, **info(None)}}
    if engine == "onnxruntime":
        return onnxruntime_jobs(tower, settings)
    return openvino_jobs(engine, tower, settings)


def engine_worker(engine, tower, settings, conn):
    def setup():
        start = time.perf_counter()
        jobs = engine_jobs(engine, tower, settings)
        load_s = time.perf_counter() - start
        info = jobs["info"]
        jobs["info"] = lambda data: {**info(data), "load_s": load_s}
        return jobs

    serve(conn, setup)


# -- agreement --------------------------------------------------------------------------------
def _cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def agreement(outputs, precisions, f32_rtol) -> dict:
    """Every engine's warm-up features against PyTorch's (and ours float32's). Raises
    AgreementError when a float32 engine is off by more than `f32_rtol` of max |reference|,
    or any engine gives a non-finite value."""
    reference = np.asarray(outputs["pytorch"], np.float64)
    scale = float(np.max(np.abs(reference)))
    ours32 = outputs.get(OURS + "float32")
    report, failures = {}, []
    for engine, out in outputs.items():
        out = np.asarray(out, np.float64)
        if out.shape != reference.shape or not np.all(np.isfinite(out)):
            failures.append(f"{engine}: shape {out.shape} (reference {reference.shape}), "
                            f"finite: {bool(np.all(np.isfinite(out)))}")
            continue
        diff = float(np.max(np.abs(out - reference)))
        row = {"precision": precisions[engine], "max_abs_diff": diff, "max_rel_diff": diff / scale,
               "min_cosine": float(np.min(_cosines(out, reference)))}
        if ours32 is not None and engine != OURS + "float32":
            row["min_cosine_vs_ours_float32"] = float(np.min(_cosines(out, np.asarray(ours32))))
        if precisions[engine] in FLOAT32 and not row["max_rel_diff"] <= f32_rtol:
            failures.append(f"{engine}: max |diff| {diff:.3g} = {diff / scale:.3g} of max |reference| "
                            f"(> {f32_rtol:g}), min cosine {row['min_cosine']:.8f}")
        report[engine] = row
    if failures:
        raise AgreementError("features disagree with PyTorch float32:\n  " + "\n  ".join(failures))
    if len(reference) > 1:
        # How much the features depend on the input: a check on near-constant features is void.
        report["reference_spread"] = float(np.max(np.abs(reference - reference[:1])) / scale)
    return report


# -- the driver -------------------------------------------------------------------------------
def make_inputs(tower, batch, args, vocab_size):
    if tower == "image":
        rng = np.random.default_rng(batch)
        return rng.uniform(-1, 1, (batch, args.image_size, args.image_size, 3)).astype(np.float32)
    return tokenize([None] * batch, True, args.seq_len, vocab_size)  # seq_len real tokens per row, int32


def run_tower(tower, engines, settings, args, log) -> dict:
    results = {"batches": {}}
    with Workers(engine_worker, engines, (tower, settings), settle_s=args.settle_s) as workers:
        info = {e: workers.run(e, "info", None)["output"] for e in engines}
        log(f"{tower}: {len(engines)} workers loaded; " + ", ".join(
            f"{e} {info[e]['precision']} {info[e]['load_s']:.1f}s" for e in engines))
        precisions = {e: info[e]["precision"] for e in engines}
        for batch in args.batches:
            data = make_inputs(tower, batch, args, settings["vocab_size"])
            checked = {}

            def check(outputs):  # the warm-up's features, before anything is timed
                checked.update(agreement(outputs, precisions, args.f32_rtol))

            timed = workers.alternate("features", data, args.repeats, engines, rotate=True, check=check)
            row = {}
            for e in engines:
                seconds, cpu = timed["seconds"][e], timed["cpu_s"][e]
                median = float(np.median(seconds))
                # best_per_s (fastest run) is less sensitive to other work on the machine.
                row[e] = {"per_s": batch / median, "best_per_s": batch / min(seconds), "median_s": median,
                          "seconds": seconds, "cpu_s": cpu,
                          "cpu_use": float(np.median(np.divide(cpu, seconds))),
                          "precision": precisions[e], "agreement": checked[e]}
            for e in engines:
                row[e]["ratio_to"] = {o: row[e]["per_s"] / row[o]["per_s"] for o in engines if o != e}
            results["batches"][batch] = {"engines": row, "reference_spread": checked.get("reference_spread")}
            log(f"{tower} b{batch}: " + ", ".join(f"{e} {row[e]['per_s']:.2f}" for e in engines)
                + f" {TOWERS[tower]}")
        results["peak_rss_mib"] = workers.close()
    results["loaded_rss_mib"], results["imported_rss_mib"] = workers.loaded, workers.imported
    results["workers"] = info
    return results


def tables(record) -> str:
    """Markdown tables: throughput, ratios of ours to each anchor, CPU use, agreement, memory."""
    results, engines = record["results"], record["settings"]["engines"]
    columns = [(t, b) for t in results for b in results[t]["batches"]]

    def table(title, cell, rows):
        head = f"| {title} | " + " | ".join(f"{t} b{b}" for t, b in columns) + " |"
        lines = [head, "|---" * (len(columns) + 1) + "|"]
        for r in rows:
            lines.append(f"| {r} | " + " | ".join(cell(r, t, b) for t, b in columns) + " |")
        return "\n".join(lines)

    def get(e, t, b):
        return results[t]["batches"][b]["engines"][e]

    out = [table("items/s (" + ", ".join(f"{t}: {u}" for t, u in TOWERS.items() if t in results) + ")",
                 lambda e, t, b: f"{get(e, t, b)['per_s']:.2f}", engines)]
    for ours in [e for e in engines if e.startswith(OURS)]:
        out.append(table(f"{ours} / engine", lambda a, t, b, o=ours: f"{get(o, t, b)['ratio_to'][a]:.2f}x",
                         [e for e in engines if e != ours]))
    out.append(table("CPU use (cores busy)", lambda e, t, b: f"{get(e, t, b)['cpu_use']:.2f}", engines))
    out.append(table("vs PyTorch f32: max rel diff / min cosine",
                     lambda e, t, b: f"{get(e, t, b)['agreement']['max_rel_diff']:.1e} / "
                                     f"{get(e, t, b)['agreement']['min_cosine']:.6f}", engines))
    reduced = [e for e in engines if get(e, *columns[0])["precision"] not in FLOAT32]
    if reduced and OURS + "float32" in engines:
        out.append(table("min cosine vs ours_float32", lambda e, t, b: "{:.6f}".format(
            get(e, t, b)["agreement"]["min_cosine_vs_ours_float32"]), reduced))
    mem = "| peak RSS MiB | " + " | ".join(results) + " |\n" + "|---" * (len(results) + 1) + "|\n"
    mem += "\n".join(f"| {e} | " + " | ".join(f"{results[t]['peak_rss_mib'][e]:.0f}" for t in results) + " |"
                     for e in engines)
    out.append(mem)
    return "\n\n".join(out)


def plot(record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, engines = record["results"], record["settings"]["engines"]
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 0.55 * len(engines) + 1.6),
                             squeeze=False)
    for ax, tower in zip(axes[0], results):
        batches = list(results[tower]["batches"])
        height = 0.8 / len(batches)
        y = np.arange(len(engines))
        for i, b in enumerate(batches):
            values = [results[tower]["batches"][b]["engines"][e]["per_s"] for e in engines]
            bars = ax.barh(y + i * height, values, height, label=f"batch {b}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
            top = max(top, *values) if i else max(values)
        ax.set_yticks(y + height * (len(batches) - 1) / 2, engines)
        ax.invert_yaxis()
        ax.set_xlabel(TOWERS[tower])
        ax.set_title(f"{tower} tower" + (f" {record['settings']['image_size']}px" if tower == "image"
                                         else f" {record['settings']['seq_len']} tokens"))
        ax.set_xlim(0, top * 1.2)  # room for the labels
        ax.legend(fontsize=8, loc="upper right")
    cpu = record["machine"]["cpu"] if "machine" in record else ""
    fig.suptitle(f"ALIGN inference on CPU ({cpu}, {os.cpu_count()} cores), "
                 f"median of {record['settings']['repeats']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        help="ours: one engine per value, AlignModel.from_pretrained(..., dtype=VALUE) "
                             "(default: float32 mixed_bfloat16)")
    parser.add_argument("--engines", nargs="+", choices=ENGINE_CHOICES, default=list(ENGINE_CHOICES),
                        help="engines to run (default: all; 'ours' = one per --precisions; pytorch "
                             "always runs, it is the reference for the agreement check)")
    parser.add_argument("--towers", nargs="+", choices=list(TOWERS), default=list(TOWERS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per workload (median)")
    parser.add_argument("--quick", action="store_true", help="2 repeats (development; numbers are noisy)")
    parser.add_argument("--image-size", type=int, default=None, help="default 289 (--tiny: 64)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per text, all real (no padding); default 64 (--tiny: 16)")
    parser.add_argument("--tiny", action="store_true",
                        help="the tests' tiny config instead of align-base: checks the script, "
                             "times nothing useful")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="PyTorch and ONNX Runtime intra-op threads (default: all cores); "
                             "OpenVINO and ours use their own defaults")
    parser.add_argument("--f32-rtol", type=float, default=1e-4,
                        help="float32 engines: max |diff| to PyTorch / max |PyTorch| allowed (else stop)")
    parser.add_argument("--workdir", default=None,
                        help="folder for the checkpoint and ONNX files, reused by later runs "
                             "(default: a temporary folder, removed at the end)")
    add_settle_argument(parser)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "runtimes.json"),
                        help="results JSON; the plot goes next to it (.png)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    args.image_size = args.image_size or (64 if args.tiny else 289)
    args.seq_len = args.seq_len or (16 if args.tiny else 64)
    if min(args.batches) < 1 or args.repeats < 1 or args.image_size < 32 or args.seq_len < 2:
        parser.error("batches and repeats must be >= 1, --image-size >= 32, --seq-len >= 2")
    engines = ["pytorch"] + [e for e in ANCHORS[1:] if e in args.engines]
    if "ours" in args.engines:
        engines += [OURS + p for p in dict.fromkeys(args.precisions)]
    args.engine_list = engines
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - t0:6.1f}s] {message}", flush=True)

    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"load average before: {load_before}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_runtimes_")
    os.makedirs(workdir, exist_ok=True)
    try:
        with Workers(prepare_worker, ["prepare"], (workdir, args.image_size, args.tiny), settle_s=0) as prep:
            prepared = prep.run("prepare", "prepare", None)["output"]
            prepared["peak_rss_mib"] = prep.close()["prepare"]
        log(("reused" if prepared["cached"] else "made") + f" checkpoint + ONNX in {workdir}; pooler check "
            f"max |diff| {prepared['pooler_check']['max_abs_diff']:.2g}")
        settings = {"paths": prepared["paths"], "threads": args.threads, "seq_len": args.seq_len,
                    "vocab_size": prepared["vocab_size"]}
        results = {}
        for tower in args.towers:
            results[tower] = run_tower(tower, args.engine_list, settings, args, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    record = {"settings": {"engines": args.engine_list, "precisions": args.precisions, "towers": args.towers,
                           "batches": args.batches, "repeats": args.repeats, "quick": args.quick,
                           "settle_s": args.settle_s, "tiny": args.tiny, "image_size": args.image_size,
                           "seq_len": args.seq_len,
                           "threads": args.threads, "f32_rtol": args.f32_rtol,
                           "openvino_configs": OPENVINO_CONFIGS,
                           "image_inputs": "NHWC float32 uniform(-1, 1); NCHW engines transpose in "
                                           "the timed call",
                           "text_inputs": f"{args.seq_len} random wordpiece ids per row, [CLS] ... [SEP], "
                                          "mask all ones, int32 (int64 engines cast in the timed call)"},
              "preparation": {k: v for k, v in prepared.items() if k != "paths"},
              "results": results,
              "load_average_before": load_before,
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "cpu_flags": cpu_flags(), "wall_s": time.perf_counter() - t0}
    text = tables(record)
    print("\n" + text + "\n", flush=True)
    record = write_result(args.output, "runtimes", **record, tables=text)
    plot(record, os.path.splitext(args.output)[0] + ".png")
    log(f"load average after: {record['load_average_after']}")


if __name__ == "__main__":
    main()
