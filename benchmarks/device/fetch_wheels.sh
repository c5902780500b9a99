#!/usr/bin/env bash
# Fill .device/wheels (git-ignored) with what benchmarks/device/run_gpu.sh installs on the GPU
# machine, which has torch, transformers and JAX but maybe not Keras: keras at this machine's
# version, the pure-Python packages keras imports at import time, and optree for CPython
# 3.10-3.13 on x86_64. Run once in a fresh clone before the device call (needs PyPI).
set -eu
cd "$(dirname "$0")/../.."
WHEELS=.device/wheels
mkdir -p "$WHEELS"
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }
python -m pip download --quiet --no-deps -d "$WHEELS" "keras==$(version keras)" \
    "absl-py==$(version absl-py)" "rich==$(version rich)" "markdown-it-py==$(version markdown-it-py)" \
    "mdurl==$(version mdurl)" "pygments==$(version pygments)" "namex==$(version namex)"
for py in 3.10 3.11 3.12 3.13; do
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "optree==$(version optree)"
done
ls -la "$WHEELS"
