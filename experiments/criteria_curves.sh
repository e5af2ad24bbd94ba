#!/usr/bin/env bash
# The criteria across budgets (E1 as curves). One `python -m prunekit sweep` per criterion (uniform preset, targets of
# FLOPs removed, --n held-out test images, BN recalibration on: the default) into $SWEEP_RUNS, SWEEP_JOBS criteria
# at a time, each over the targets that have no finished point yet (re-runnable). Then criteria_curves_tables.py writes
# out/e1_curves.{json,md}. Settings: CRITERIA (default: every criterion that is not slow, minus linear_ensembles
# (slow: its own time budget), mapex (needs a box-labelled probe) and afie (a layer score: with the uniform preset
# its filters are ranked by l1, so its curve is l1's)), TARGETS, N, SWEEP_RUNS, SWEEP_JOBS [2], THREADS [1].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PY="${PY:-.venv/bin/python}"
export PRUNEKIT_DATA="${PRUNEKIT_DATA:-/work/shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export CKPT="${CKPT:-assets/resnet20_cifar10.safetensors}"
CRITERIA="${CRITERIA:-l1 random taylor hrank sfm_entropy bn_scale fpgm l2 information capacity independence grad_x_activation chip}"
export TARGETS="${TARGETS:-0.1 0.3 0.5 0.7}"
export N="${N:-2000}"
export SWEEP_RUNS="${SWEEP_RUNS:-experiments/runs_sweep}"
export THREADS="${THREADS:-1}"
export TIMES=experiments/out/criteria_curves_times.tsv
mkdir -p "$SWEEP_RUNS" experiments/out

one() {  # one CRITERION: its sweep over the targets that have no finished point yet
    local c="$1" missing t0
    missing=$("$PY" - "$SWEEP_RUNS" "$c" $TARGETS <<'PY'
import sys
from prunekit.runs.records import list_runs
df = list_runs(sys.argv[1])
ok = df[(df.criterion == sys.argv[2]) & df.sweep.notna() & df.accuracy_recalibrated.notna()] if len(df) else df
have = set() if not len(ok) else {round(float(t), 6) for t in ok.target}
print(" ".join(t for t in sys.argv[3:] if round(float(t), 6) not in have))
PY
)
    if [[ -z "$missing" ]]; then echo "have $c"; return; fi
    t0=$(date +%s)
    # shellcheck disable=SC2086
    nice -n 10 "$PY" -m prunekit sweep --checkpoint "$CKPT" --criteria "$c" --targets $missing --preset uniform \
        --n "$N" --runs "$SWEEP_RUNS" --device cpu --threads "$THREADS" >> "experiments/out/criteria_curves_$c.json"
    echo -e "$c\t$(( $(date +%s) - t0 ))" >> "$TIMES"
}
export -f one
# shellcheck disable=SC2086
printf '%s\n' $CRITERIA | xargs -P "${SWEEP_JOBS:-2}" -I{} bash -c 'one {}'
"$PY" experiments/criteria_curves_tables.py
