#!/usr/bin/env bash
# The prepared GPU check (issue 11): on a machine with a CUDA GPU, run the CUDA-marked tests, then the mixer,
# engine and attention-cache benchmarks on CUDA, and print one summary table after the benchmarks' own tables.
# Designed to finish in under 8 minutes (each step has a time limit; the sum is 7.5 minutes).
#
#   bash benchmarks/gpu_check.sh            # from anywhere; logs are kept in the folder printed at the end
set -euo pipefail

cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then  # as the README's test command
    python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test]'
fi
PY=.venv/bin/python
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this check needs a GPU")'

LOGS=$(mktemp -d -t gpu_check.XXXXXX)
ROWS=()
FAILED=0

# step NAME LIMIT_S PATTERN COMMAND...: run COMMAND under a time limit, show and keep its output, and add a summary
# row with its status, seconds and the last output line matching PATTERN (the step's headline figure).
step() {
    local name=$1 limit=$2 pattern=$3
    shift 3
    local log="$LOGS/$name.txt" start status rc headline
    echo; echo "=== $name: $*"
    start=$(date +%s)
    if timeout "$limit" "$@" 2>&1 | tee "$log"; then
        status=ok
    else
        rc=$?
        status="FAILED (rc $rc)"
        if [ "$rc" -eq 124 ]; then status="FAILED (over its ${limit} s limit)"; fi
        FAILED=1
    fi
    headline=$(grep -E "$pattern" "$log" | tail -n 1 | tr '|' '/' || true)
    ROWS+=("| $name | $status | $(( $(date +%s) - start )) | ${headline:-n/a} |")
}

step cuda-tests 120 "passed|failed|skipped" \
    "$PY" -m pytest -q -m cuda tests
step mixers 60 "AttentiveCutMix" \
    "$PY" benchmarks/mixers.py --device cuda --rounds 10 --calls 5
step engine 150 "^targets" \
    "$PY" benchmarks/engine.py --device cuda --model resnet18 --batch-size 128 --amp bf16 --channels-last \
    --rounds 10 --steps 20 --images 4096 --workers 8 --threads 4
step attention-cache 120 "^targets" \
    "$PY" benchmarks/attention_cache.py --device cuda --model resnet18 --extractor resnet152 --image-size 224 \
    --rounds 13 --build-images 512 --build-rounds 3

echo
GPU=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "/ torch", torch.__version__)')
echo "## GPU check, $(date -u +%Y-%m-%d), $GPU"
echo "| step | status | seconds | headline |"
echo "|---|---|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "full logs: $LOGS"
exit "$FAILED"
