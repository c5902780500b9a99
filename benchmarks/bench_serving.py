"""Serving throughput and latency over gRPC: `embed_text` with one short string and `embed_image`
with one JPEG per request, at the align-base size (random weights) and with the demo model.

For each model: export a SavedModel, start `align-tf serve` as a subprocess on 127.0.0.1 (or
use --target to measure a server that is already running, e.g. real TF Serving on a GPU), warm
it up, then send --requests requests from each of --concurrency client threads and record
requests/s and p50/p99 latency. Writes benchmarks/results/serving.json with the machine, the
date and the load average (other processes on the machine slow every figure down).

    python benchmarks/bench_serving.py                          # align-base and demo
    python benchmarks/bench_serving.py --models demo --requests 20
    python benchmarks/bench_serving.py --target localhost:8500 --model-name align --models served
    python benchmarks/bench_serving.py --models demo --encoding   # + typed fields vs tensor_content
    python benchmarks/bench_serving.py --before-rev f0530c5       # before / after / before
    python benchmarks/bench_serving.py --server-env TF_ENABLE_ONEDNN_OPTS=1   # oneDNN kernels

Classify: every export carries the classify signature `zero_shot` (`--labels` labels), and the
server of this checkout is also measured on TF Serving's Classify API (gRPC), with one JPEG per
request and with 16. `--before PATH` (a checkout of the code before a change) or `--before-rev
REV` (a commit of this repository, checked out into a temporary git worktree) serves the same
export with that code too, in the order before / after / before, and the summary gives each
Predict figure after the change against the mean of the two before it and after it.

`--encoding` also measures, in this process, what writing a reply costs: gRPC outputs in the
typed fields (`float_val`, TF Serving's default) against `tensor_content`
(`--enable_serialization_as_tensor_content`), and REST floats written as TF Serving writes them
against 17-digit `json.dumps`. `--tensor-content` starts the server with that flag.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from machine_info import machine_info  # noqa: E402

SHORT_TEXT = "a photo of a cat"


def one_jpeg() -> bytes:
    """A real photo (scikit-image's "chelsea" the cat, 451x300) as JPEG, else a noise image."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.chelsea()
    except Exception:  # scikit-image missing: any JPEG measures the same decode path
        pixels = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def build(model_kind: str):
    """(model, processor) for "align-base" (random weights, full size), "demo", or "tiny" (the
    test suite's tiny model: a quick check that the script runs, not a measurement)."""
    from align_tf.models.align import AlignModel
    from align_tf.preprocessing.processor import AlignProcessor

    if model_kind == "tiny":
        from support import tiny_model, tiny_processor

        return tiny_model(), tiny_processor()
    if model_kind == "demo":
        from align_tf.assets import demo_model_path

        folder = demo_model_path()
        return AlignModel.from_pretrained(folder), AlignProcessor.from_pretrained(folder)
    from align_tf.configuration import AlignConfig
    from align_tf.preprocessing.image import AlignImageProcessor
    from align_tf.preprocessing.tokenizer import AlignTokenizer
    from support import minilm_folder

    model = AlignModel(AlignConfig())
    model.build()
    tokenizer = AlignTokenizer(os.path.join(minilm_folder(), "vocab.txt"), max_length=64)
    return model, AlignProcessor(tokenizer, AlignImageProcessor())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: str, log_path: str, threads: int, tensor_content: bool = False, root: str = ROOT,
                 extra_env: dict | None = None):
    """`align-tf serve` from the checkout at `root` (its align_tf first on PYTHONPATH)."""
    grpc_port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               **(extra_env or {}))
    argv = [sys.executable, "-m", "align_tf.cli", "serve", "--model_name", "align",
            "--model_base_path", base, "--port", str(grpc_port), "--grpc_max_threads", str(threads)]
    if tensor_content:
        argv.append("--enable_serialization_as_tensor_content")
    log = open(log_path, "w")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    return process, f"127.0.0.1:{grpc_port}"


def stop_server(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ClassifyClient:
    """TF Serving's Classify over gRPC on the `zero_shot` signature: one tf.Example per image,
    the image bytes under `image/encoded`."""

    def __init__(self, target: str, model_name: str, timeout: float = 300):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                              ("grpc.max_send_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_name, self.timeout = model_name, timeout

    def classify(self, images: list[bytes]):
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = self.model_name, "zero_shot"
        for image in images:
            request.input.example_list.examples.add().features.feature["image/encoded"].bytes_list.value.append(image)
        reply = self.stub.Classify(request, timeout=self.timeout)
        if len(reply.result.classifications) != len(images):
            raise RuntimeError(f"{len(reply.result.classifications)} classifications for {len(images)} images")
        return reply

    def close(self) -> None:
        self.channel.close()


def bench_labels(count: int) -> list[str]:
    """`count` distinct labels for the zero_shot signature."""
    words = ["cat", "dog", "car", "tree", "house", "bird", "boat", "flower", "horse", "chair"]
    return [words[i % len(words)] + ("" if i < len(words) else f" {i // len(words)}") for i in range(count)]


def before_checkout(path: str | None, rev: str | None, workdir: str) -> str | None:
    """The checkout whose server is "before": PATH as given, or REV in a temporary worktree."""
    if path:
        return os.path.abspath(path)
    if not rev:
        return None
    target = os.path.join(workdir, "before")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", target, rev], check=True,
                   capture_output=True)
    return target


def compare_phases(runs: list[dict]) -> list[dict]:
    """Per model / signature / concurrency / images: requests/s before (each run), after, and
    after / mean(before); only keys measured in both."""
    table: dict[tuple, dict] = {}
    for run in runs:
        if "phase" not in run or not run.get("requests"):
            continue
        key = (run["model"], run["signature"], run["concurrency"], run.get("images", 1))
        table.setdefault(key, {"before": [], "after": []})[run["phase"]].append(run["requests_per_s"])
    rows = []
    for (model, signature, concurrency, images), seen in sorted(table.items()):
        if seen["before"] and seen["after"]:
            before = float(np.mean(seen["before"]))
            rows.append({"model": model, "signature": signature, "concurrency": concurrency, "images": images,
                         "before_requests_per_s": seen["before"], "after_requests_per_s": seen["after"],
                         "after_over_before": round(float(np.mean(seen["after"])) / before, 3) if before else None})
    return rows


def measure(client_factory, signature: str, payload, requests: int, concurrency: int,
            time_limit: float) -> dict:
    """`concurrency` threads, each with its own client, `requests` requests each (stopping
    early at `time_limit` seconds)."""
    latencies, errors = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def worker():
        client = client_factory()
        call = {"embed_text": getattr(client, "embed_text", None), "embed_image": getattr(client, "embed_image", None),
                "zero_shot": getattr(client, "classify", None)}[signature]
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                call(payload)
            except Exception as e:  # counted and reported, not raised: a benchmark run finishes
                with lock:
                    errors.append(repr(e)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=time_limit + 120)
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "signature": signature, "concurrency": concurrency, "requests": len(latencies),
        "errors": len(errors), "first_errors": errors[:3], "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2) if latencies else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
    }


def encoding_costs(repeats: int) -> list[dict]:
    """Per reply shape: microseconds to encode (and to decode on the client) and bytes on the
    wire, gRPC typed fields vs tensor_content, and REST JSON as written vs json.dumps."""
    from align_tf.serving.json_tensor import outputs_to_json
    from align_tf.serving.limits import RequestLimits
    from align_tf.serving.tensor_proto import decode_tensors, encode_tensor_proto

    def best_us(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(min(times) * 1e6, 1)

    rng = np.random.default_rng(0)
    limits = RequestLimits(max_decoded_bytes=1 << 30)
    rows = []
    for name, shape in (("text_embeds, 1 text", (1, 640)), ("text_embeds, 64 texts", (64, 640)),
                        ("image_embeds, 256 images", (256, 640)), ("logits 64x64", (64, 64))):
        array = rng.standard_normal(shape).astype(np.float32)
        row = {"output": name, "shape": list(shape)}
        for label, content in (("typed", False), ("tensor_content", True)):
            proto = encode_tensor_proto(array, content)
            row[f"grpc_{label}_encode_us"] = best_us(lambda: encode_tensor_proto(array, content).SerializeToString())
            row[f"grpc_{label}_decode_us"] = best_us(lambda: decode_tensors({"y": proto}, limits, "reply"))
            row[f"grpc_{label}_bytes"] = len(proto.SerializeToString())
        row["rest_written_us"] = best_us(lambda: outputs_to_json({"y": array}, "columnar"))
        row["rest_written_bytes"] = len(outputs_to_json({"y": array}, "columnar"))
        row["rest_json_dumps_us"] = best_us(lambda: json.dumps({"outputs": array.tolist()}))
        row["rest_json_dumps_bytes"] = len(json.dumps({"outputs": array.tolist()}))
        print(json.dumps(row))
        rows.append(row)
    return rows


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run_model(kind: str, args, phases, jpeg: bytes, results: dict) -> None:
    """Export `kind` once (with the zero_shot signature), then per phase start that checkout's
    server on it and measure Predict (and, on this checkout, Classify)."""
    from align_tf.serving.client import AlignServingClient

    workdir = tempfile.mkdtemp(prefix="bench_serving_")
    try:
        export_s = None
        if args.target:
            phases = [("served", None)]
        else:
            if kind == "demo":
                try:
                    from align_tf.assets import demo_model_path

                    demo_model_path()
                except (ImportError, FileNotFoundError) as e:
                    print(f"demo model not available, skipped: {e}")
                    results["runs"].append({"model": kind, "skipped": str(e)})
                    return
            from align_tf.export import export_saved_model

            model, processor = build(kind)
            base = os.path.join(workdir, "align")
            started = time.perf_counter()
            export_saved_model(model, processor, base, labels=bench_labels(args.labels))
            export_s = time.perf_counter() - started
            del model
        for phase, root in phases:
            process = None
            try:
                if args.target:
                    target = args.target
                else:
                    process, target = start_server(base, os.path.join(workdir, f"server-{phase}.log"),
                                                   max(args.concurrency) * 2, args.tensor_content, root,
                                                   dict(e.split("=", 1) for e in args.server_env))
                client = AlignServingClient(target, args.model_name, timeout=300)
                client.wait_until_available(timeout=600)
                for _ in range(args.warmup):
                    client.embed_text([SHORT_TEXT])
                    client.embed_image([jpeg])
                client.close()
                cases = [("embed_text", [SHORT_TEXT], 1, lambda: AlignServingClient(target, args.model_name, timeout=300)),
                         ("embed_image", [jpeg], 1, lambda: AlignServingClient(target, args.model_name, timeout=300))]
                if phase != "before":  # the code before has no Classify
                    cases += [("zero_shot", [jpeg] * n, n, lambda: ClassifyClient(target, args.model_name))
                              for n in args.classify_images]
                    warm = ClassifyClient(target, args.model_name)
                    for _ in range(args.warmup):
                        warm.classify([jpeg])
                    warm.close()
                for signature, payload, images, factory in cases:
                    for concurrency in args.concurrency:
                        run = measure(factory, signature, payload, args.requests, concurrency, args.time_limit)
                        run.update(model=kind, phase=phase, images=images)
                        if signature == "zero_shot":
                            run["api"], run["labels"] = "Classify", args.labels
                            run["images_per_s"] = round(run["requests_per_s"] * images, 2)
                        if export_s is not None:
                            run["export_s"] = round(export_s, 1)
                        print(json.dumps(run))
                        results["runs"].append(run)
            finally:
                if process is not None:
                    stop_server(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["align-base", "demo"],
                        help="align-base, demo, tiny (a check that the script runs), or 'served' "
                             "with --target (default: %(default)s)")
    parser.add_argument("--target", default=None, help="measure this running gRPC server instead")
    parser.add_argument("--model-name", default="align")
    parser.add_argument("--requests", type=int, default=50, help="requests per client thread")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "serving.json"))
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--encoding", action="store_true",
                        help="also measure reply encoding: typed fields vs tensor_content, REST floats")
    parser.add_argument("--encoding-repeats", type=int, default=200)
    parser.add_argument("--tensor-content", action="store_true",
                        help="start the server with --enable_serialization_as_tensor_content")
    parser.add_argument("--labels", type=int, default=100,
                        help="labels of the exported zero_shot classify signature (default: %(default)s)")
    parser.add_argument("--classify-images", type=int, nargs="+", default=[1, 16],
                        help="images per Classify request (default: %(default)s)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of every server started (before and after), e.g. "
                             "TF_ENABLE_ONEDNN_OPTS=1; repeatable")
    parser.add_argument("--before", default=None,
                        help="checkout of the code before a change: its server measured before and after ours")
    parser.add_argument("--before-rev", default=None,
                        help="a commit of this repository as --before (checked out into a temporary worktree)")
    args = parser.parse_args(argv)

    jpeg = one_jpeg()
    results = {"machine": machine_info(), "load_average_start": load_average(),
               "server": "real server at " + args.target if args.target else
               "align-tf serve (the local stand-in, Python gRPC, CPU)",
               "note": args.note, "server_env": args.server_env, "jpeg_bytes": len(jpeg), "text": SHORT_TEXT,
               "grpc_outputs": "tensor_content" if args.tensor_content else "typed fields", "runs": []}
    if args.encoding:
        results["encoding"] = encoding_costs(args.encoding_repeats)
    scratch = tempfile.mkdtemp(prefix="bench_serving_before_")
    before_root = before_checkout(args.before, args.before_rev, scratch)
    if before_root:
        results["before"] = {"checkout": before_root, "rev": args.before_rev,
                             "order": "before / after / before, one export served by each"}
    phases = [("before", before_root), ("after", ROOT), ("before", before_root)] if before_root \
        else [("after", ROOT)]
    try:
        for kind in args.models:
            run_model(kind, args, phases, jpeg, results)
    finally:
        if args.before_rev and before_root:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", before_root], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    if before_root:
        results["predict_after_over_before"] = compare_phases(results["runs"])
        for row in results["predict_after_over_before"]:
            print(f"{row['model']:<11} {row['signature']:<12} x{row['concurrency']}: before "
                  f"{row['before_requests_per_s']} -> after {row['after_requests_per_s']} req/s "
                  f"(after / before {row['after_over_before']})")
    results["load_average_end"] = load_average()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
