"""The runtimes benchmark's machinery (benchmarks/bench_runtimes.py, benchmarks/paired.py): worker
processes that report errors and CPU time, the agreement check that stops a run, weights whose
features depend on the image, and the whole script end to end on the tiny config. Nothing here
asserts a speed."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import paired  # noqa: E402


def _jobs_worker(which, conn):
    def setup():
        if which == "broken":
            raise ValueError("no model here")

        def busy(seconds):  # CPU-bound until `seconds` of this process's CPU time are spent
            start = time.process_time()
            while time.process_time() - start < seconds:
                pass
            return which

        def fail(_):
            raise KeyError("bad job")

        return {"busy": busy, "sleep": time.sleep, "fail": fail}

    paired.serve(conn, setup)


def test_workers_report_cpu_time_and_errors():
    with paired.Workers(_jobs_worker, ["a", "b"], settle_s=0) as workers:
        busy = workers.run("a", "busy", 0.2)
        assert busy["output"] == "a" and busy["cpu_s"] >= 0.19
        idle = workers.run("b", "sleep", 0.3)
        assert idle["seconds"] >= 0.3 and idle["cpu_s"] < 0.1  # waiting is not CPU use
        with pytest.raises(paired.WorkerError, match="(?s)'a' failed.*KeyError: 'bad job'"):
            workers.run("a", "fail", None)
        assert workers.run("a", "busy", 0.01)["output"] == "a"  # still serving after the error
        warmups = []
        timed = workers.alternate("busy", 0.01, repeats=3, rotate=True, check=warmups.append)
        assert warmups == [{"a": "a", "b": "b"}] and timed["warmup"] == warmups[0]
        assert {w: len(s) for w, s in timed["seconds"].items()} == {"a": 3, "b": 3}
        assert all(c >= 0.009 for cpu in timed["cpu_s"].values() for c in cpu)
        peak = workers.close()
    assert set(peak) == {"a", "b"} and all(v > 0 for v in peak.values())


def test_worker_setup_error_reaches_the_caller():
    with pytest.raises(paired.WorkerError, match="(?s)'broken' failed.*ValueError: no model here"):
        paired.Workers(_jobs_worker, ["a", "broken"], settle_s=0)


def test_agreement_stops_on_a_float32_engine_and_records_reduced_precision():
    from bench_runtimes import AgreementError, agreement

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 16)).astype(np.float32)
    precisions = {"pytorch": "float32", "onnxruntime": "float32", "openvino_default": "bf16",
                  "ours_float32": "float32", "ours_mixed_bfloat16": "mixed_bfloat16"}
    outputs = {"pytorch": ref, "onnxruntime": ref + 1e-6, "openvino_default": ref + 0.05,
               "ours_float32": ref - 1e-6, "ours_mixed_bfloat16": ref * 1.01}
    report = agreement(outputs, precisions, 1e-4)
    assert report["onnxruntime"]["max_rel_diff"] < 1e-5
    assert 0.99 < report["openvino_default"]["min_cosine"] < 0.99999  # recorded, not fatal
    assert report["ours_mixed_bfloat16"]["min_cosine_vs_ours_float32"] > 0.99999  # a scale only
    assert report["reference_spread"] > 0.5
    with pytest.raises(AgreementError, match="onnxruntime"):
        agreement({**outputs, "onnxruntime": ref + 1e-2}, precisions, 1e-4)
    with pytest.raises(AgreementError, match="ours_mixed_bfloat16"):
        agreement({**outputs, "ours_mixed_bfloat16": ref * np.nan}, precisions, 1e-4)


def test_fan_in_vision_weights_make_features_depend_on_the_image():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from support import fan_in_vision_weights, hf_align_model, tiny_align_config

    model = hf_align_model(tiny_align_config())
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def spread():
        with torch.inference_mode():
            features = model.get_image_features(pixel_values=pixels).pooler_output
        assert torch.isfinite(features).all()
        return float((features[0] - features[1]).abs().max() / features.abs().max())

    assert spread() < 1e-4  # the reference's init: the same features for any image
    fan_in_vision_weights(model, 64)
    assert spread() > 0.1
    assert not model.training


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_runtimes_benchmark_runs_end_to_end(tmp_path):
    for module in ("torch", "transformers", "onnx", "onnxruntime", "openvino"):
        pytest.importorskip(module)
    out = tmp_path / "runtimes.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, os.path.join(BENCHMARKS, "bench_runtimes.py"), "--tiny", "--repeats", "1",
                    "--batches", "2", "--settle-s", "0", "--workdir", str(tmp_path / "work"),
                    "--output", str(out)], check=True, env=env, timeout=840, cwd=ROOT)
    record = json.loads(out.read_text())
    engines = record["settings"]["engines"]
    assert engines == ["pytorch", "onnxruntime", "openvino_f32_latency", "openvino_f32_throughput",
                       "openvino_default", "ours_float32", "ours_mixed_bfloat16"]
    pooler = record["preparation"]["pooler_check"]
    assert pooler["max_abs_diff"] <= 1e-6 * pooler["max_abs_features"]
    for tower in ("image", "text"):
        result = record["results"][tower]
        row = result["batches"]["2"]
        assert row["reference_spread"] > 1e-3  # the agreement check compares real signal
        for engine in engines:
            cell = row["engines"][engine]
            assert cell["per_s"] > 0 and cell["cpu_use"] > 0 and len(cell["seconds"]) == 1
            assert set(cell["ratio_to"]) == set(engines) - {engine}
            assert cell["agreement"]["min_cosine"] > 0.9
            if cell["precision"] in ("float32", "f32"):
                assert cell["agreement"]["max_rel_diff"] <= 1e-4
            assert result["peak_rss_mib"][engine] > 0
        assert row["engines"]["ours_mixed_bfloat16"]["precision"] == "mixed_bfloat16"
        assert result["workers"]["openvino_f32_latency"]["precision"] == "f32"
        throughput = result["workers"]["openvino_f32_throughput"]
        assert throughput["infer_requests"] == int(throughput["num_streams"])  # batch split over streams
    assert record["machine"]["versions"]["onnxruntime"] and record["cpu_flags"]
    assert "| ours_float32 |" in record["tables"]
    assert (tmp_path / "runtimes.png").stat().st_size > 0
    assert (tmp_path / "work" / "prepared.json").exists()  # --workdir is kept for the next run
