"""The prepared GPU benchmark (benchmarks/bench_gpu.py) must run as-is on a lent GPU machine,
which has torch, transformers and JAX but no TensorFlow. Here it runs end to end on CPU with the
tiny config, with TensorFlow / tensorflow_text / PIL hidden from every process."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")
pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gpu_benchmark_runs_without_tensorflow(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "device", "no_tf.py"),
                    "--device", "cpu", "--tiny", "--quick", "--output", str(out)],
                   check=True, env=env, timeout=540, cwd=ROOT)
    result = json.loads(out.read_text())
    assert result["status"] == "complete", result.get("status")
    assert result["main_imports"]["loaded"] == []  # nothing hidden was imported anyway
    parity = result["results"]["parity_highest"]
    for tower in ("image", "text"):
        assert parity[tower]["max_abs_diff"] < 1e-5 * max(1.0, parity[tower]["max_abs_reference"])
    timed = [row for name, row in result["results"].items() if "ratio" in row]
    assert timed and all(row["ours_per_s"] > 0 and row["reference_per_s"] > 0 for row in timed)
    assert result["flops"]  # counted from the config
