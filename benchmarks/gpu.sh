#!/usr/bin/env bash
# The GPU check: on one GPU, in under 9 minutes, everything into one folder OUT:
#   env.json                      the GPU (nvidia-smi -L, or "none"), torch / CUDA / cuDNN versions
#   cuda-tests.xml, .log          pytest -m cuda tests/test_cuda.py, every test required to run (none skipped)
#   train/, train.json            ResNet-20 trained on the CIFAR-10 copy (target >= 91%), timed
#   finetune_throughput.json      the device pipeline against the DataLoader on CUDA (target >= 2x)
#   latency_speedup.json          pruned vs original latency on CUDA
#   summary.json                  {device, dry, steps: {name: {ok, seconds}}, accuracy, train_seconds, ...}
#   logs/<step>.log               each step's output
# A failed step is recorded (ok=false) and the others still run; the script exits 1 at the end if any failed.
# Not DRY, the benchmarks' JSON is also copied to benchmarks/results/*_cuda.json and the trained model to
# assets/resnet20_cifar10_gpu.safetensors (never over the bundled default: the summary prints how to promote it).
#
#   bash benchmarks/gpu.sh              # or `make gpu`
#   DRY=1 bash benchmarks/gpu.sh        # the same steps on the CPU at toy size (tests/test_gpu_script.py)
#
# Variables: OUT (default artifacts/gpu-<UTC time>), DATA (the folder holding the CIFAR-10 copy; default
# $PRUNEKIT_DATA), PYTHON (default .venv/bin/python when there, else python3), the recipe EPOCHS BATCH LR WARMUP
# SMOOTHING SEED, STEPS (some of: env cuda_tests train throughput latency copy_model; default all). Needs no
# network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STARTED=$EPOCHREALTIME
DRY=${DRY:-0}
[[ $DRY == 0 || $DRY == 1 ]] || { echo "DRY must be 0 or 1, got '$DRY'" >&2; exit 2; }
OUT=${OUT:-artifacts/gpu-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/logs"
OUT="$(cd "$OUT" && pwd)"
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DATA=${DATA:-${PRUNEKIT_DATA:-}}
if [[ -n $DATA ]]; then export PRUNEKIT_DATA="$DATA"; fi
export PYTHONUNBUFFERED=1

# The recipe (ResNet-20 to >= 91% in about 5 minutes of an H100; assets/README.md says why). DRY: 1 epoch of
# 256 images on the CPU, only to run every step.
if [[ $DRY == 1 ]]; then
    DEVICE=cpu EPOCHS=${EPOCHS:-1} BATCH=${BATCH:-64} SUBSET=256 TEST_SUBSET=256
    THROUGHPUT_ARGS=(--models resnet20 --steps 1 --rounds 1 --images 256 --workers 0)
    LATENCY_ARGS=(--repeat 1 --rounds 1 --rows vgg16_bn resnet56)
else
    DEVICE=cuda EPOCHS=${EPOCHS:-150} BATCH=${BATCH:-512} SUBSET=0 TEST_SUBSET=0
    THROUGHPUT_ARGS=()
    LATENCY_ARGS=(--rows vgg16_bn resnet56)  # the round_to rows are about CPU vector widths
fi
LR=${LR:-0.4} WARMUP=${WARMUP:-3} SMOOTHING=${SMOOTHING:-0.1} SEED=${SEED:-0}
ALL_STEPS="env cuda_tests train throughput latency"
[[ $DRY == 1 ]] || ALL_STEPS+=" copy_model"
STEPS=${STEPS:-$ALL_STEPS}
for name in $STEPS; do
    [[ " $ALL_STEPS " == *" $name "* ]] || { echo "STEPS: unknown step '$name' (steps: $ALL_STEPS)" >&2; exit 2; }
done
: >"$OUT/steps.tsv"

# run_step NAME OUTPUT LOG COMMAND...: COMMAND's output into LOG; ok when it exits 0 and OUTPUT (a file) is there.
run_step() {
    local name=$1 output=$2 log=$3 rc=0 t0=$EPOCHREALTIME
    shift 3
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "[gpu.sh] $name ..."
    "$@" >"$log" 2>&1 || rc=$?
    if [[ $rc == 0 && ! -s $output ]]; then
        echo "the step exited 0 but did not write $output" >>"$log"
        rc=98
    fi
    local seconds ok=true
    seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    [[ $rc == 0 ]] || ok=false
    printf '%s\t%s\t%s\t%s\n' "$name" "$ok" "$seconds" "$rc" >>"$OUT/steps.tsv"
    echo "[gpu.sh] $name: $([[ $ok == true ]] && echo ok || echo "FAILED (exit $rc, see $log)") in ${seconds}s"
}

cuda_tests() {
    local require=()
    [[ $DRY == 1 ]] || require=(env PRUNEKIT_REQUIRE_CUDA=1)
    "${require[@]}" "$PYTHON" -m pytest -m cuda tests/test_cuda.py -rs -p no:cacheprovider \
        --junitxml "$OUT/cuda-tests.xml"
    [[ $DRY == 1 ]] || "$PYTHON" benchmarks/gpu_report.py junit "$OUT/cuda-tests.xml"  # none skipped
}

train() {
    "$PYTHON" -m prunekit train --model resnet20 --data cifar10 ${DATA:+--data-root "$DATA"} --device "$DEVICE" \
        --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --schedule cosine --warmup-epochs "$WARMUP" \
        --label-smoothing "$SMOOTHING" --seed "$SEED" --subset "$SUBSET" --test-subset "$TEST_SUBSET" \
        --no-resume --out "$OUT/train"
}

# benchmark SCRIPT ARGS...: benchmarks/SCRIPT.py on $DEVICE into OUT (and, not DRY, benchmarks/results/*_cuda.json)
benchmark() {
    local name=$1
    shift
    "$PYTHON" "benchmarks/$name.py" --device "$DEVICE" "$@" --out "$OUT/$name.json"
    [[ $DRY == 1 ]] || cp "$OUT/$name.json" "benchmarks/results/${name}_cuda.json"
}

run_step env "$OUT/env.json" "$OUT/logs/env.log" "$PYTHON" benchmarks/gpu_report.py env "$OUT/env.json" --dry "$DRY"
run_step cuda_tests "$OUT/cuda-tests.xml" "$OUT/cuda-tests.log" cuda_tests
run_step train "$OUT/train/model.safetensors" "$OUT/logs/train.log" train
run_step throughput "$OUT/finetune_throughput.json" "$OUT/logs/throughput.log" \
    benchmark finetune_throughput ${DATA:+--data-root "$DATA"} "${THROUGHPUT_ARGS[@]}"
run_step latency "$OUT/latency_speedup.json" "$OUT/logs/latency.log" benchmark latency_speedup "${LATENCY_ARGS[@]}"
run_step copy_model assets/resnet20_cifar10_gpu.safetensors "$OUT/logs/copy_model.log" \
    cp -v "$OUT/train/model.safetensors" assets/resnet20_cifar10_gpu.safetensors

TOTAL=$(awk -v a="$STARTED" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
exec "$PYTHON" benchmarks/gpu_report.py summary "$OUT" --dry "$DRY" --device "$DEVICE" --total-seconds "$TOTAL"
