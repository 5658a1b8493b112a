#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the wheels the GPU machine may lack into .whl/ (git ignores it):
# the GPU machine reaches no registry, and benchmarks/gpu_check.sh installs from .whl/ only what that machine
# is missing (or has at a version our pyproject excludes), into /tmp/site. Its python3 is CPython 3.12 on x86-64
# with torch 2.11, torchvision 0.26, numpy, safetensors, huggingface_hub and Lightning already there.
#
#   bash benchmarks/gpu_wheels.sh           # versions: those of the project's test environment (.venv), else latest
#   PYTHON=/path/to/python bash benchmarks/gpu_wheels.sh
#   GPU_WHEELS_PYTHON_VERSION=3.11 GPU_WHEELS_DIR=/tmp/whl311 bash benchmarks/gpu_wheels.sh  # a rehearsal here
#
# Then send .whl with the run (the device tool's carry: [".whl"]); the wheels are a few MB.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET_PYTHON=${GPU_WHEELS_PYTHON_VERSION:-3.12}  # the GPU machine's python3 is 3.12.3
DIR=${GPU_WHEELS_DIR:-.whl}
# What the package, its tests and the benchmarks import beyond the machine's torch stack, with what those need
# that a Python image without them would lack (pytest: pluggy, iniconfig; hypothesis: sortedcontainers).
NAMES=(timm hypothesis sortedcontainers pytest pluggy iniconfig PyYAML tqdm)

specs=()
for name in "${NAMES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) || version=
    specs+=("$name${version:+==$version}")
done
echo "fetching for CPython $TARGET_PYTHON, x86-64, into $DIR: ${specs[*]}"

rm -rf "$DIR"  # one version of each: two wheels of one distribution stop pip's whole install
mkdir -p "$DIR"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${specs[@]}"
ls -1 "$DIR"
du -sh "$DIR"
