"""GPU throughput: align-tf under KERAS_BACKEND=jax (XLA) against transformers' AlignModel
(PyTorch, CUDA), same random align-base weights, fp32/TF32 and bf16, batches 64 and 256,
images/s and texts/s, achieved TFLOP/s against the card's dense peak, peak GPU memory, and an
fp32 ("highest") parity check of both towers.

Method (benchmarks/paired.py): the reference and ours each run in their own spawned worker
process; per configuration each worker prepares (ours: trace + XLA compile, timed; both: the
first call, timed), one call is timed to choose `iters` (calls per timed run, so a run lasts
about --target-s), then runs alternate (reference, ours, ...) after one warm-up each and the
medians of --repeats runs are compared. Each timed run is `iters` calls on inputs already on
the device, then a device sync (torch.cuda.synchronize / block_until_ready). Host-to-device
transfer is not timed.

- reference: `transformers.AlignModel.from_pretrained(folder)` (float32 weights, the default
  attention implementation), `.to(device).eval()`, `torch.inference_mode()`, plain NCHW
  (no channels_last, no torch.compile, cudnn.benchmark left at its default): what HF users run.
  `get_image_features(pixel_values).pooler_output` / `get_text_features(...).pooler_output`.
  tf32: `torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True`;
  bf16: the same + `torch.autocast(device, torch.bfloat16)`; highest: both flags False.
- ours: `AlignModel.from_pretrained(folder)` under KERAS_BACKEND=jax; `jax.jit` of
  `model.vision_model.stateless_call(...)` (pooler_output) and of `model.text_model.stateless_call`
  + `text_projection.stateless_call` on [CLS], variables passed as arguments, inference mode,
  lowered under `jax.default_matmul_precision(P)` and compiled ahead of the timed runs.
  tf32: float32 policy, P = "tensorfloat32"; bf16: Keras "mixed_bfloat16" policy set before
  the model is built (float32 weights, bfloat16 compute), P = "tensorfloat32" for what stays
  float32; highest: float32 policy, P = "highest".
- FLOPs are counted from the config (image_macs / text_macs below), 1 MAC = 2 FLOP; achieved
  TFLOP/s = FLOPs per item x items/s; the card's dense peak comes from PEAK_TFLOPS.

Results go to --output as JSON, rewritten after every measurement (a timeout keeps what was
measured); configurations are run in priority order (bf16 at batch 256 first) and skipped
once --budget-s has passed.

On the lent GPU machine (15 min of device time per session, machine start included) use the
`run` tool with exactly:

    command:   bash benchmarks/device/run_gpu.sh
    carry:     [".device"]
    timeout_s: 540

(`.device/wheels` holds keras and the pure-Python / optree wheels keras needs; it is
git-ignored: in a fresh clone fill it first with `bash benchmarks/device/fetch_wheels.sh`. The
runner installs the missing ones with --no-deps. Add --quick as `bash benchmarks/device/run_gpu.sh
--quick` for bf16 + tf32 at batch 256 and the parity check only.) The JSON comes back as
$OUT/gpu.json.

Locally, on CPU (tiny config, 64x64 images, batches 2 and 4, JAX and torch on CPU), with
TensorFlow / tensorflow_text / PIL imports refused in every process:

    JAX_PLATFORMS=cpu python benchmarks/device/no_tf.py --device cpu --tiny --output /tmp/gpu_tiny.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

# Keras (imported here for the FLOP count and the config) runs on JAX in every process, and the
# driver's JAX stays on the CPU: on the GPU machine it would otherwise take 75% of the GPU's
# memory. The ours worker restores the caller's JAX_PLATFORMS before it imports JAX.
os.environ["KERAS_BACKEND"] = "jax"
_CALLER_JAX_PLATFORMS = os.environ.get("JAX_PLATFORMS")
os.environ["JAX_PLATFORMS"] = "cpu"

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (os.path.join(HERE, "device"), os.path.join(ROOT, "tests"), HERE, ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from machine_info import write_result  # noqa: E402
from paired import Pair, add_settle_argument, mark_imported, serve  # noqa: E402

BLOCK_ENV = "ALIGN_BENCH_BLOCK_IMPORTS"  # set by benchmarks/device/no_tf.py

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: "NVIDIA H100 Tensor Core GPU"
# datasheet (H100 SXM / PCIe / NVL) and "NVIDIA H200 Tensor Core GPU" datasheet (H200 SXM /
# NVL). The datasheets quote tensor-core TF32 / BF16 "with sparsity"; dense is half of that.
# Matched against torch.cuda.get_device_name() in order (first match wins).
PEAK_TFLOPS_SOURCE = ("NVIDIA H100 and H200 Tensor Core GPU datasheets; tensor-core figures are "
                      "the datasheets' sparse figures halved (dense)")
PEAK_TFLOPS = [
    ("H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    ("H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
]
# Which peak a precision runs against: bf16 tensor cores, TF32 tensor cores, plain fp32.
PEAK_KEY = {"bf16": "bf16", "tf32": "tf32", "highest": "fp32"}

PRECISIONS = {
    "bf16": {"keras_dtype_policy": "mixed_bfloat16", "jax_default_matmul_precision": "tensorfloat32",
             "torch": "autocast(bfloat16) + matmul.allow_tf32 + cudnn.allow_tf32"},
    "tf32": {"keras_dtype_policy": "float32", "jax_default_matmul_precision": "tensorfloat32",
             "torch": "float32, matmul.allow_tf32 = cudnn.allow_tf32 = True"},
    "highest": {"keras_dtype_policy": "float32", "jax_default_matmul_precision": "highest",
                "torch": "float32, matmul.allow_tf32 = cudnn.allow_tf32 = False"},
}


def peak_tflops(device_name: str | None) -> dict | None:
    if not device_name:
        return None
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return {"matched": key, **peaks}
    return None


# -- FLOPs from the config ---------------------------------------------------------------------
def image_macs(vision_config, size: int) -> dict:
    """Multiply-accumulates per image of the EfficientNet trunk at `size` x `size`: stem 3x3
    conv, then per block expand 1x1 (at the block's input size), depthwise kxk (at its output
    size), squeeze-excite (two 1x1 convs on the pooled vector), project 1x1. Stride-2 output
    sizes follow the reference's explicit padding: (n + before + after - k) // 2 + 1."""
    from align_tf.models.efficientnet import block_arguments, stride2_padding

    def out_size(n, k, stride, pad):
        return (n + pad[0] + pad[1] - k) // stride + 1

    stem = vision_config.round_filters(32)
    n = out_size(size, 3, 2, (0, 1))  # the stem pads (0, 1) then a valid 3x3 stride-2 conv
    parts = {"stem": n * n * 9 * vision_config.num_channels * stem,
             "expand": 0, "depthwise": 0, "squeeze_excite": 0, "project": 0}
    for block in block_arguments(vision_config):
        in_dim, out_dim, k = block["in_dim"], block["out_dim"], block["kernel_size"]
        hidden = in_dim * block["expand_ratio"] if block["expand_ratio"] != 1 else in_dim
        if block["expand_ratio"] != 1:
            parts["expand"] += n * n * in_dim * hidden
        if block["stride"] == 2:
            n = out_size(n, k, 2, stride2_padding(k, block["adjust_padding"])[0])
        parts["depthwise"] += n * n * k * k * hidden
        dim_se = max(1, int(in_dim * vision_config.squeeze_expansion_ratio))
        parts["squeeze_excite"] += 2 * hidden * dim_se
        parts["project"] += n * n * hidden * out_dim
    return {"macs": int(sum(parts.values())), "final_size": n, "parts": parts}


def text_macs(text_config, length: int, projection_dim: int) -> int:
    """Per text of `length` tokens: layers x (4 L h^2 [q, k, v, output] + 2 L^2 h [scores,
    context] + 2 L h i [feed-forward]), plus the projection of [CLS] (h x projection_dim)."""
    h, i = text_config.hidden_size, text_config.intermediate_size
    per_layer = 4 * length * h * h + 2 * length * length * h + 2 * length * h * i
    return int(text_config.num_hidden_layers * per_layer + h * projection_dim)


# -- inputs, generated identically in both workers from a seed ---------------------------------
def make_pixels(batch, size, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def make_tokens(batch, length, vocab_size, seed):
    """`length` real tokens per row (no padding): [CLS] ... [SEP]."""
    ids = np.random.default_rng(seed).integers(min(1000, vocab_size // 2), vocab_size, (batch, length))
    ids = ids.astype(np.int32)
    ids[:, 0], ids[:, -1] = 101 % vocab_size, 102 % vocab_size
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def caption_tokens(batch, vocab_size, length=64):
    """Real alt-text captions (benchmarks/bench_inference.CAPTIONS), tokenized as the reference
    processor does (padding="max_length", 64, truncation) with the BERT uncased vocabulary
    bundled in align_tf/assets/demo_model (no download, no TensorFlow)."""
    import transformers

    from bench_inference import CAPTIONS

    vocab = os.path.join(ROOT, "align_tf", "assets", "demo_model", "vocab.txt")
    tokenizer = transformers.BertTokenizerFast(vocab_file=vocab, do_lower_case=True)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    out = tokenizer(captions, padding="max_length", max_length=length, truncation=True, return_tensors="np")
    tokens = {k: np.asarray(out[k]).astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    tokens["input_ids"] %= vocab_size  # tiny configs have small vocabularies
    return tokens


def _maybe_block_imports():
    if os.environ.get(BLOCK_ENV):
        import no_tf

        no_tf.install(os.environ[BLOCK_ENV].split(","))


def _import_report() -> dict:
    blocked = ("tensorflow", "tensorflow_text", "PIL")
    report = {"loaded": sorted(m for m in sys.modules if m.split(".")[0] in blocked)}
    if os.environ.get(BLOCK_ENV):
        import no_tf

        report["refused_attempts"] = no_tf.attempts()
    return report


# -- workers -----------------------------------------------------------------------------------
def _spec_inputs_key(spec):
    return (spec["tower"], spec["batch"], spec.get("size"), spec.get("length"), spec["seed"],
            spec.get("captions", False))


def _host_inputs(spec, vocab_size):
    if spec["tower"] == "image":
        return make_pixels(spec["batch"], spec["size"], spec["seed"])
    if spec.get("tokens") is not None:
        return {k: np.asarray(v) % vocab_size for k, v in spec["tokens"].items()}
    return make_tokens(spec["batch"], spec["length"], vocab_size, spec["seed"])


def _reference_jobs(settings):
    import torch
    import transformers

    mark_imported()
    device = torch.device(settings["device"])
    torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    start = time.perf_counter()
    model = transformers.AlignModel.from_pretrained(settings["folder"]).to(device).eval()
    load_s = time.perf_counter() - start
    vocab_size = model.config.text_config.vocab_size
    state = {"key": None, "inputs": None}
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def precision(name):
        tf32 = name != "highest"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        if name == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inputs(spec):
        key = _spec_inputs_key(spec)
        if state["key"] != key:
            state["inputs"] = None  # free the previous batch first
            host = _host_inputs(spec, vocab_size)
            if spec["tower"] == "image":
                state["inputs"] = torch.from_numpy(host).permute(0, 3, 1, 2).contiguous().to(device)
            else:
                state["inputs"] = {k: torch.from_numpy(v).long().to(device) for k, v in host.items()}
            state["key"] = key
        return state["inputs"]

    def forward(spec, x):
        if spec["tower"] == "image":
            return model.get_image_features(pixel_values=x).pooler_output
        return model.get_text_features(**x).pooler_output

    def run(spec):
        x = inputs(spec)
        with torch.inference_mode(), precision(spec["precision"]):
            for _ in range(spec.get("iters", 1)):
                out = forward(spec, x)
        sync()
        return out[: spec.get("keep", 8)].float().cpu().numpy()

    def prepare(spec):
        try:
            inputs(spec)  # generated and copied to the device before the timed first call
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run({**spec, "iters": 1})
            return {"first_call_s": time.perf_counter() - start}
        except Exception as error:  # e.g. out of memory: reported, the other configs go on
            state["key"] = state["inputs"] = None
            if cuda:
                torch.cuda.empty_cache()
            return {"error": f"{type(error).__name__}: {error}"[:2000]}

    def memory(_):
        if not cuda:
            return None
        return {"max_memory_allocated_bytes": torch.cuda.max_memory_allocated(),
                "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(),
                "scope": "this configuration (peak reset when it is prepared; weights and inputs included)"}

    def info(_):
        out = {"framework": "torch", "torch": torch.__version__, "transformers": transformers.__version__,
               "device": str(device), "load_s": load_s,
               "param_dtype": str(next(model.parameters()).dtype),
               "attn_implementation": getattr(model.config.text_config, "_attn_implementation", None),
               "cudnn_benchmark": torch.backends.cudnn.benchmark, "channels_last": False,
               "torch_compile": False, "inference_mode": True, "imports": _import_report()}
        if cuda:
            props = torch.cuda.get_device_properties(device)
            out.update(device_name=torch.cuda.get_device_name(device), capability=[props.major, props.minor],
                       total_memory_bytes=props.total_memory, cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
        return out

    return {"run": run, "prepare": prepare, "memory": memory, "info": info}


def _lowered_summary(text: str) -> dict:
    """What the lowered program asks for: precision of its convolutions / dots (HIGH = TF32 on
    NVIDIA GPUs, HIGHEST = fp32, DEFAULT), and their operand element types."""
    import collections
    import re

    summary = {}
    for op in ("convolution", "dot_general"):
        lines = [line for line in text.splitlines() if f"stablehlo.{op}" in line]
        precision = collections.Counter(
            m.group(1) for line in lines for m in [re.search(r"precision[ =\[<]*(HIGHEST|HIGH|DEFAULT)", line)] if m)
        operands = collections.Counter(
            m.group(1) for line in lines for m in [re.search(r":\s*\(tensor<[0-9x]*x?(\w+)>", line)] if m)
        summary[op] = {"count": len(lines), "precision": dict(precision), "lhs_dtype": dict(operands)}
    return summary


def _ours_jobs(settings):
    os.environ["KERAS_BACKEND"] = "jax"
    if settings["device"] == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        # "cuda" unless the caller chose: JAX must fail loudly rather than fall back to the CPU.
        os.environ["JAX_PLATFORMS"] = settings["jax_platforms"] or "cuda"
        # Both workers share one GPU: JAX must not preallocate 75% of it.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(settings["jax_mem_fraction"]))
    import jax
    import keras

    mark_imported()
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras backend is {keras.backend.backend()}, not jax")
    from align_tf.models.align import AlignModel

    device = jax.devices()[0]
    if settings["device"] == "cuda" and device.platform != "gpu":
        raise RuntimeError(f"JAX runs on {device.platform}, not on the GPU: {jax.devices()}")
    models, load_s = {}, {}
    state = {"key": None, "inputs": None}
    compiled = {}

    def model_for(policy):
        if policy not in models:
            start = time.perf_counter()
            keras.config.set_dtype_policy(policy)
            try:
                # from_pretrained builds variables as zeros (no per-shape XLA compiles of
                # random initializers) before its strict load.
                models[policy] = AlignModel.from_pretrained(settings["folder"])
            finally:
                keras.config.set_dtype_policy("float32")
            load_s[policy] = time.perf_counter() - start
        return models[policy]

    def image_fn(vision_model):
        def fn(variables, pixel_values):
            trainable, non_trainable = variables
            out, _ = vision_model.stateless_call(trainable, non_trainable, pixel_values, training=False)
            return keras.ops.cast(out["pooler_output"], "float32")
        return fn

    def text_fn(model):
        def fn(variables, tokens):
            (text_t, text_n), (proj_t, proj_n) = variables
            out, _ = model.text_model.stateless_call(
                text_t, text_n, tokens["input_ids"], attention_mask=tokens["attention_mask"],
                token_type_ids=tokens["token_type_ids"], training=False)
            features, _ = model.text_projection.stateless_call(proj_t, proj_n, out["last_hidden_state"][:, 0])
            return keras.ops.cast(features, "float32")
        return fn

    def values(layer):
        return ([v.value for v in layer.trainable_variables], [v.value for v in layer.non_trainable_variables])

    def inputs(spec, vocab_size):
        key = _spec_inputs_key(spec)
        if state["key"] != key:
            state["inputs"] = None
            host = _host_inputs(spec, vocab_size)
            if spec["tower"] == "text" and spec.get("captions"):
                # Our inference path trims a batch to its longest row (align_tf/models/compiled.py).
                longest = int(host["attention_mask"].sum(1).max())
                host = {k: v[:, :longest] for k, v in host.items()}
            state["inputs"] = jax.device_put(host, device)
            state["key"] = key
        return state["inputs"]

    def executable(spec):
        """(compiled fn, variables, inputs, timings) for one tower / precision / shape."""
        setting = PRECISIONS[spec["precision"]]
        model = model_for(setting["keras_dtype_policy"])
        x = inputs(spec, model.config.text_config.vocab_size)
        if spec["tower"] == "image":
            fn, variables = image_fn(model.vision_model), values(model.vision_model)
        else:
            fn, variables = text_fn(model), (values(model.text_model), values(model.text_projection))
        shapes = tuple((k, tuple(v.shape)) for k, v in sorted(x.items())) if isinstance(x, dict) else tuple(x.shape)
        key = (spec["tower"], spec["precision"], shapes)
        timings = {}
        if key not in compiled:
            start = time.perf_counter()
            with jax.default_matmul_precision(setting["jax_default_matmul_precision"]):
                lowered = jax.jit(fn).lower(variables, x)
            timings["trace_lower_s"] = time.perf_counter() - start
            timings["lowered"] = _lowered_summary(lowered.as_text())
            start = time.perf_counter()
            compiled[key] = lowered.compile()
            timings["compile_s"] = time.perf_counter() - start
        return compiled[key], variables, x, timings

    def run(spec):
        fn, variables, x, _ = executable(spec)
        for _ in range(spec.get("iters", 1)):
            out = fn(variables, x)
        out.block_until_ready()
        return np.asarray(out[: spec.get("keep", 8)])

    def prepare(spec):
        try:
            _, _, x, timings = executable(spec)
            jax.block_until_ready(x)
            start = time.perf_counter()
            run({**spec, "iters": 1})
            timings["first_call_s"] = time.perf_counter() - start
            if spec["tower"] == "text":
                timings["sequence_length"] = int(x["input_ids"].shape[1])
            return timings
        except Exception as error:
            state["key"] = state["inputs"] = None
            return {"error": f"{type(error).__name__}: {error}"[:2000]}

    def memory(_):
        try:
            stats = device.memory_stats()
        except Exception:
            stats = None
        if not stats:
            return None
        return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit"),
                "scope": "process peak so far (JAX has no reset)"}

    def info(_):
        import importlib.metadata

        versions = {}
        for dist in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
                     "jax-cuda13-pjrt", "keras"):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return {"framework": "jax", "versions": versions, "keras_backend": keras.backend.backend(),
                "device": str(device), "device_kind": device.device_kind, "platform": device.platform,
                "load_s": load_s, "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
                "weights_dtype": {p: str(m.vision_model.trainable_variables[0].dtype) for p, m in models.items()},
                "compute_dtype": {p: m.vision_model.compute_dtype for p, m in models.items()},
                "imports": _import_report()}

    model_for("float32")
    return {"run": run, "prepare": prepare, "memory": memory, "info": info}


def worker(which, settings, conn):
    _maybe_block_imports()
    serve(conn, lambda: (_reference_jobs if which == "reference" else _ours_jobs)(settings))


# -- the driver --------------------------------------------------------------------------------
def make_checkpoint(config, folder) -> str:
    """The reference AlignModel for `config` with random weights and randomised BatchNorm
    statistics (tests/support.py), saved as an HF folder both workers load."""
    from support import hf_align_model, save_hf_checkpoint

    return save_hf_checkpoint(hf_align_model(config, seed=0), folder)


def config_plan(args) -> list[dict]:
    """Timed configurations in priority order (bf16 at the largest batch first)."""
    big = max(args.batches)
    plan = []

    def add(tower, precision, batch, **extra):
        plan.append({"tower": tower, "precision": precision, "batch": batch, **extra})

    add("image", "bf16", big)
    add("text", "bf16", big)
    plan.append({"parity": True})
    add("image", "tf32", big)
    add("text", "tf32", big)
    if not args.quick:
        for precision in ("bf16", "tf32"):
            for batch in sorted(set(args.batches) - {big}, reverse=True):
                add("image", precision, batch)
                add("text", precision, batch)
        if not args.no_captions:
            add("text", "bf16", big, captions=True)
        if not args.no_highest:
            add("image", "highest", big)
            add("text", "highest", big)
    if args.only:
        plan = [spec for spec in plan if config_name(spec) in args.only]
    return plan


def config_name(spec):
    if spec.get("parity"):
        return "parity_highest"
    kind = "text_captions" if spec.get("captions") else ("text_64" if spec["tower"] == "text" else "image")
    return f"{kind}/{spec['precision']}/{spec['batch']}"


def run_benchmark(args, record, save):
    from align_tf.configuration import AlignConfig

    t0 = time.perf_counter()

    def elapsed():
        return time.perf_counter() - t0

    def log(message):
        print(f"[{elapsed():6.1f}s] {message}", flush=True)

    if args.tiny:
        from support import tiny_align_config

        config = tiny_align_config()
    else:
        config = AlignConfig()
    size = args.image_size or (64 if args.tiny else 289)
    length = 64
    flops = {
        "image": image_macs(config.vision_config, size),
        "text_64_macs": text_macs(config.text_config, length, config.projection_dim),
        "image_size": size, "text_length": length, "flop_per_mac": 2,
        "note": "MACs from the config (image_macs / text_macs in this script); element-wise ops, "
                "BatchNorm, softmax, LayerNorm and embeddings not counted",
    }
    record["flops"] = flops
    log(f"image tower {flops['image']['macs'] / 1e9:.4g} GMAC / image at {size}x{size}, "
        f"text {flops['text_64_macs'] / 1e9:.4g} GMAC / text at {length} tokens")
    folder = make_checkpoint(config, tempfile.mkdtemp(prefix="bench_gpu_align_"))
    log(f"random-weight checkpoint written to {folder}")
    settings = {"device": args.device, "folder": folder, "cudnn_benchmark": args.cudnn_benchmark,
                "jax_platforms": _CALLER_JAX_PLATFORMS,
                "jax_mem_fraction": args.jax_mem_fraction}
    record["settings"] = {**{k: v for k, v in settings.items() if k != "folder"}, "precisions": PRECISIONS,
                          "repeats": args.repeats, "target_s": args.target_s, "settle_s": args.settle_s,
                          "budget_s": args.budget_s, "image_size": size, "text_length": length,
                          "batches": args.batches, "quick": args.quick, "tiny": args.tiny,
                          "inputs": "generated from a seed in each worker, resident on the device, "
                                    "transfer not timed"}
    pair = Pair(worker, (settings,), settle_s=args.settle_s)
    record["workers"] = {w: pair._run(w, "info", None)["output"] for w in Pair.NAMES}
    record["workers_loaded_after_s"] = elapsed()
    device_name = record["workers"]["reference"].get("device_name")
    record["peak_tflops"] = {"source": PEAK_TFLOPS_SOURCE, "device_name": device_name,
                             "dense": peak_tflops(device_name)}
    log(f"workers ready: {device_name or args.device}; peak {record['peak_tflops']['dense']}")
    save()
    peaks = record["peak_tflops"]["dense"]
    results = record["results"]
    try:
        for spec in config_plan(args):
            name = config_name(spec)
            if elapsed() > args.budget_s:
                record["skipped"].append({"config": name, "reason": f"budget {args.budget_s}s passed"})
                log(f"skip {name}: budget passed")
                save()
                continue
            if spec.get("parity"):
                results[name] = parity(pair, args, size, length, log)
            else:
                results[name] = measure(pair, spec, args, size, length, flops, config, peaks, log)
            save()
    finally:
        record["elapsed_s"] = elapsed()
        if record.get("status") != "terminated":
            try:
                # Again at the end: load times of models loaded later (bf16), every import tried.
                record["workers"] = {w: pair._run(w, "info", None)["output"] for w in Pair.NAMES}
                record["memory_rss"] = pair.close()
            except Exception as error:  # a worker died (e.g. killed for memory)
                record["close_error"] = f"{type(error).__name__}: {error}"
        shutil.rmtree(folder, ignore_errors=True)  # the random-weight checkpoint (0.7 GB at align-base)


def parity(pair, args, size, length, log):
    """Ours vs reference at fp32 "highest" on a small batch: both towers."""
    out = {}
    for tower in ("image", "text"):
        spec = {"tower": tower, "precision": "highest", "batch": args.parity_batch, "size": size,
                "length": length, "seed": 7, "keep": args.parity_batch}
        prep = {w: pair._run(w, "prepare", spec)["output"] for w in Pair.NAMES}
        if any("error" in p for p in prep.values()):
            out[tower] = {"prepare": prep}
            continue
        ref, ours = (np.asarray(pair._run(w, "run", spec)["output"], np.float64) for w in Pair.NAMES)
        diff = np.abs(ref - ours)
        cos = np.sum(ref * ours, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ours, axis=1))
        out[tower] = {"batch": args.parity_batch, "max_abs_diff": float(diff.max()),
                      "max_abs_reference": float(np.abs(ref).max()),
                      "max_rel_diff": float(diff.max() / np.abs(ref).max()),
                      "min_cosine": float(cos.min()), "prepare": prep}
        log(f"parity {tower} (highest, batch {args.parity_batch}): max abs diff {diff.max():.3g} "
            f"(max |ref| {np.abs(ref).max():.3g}), min cosine {cos.min():.9f}")
    return out


def measure(pair, spec, args, size, length, flops, config, peaks, log):
    name = config_name(spec)
    spec = {**spec, "size": size, "length": length, "seed": 1, "keep": 8}
    if spec.get("captions"):  # tokenized here: the workers need no tokenizer
        spec["tokens"] = caption_tokens(spec["batch"], config.text_config.vocab_size, length)
    log(f"{name}: preparing (ours compiles)")
    prep = {w: pair._run(w, "prepare", spec)["output"] for w in Pair.NAMES}
    row = {"prepare": prep}
    if any("error" in p for p in prep.values()):
        log(f"{name}: failed to prepare: {prep}")
        return row
    single = {w: pair._run(w, "run", {**spec, "iters": 1})["seconds"] for w in Pair.NAMES}
    iters = int(min(args.max_iters, max(1, math.ceil(args.target_s / max(single.values())))))
    batch = spec["batch"]
    row.update(pair.compare("run", {**spec, "iters": iters}, batch * iters, args.repeats))
    row.update(batch=batch, iters=iters, single_call_s=single, precision=spec["precision"],
               max_abs_diff_scope="first 8 rows of the features, at this precision")
    if spec["tower"] == "image":
        macs = {w: flops["image"]["macs"] for w in Pair.NAMES}
    else:
        lengths = {"reference": length, "ours": prep["ours"].get("sequence_length", length)}
        macs = {w: text_macs(config.text_config, lengths[w], config.projection_dim) for w in Pair.NAMES}
        row["executed_sequence_length"] = lengths
    row["gflop_per_item_executed"] = {w: 2 * macs[w] / 1e9 for w in Pair.NAMES}
    peak = peaks.get(PEAK_KEY[spec["precision"]]) if peaks else None
    for w in Pair.NAMES:
        tflops = 2 * macs[w] * row[f"{w}_per_s"] / 1e12
        row[f"{w}_tflops"] = tflops
        row[f"{w}_fraction_of_peak"] = tflops / peak if peak else None
    row["peak_tflops"] = peak
    row["gpu_memory"] = {w: pair._run(w, "memory", None)["output"] for w in Pair.NAMES}
    unit = "images/s" if spec["tower"] == "image" else "texts/s"
    log(f"{name}: ours/reference {row['ratio']:.2f}x ({row['reference_per_s']:.1f} -> {row['ours_per_s']:.1f} "
        f"{unit}; {row['reference_tflops']:.3g} -> {row['ours_tflops']:.3g} TFLOP/s"
        + (f", {row['ours_fraction_of_peak']:.1%} of peak" if peak else "")
        + f"; diff {row.get('max_abs_diff', float('nan')):.3g}; compile {prep['ours'].get('compile_s', 0):.1f}s)")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda on the GPU machine; cpu (with --tiny) for the local check")
    parser.add_argument("--tiny", action="store_true",
                        help="tests/support.py tiny_align_config, 64x64 images, batches 2 4 (local check)")
    parser.add_argument("--quick", action="store_true",
                        help="bf16 and tf32 at the largest batch + the parity check only")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 64 256 (tiny: 2 4)")
    parser.add_argument("--image-size", type=int, default=None, help="default 289 (tiny: 64)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, tiny 2)")
    parser.add_argument("--target-s", type=float, default=None,
                        help="seconds per timed run; sets calls per run (default 0.5, tiny 0.05)")
    parser.add_argument("--max-iters", type=int, default=50)
    add_settle_argument(parser, default=0.1)
    parser.add_argument("--budget-s", type=float, default=420,
                        help="start no new configuration after this many seconds (partial JSON stays)")
    parser.add_argument("--parity-batch", type=int, default=None, help="default 4 (tiny 2)")
    parser.add_argument("--no-captions", action="store_true", help="skip the real-captions text row")
    parser.add_argument("--no-highest", action="store_true", help="skip the strict fp32 timed rows")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only these configurations, e.g. parity_highest image/tf32/64 "
                             "text_64/bf16/256 text_captions/bf16/256 (names as in the JSON)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="torch.backends.cudnn.benchmark = True for the reference (default: off, as HF users run)")
    parser.add_argument("--jax-mem-fraction", type=float, default=0.45,
                        help="XLA_PYTHON_CLIENT_MEM_FRACTION for ours (both workers share the GPU)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "gpu.json"))
    args = parser.parse_args(argv)
    args.batches = args.batches or ([2, 4] if args.tiny else [64, 256])
    args.repeats = args.repeats or (2 if args.tiny else 5)
    args.target_s = args.target_s or (0.05 if args.tiny else 0.5)
    args.parity_batch = args.parity_batch or (2 if args.tiny else 4)
    _maybe_block_imports()

    record = {"status": "running", "results": {}, "skipped": []}

    def save():
        write_result(args.output, "gpu", **record)

    def terminated(signum, frame):
        # GNU timeout signals the driver twice (it, then its process group): the second one
        # must not interrupt the final save.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record["status"] = "terminated"
        print(f"SIGTERM: writing {args.output} and stopping", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        run_benchmark(args, record, save)
        if record["status"] == "running":
            record["status"] = "complete" if not record["skipped"] else "partial (budget)"
    except BaseException as error:
        if record["status"] == "running":
            record["status"] = f"failed: {type(error).__name__}: {error}"[:2000]
        raise
    finally:
        record["main_imports"] = _import_report()
        save()


if __name__ == "__main__":
    main()
