#!/usr/bin/env bash
# The prepared GPU check (issues 11, 24): on a machine with a CUDA GPU, run the CUDA-marked tests, then the mixer,
# engine and attention-cache benchmarks on CUDA, and print one summary table after the benchmarks' own tables.
# Installs nothing from a registry: it runs the machine's python3 (when that imports torch) with PYTHONPATH=src,
# and installs only the wheels in .whl/ (made here by benchmarks/gpu_wheels.sh) that the machine lacks.
# Time: at most GPU_CHECK_BUDGET seconds (default 480 = 8 minutes) for everything; set-up and each step have their
# own limit inside it, and a step that no longer fits is skipped. The summary prints whatever fails.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (BENCHMARKS.md: how, with the device tool)
#   bash benchmarks/gpu_check.sh --dry-run    # anywhere (or GPU_CHECK_DRY=1): the same set-up and every step
#                                             # that needs no CUDA; the CUDA steps report "skipped: no GPU"
#
# Logs: $GPU_CHECK_LOGS, else $OUT/gpu_check when OUT is set (the device tool brings $OUT back), else
# runs/gpu_check-<time>; one file per step and summary.md (7 files). Other settings: GPU_CHECK_PYTHON (the
# interpreter), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_SITE (where wheels install, default /tmp/site).
set -uo pipefail  # no -e: a failing step is recorded, the next one runs, and the summary always prints

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DRY=${GPU_CHECK_DRY:-0}
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $arg (use --dry-run or --help)" >&2; exit 2 ;;
    esac
done
[ "$DRY" = 0 ] || DRY=1
export PYTHONUNBUFFERED=1
# Every limit is multiplied by SCALE: 1 on the GPU machine (16 idle cores, a lease to protect); a dry run shares a
# small CPU machine with other work, where the same CPU steps can take several times longer.
SCALE=${GPU_CHECK_TIME_SCALE:-$([ "$DRY" = 1 ] && echo 4 || echo 1)}
BUDGET=$(( ${GPU_CHECK_BUDGET:-480} * SCALE ))
START=$(date +%s)
LOGS=${GPU_CHECK_LOGS:-${OUT:+$OUT/gpu_check}}
LOGS=${LOGS:-$ROOT/runs/gpu_check-$(date -u +%Y%m%dT%H%M%S)}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
mkdir -p "$LOGS"
ROWS=()
FAILED=0
CUDA=0
SETUP_OK=0
ENV_LINES="python: not chosen"

# The benchmarks' command lines, once: the preflight parses them on any machine, the CUDA steps run them.
MIXERS=(benchmarks/mixers.py --device cuda --rounds 10 --calls 5)
ENGINE=(benchmarks/engine.py --device cuda --model resnet18 --batch-size 128 --amp bf16 --channels-last
        --rounds 10 --steps 20 --images 4096 --workers 8 --threads 4)
CACHE=(benchmarks/attention_cache.py --device cuda --model resnet18 --extractor resnet152 --image-size 224
       --rounds 13 --build-images 512 --build-rounds 3)

elapsed() { echo $(( $(date +%s) - START )); }

summary() {
    local gpu
    gpu=$(grep -m1 '^GPU:' <<<"$ENV_LINES" | cut -c6-) || true
    {
        echo
        echo "## GPU check$([ "$DRY" = 1 ] && echo ' (dry run)'), $(date -u '+%Y-%m-%d %H:%M UTC'), ${gpu:-GPU unknown}"
        echo '```'
        echo "$ENV_LINES"
        echo '```'
        echo "| step | status | seconds | headline |"
        echo "|---|---|---:|---|"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "total $(elapsed) s of a ${BUDGET} s budget; logs: $LOGS"
    } | tee "$LOGS/summary.md"
}
trap 'summary; exit "$FAILED"' EXIT
trap 'ROWS+=("| (interrupted) | FAILED (signal) | $(elapsed) | the check was stopped |"); FAILED=1; exit' INT TERM

row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }

# step NAME LIMIT_S NEEDS PATTERN COMMAND...: run COMMAND (NEEDS: cpu or cuda) under min(LIMIT_S, budget left),
# show and keep its output, and add a summary row with its status, seconds and the last output line matching
# PATTERN (the step's headline figure).
step() {
    local name=$1 limit=$2 needs=$3 pattern=$4
    shift 4
    local log="$LOGS/$name.log" left=$(( BUDGET - $(elapsed) )) start status rc headline
    limit=$(( limit * SCALE ))
    if [ "$SETUP_OK" = 0 ]; then row "$name" "skipped: set-up failed" 0 "n/a"; return; fi
    if [ "$needs" = cuda ] && [ "$CUDA" = 0 ]; then row "$name" "skipped: no GPU" 0 "n/a"; return; fi
    if [ "$left" -lt 10 ]; then row "$name" "skipped: ${BUDGET} s budget spent" 0 "n/a"; FAILED=1; return; fi
    [ "$limit" -le "$left" ] || limit=$left
    echo; echo "=== $name (limit ${limit} s): $*"
    start=$(date +%s)
    if timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"; then
        status=ok
    else
        rc=$?
        status="FAILED (rc $rc)"
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="FAILED (over its ${limit} s limit)"; fi
        FAILED=1
    fi
    headline=$(grep -E "$pattern" "$log" | tail -n 1 | tr '|' '/' | cut -c1-160) || true
    row "$name" "$status" $(( $(date +%s) - start )) "${headline:-n/a}"
}

# ---------------------------------------------------------------- set-up (SETUP_LIMIT s at most, all of it)
SETUP_LIMIT=$(( 75 * SCALE ))
SETUP_START=$(date +%s)
# within COMMAND...: run COMMAND under what is left of the set-up's limit (it fails at once when none is).
within() {
    local left=$(( SETUP_LIMIT - ($(date +%s) - SETUP_START) ))
    if [ "$left" -le 0 ]; then echo "set-up over its ${SETUP_LIMIT} s limit before: $*"; return 124; fi
    timeout --kill-after=5 "$left" "$@"
}

setup() {
    local pick note chosen
    if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
        PY=$GPU_CHECK_PYTHON pick="GPU_CHECK_PYTHON"
    elif within python3 -c 'import torch' 2>/dev/null; then
        PY=$(command -v python3) pick="python3, which imports torch"
    elif [ -x .venv/bin/python ]; then
        PY=$ROOT/.venv/bin/python pick="the project's .venv: python3 does not import torch"
    else
        echo "no interpreter with torch: python3 does not import it and there is no .venv (set GPU_CHECK_PYTHON)"
        return 1
    fi
    echo "interpreter: $PY ($pick)"
    if [ "$pick" != "python3, which imports torch" ]; then
        within "$PY" -c 'import torch' || { echo "$PY does not import torch"; return 1; }
    fi
    export PYTHONPATH=$ROOT/src
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        chosen=$(within "$PY" benchmarks/gpu_env.py wheels "$WHEELS") || { echo "could not choose the wheels"; return 1; }
        if [ -n "$chosen" ]; then
            # shellcheck disable=SC2086  # one path per line, no spaces (pip's wheel names)
            within "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" $chosen || { echo "installing the wheels failed"; return 1; }
            echo "installed into $SITE: $(echo $chosen | xargs -n1 basename | tr '\n' ' ')"
        fi
        export PYTHONPATH=$ROOT/src:$SITE
    else
        echo "no wheels in $WHEELS: the machine's packages are used as they are"
    fi
    note=$(within "$PY" benchmarks/gpu_env.py versions) || note="versions: unknown (the probe failed or timed out)"
    ENV_LINES=$note
    echo "$ENV_LINES"
    # versions prints "GPU: <name>, ..." only when torch.cuda.is_available(); a dry run never runs CUDA steps.
    if [ "$DRY" = 0 ] && grep -q '^GPU: ' <<<"$ENV_LINES" && ! grep -qE '^GPU: (none|unknown)' <<<"$ENV_LINES"; then
        CUDA=1
    fi
}

echo "=== set-up (limit ${SETUP_LIMIT} s; dry run: $([ "$DRY" = 1 ] && echo yes || echo no); logs: $LOGS)"
setup > >(tee "$LOGS/setup.log") 2>&1  # in this shell (PY, PYTHONPATH, CUDA stay set), shown as it goes
SETUP_RC=$?
wait $!  # tee has written everything
if [ "$SETUP_RC" -eq 0 ]; then
    SETUP_OK=1
    row set-up ok $(( $(date +%s) - SETUP_START )) "$(grep -m1 '^torch' <<<"$ENV_LINES" | cut -d' ' -f1-2 || true)"
else
    FAILED=1
    row set-up "FAILED (rc $SETUP_RC)" $(( $(date +%s) - SETUP_START )) "$(tail -n 1 "$LOGS/setup.log" | tr '|' '/')"
fi

# ---------------------------------------------------------------- steps (limits sum to 480 s with set-up's 75)
step preflight 40 cpu "^preflight|collected|error" \
    "$PY" benchmarks/gpu_env.py preflight "${MIXERS[@]}" ";" "${ENGINE[@]}" ";" "${CACHE[@]}" -- -m cuda tests
step cuda-tests 95 cuda "passed|failed|skipped|error" \
    "$PY" -m pytest -q -p no:cacheprovider -m cuda tests
step mixers 45 cuda "AttentiveCutMix" "$PY" "${MIXERS[@]}"
step engine 125 cuda "^targets" "$PY" "${ENGINE[@]}"
step attention-cache 100 cuda "^targets" "$PY" "${CACHE[@]}"

if [ "$DRY" = 0 ] && [ "$SETUP_OK" = 1 ] && [ "$CUDA" = 0 ]; then
    echo "no CUDA device here: nothing was checked on a GPU (use --dry-run on a machine without one)"
    FAILED=1
fi
exit "$FAILED"
