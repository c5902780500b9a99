#!/usr/bin/env bash
# GPU benchmark on the lent device machine (see benchmarks/bench_gpu.py's docstring). Use the
# `run` tool with: command "bash benchmarks/device/run_gpu.sh", carry [".device"], timeout_s 540
# (fill .device/wheels first: bash benchmarks/device/fetch_wheels.sh).
# Extra arguments go to bench_gpu.py (e.g. --quick). The JSON is $OUT/gpu.json, rewritten after
# every measurement; the log is $OUT/gpu.log.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/bench_gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
WHEELS=.device/wheels

{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true
  "$PY" --version
  # Keras and what it imports at import time, from the carried wheels, only where missing
  # (--no-deps: torch, jax and numpy already on the machine stay as they are).
  for pair in keras:keras absl:absl-py rich:rich markdown_it:markdown-it-py mdurl:mdurl \
              pygments:pygments namex:namex optree:optree; do
    module="${pair%%:*}"; dist="${pair##*:}"
    if ! "$PY" -c "import $module" 2>/dev/null; then
      echo "installing $dist from $WHEELS"
      "$PY" -m pip install --quiet --no-deps --no-index --find-links "$WHEELS" "$dist" || echo "pip failed for $dist"
    fi
  done
  "$PY" - <<'EOF'
import importlib.metadata as m
for d in ("keras", "jax", "jaxlib", "torch", "transformers", "numpy", "optree"):
    try:
        print(d, m.version(d))
    except m.PackageNotFoundError:
        print(d, "MISSING")
EOF
} 2>&1 | tee "$OUT/gpu.log"

# `timeout` signals its whole process group (the spawned workers too); the driver writes the
# JSON after each measurement and once more on SIGTERM.
timeout -k 15 "${BENCH_TIMEOUT_S:-500}" "$PY" benchmarks/bench_gpu.py --device cuda --output "$OUT/gpu.json" "$@" \
  2>&1 | tee -a "$OUT/gpu.log"
rc=${PIPESTATUS[0]}
echo "bench_gpu.py exit status $rc" | tee -a "$OUT/gpu.log"
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null | tee -a "$OUT/gpu.log" || true
exit "$rc"
