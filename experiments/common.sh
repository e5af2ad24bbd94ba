# Shared settings and helpers for the CPU-scale recipes (sourced by criteria_at_one_budget.sh, allocation.sh, early_scoring.sh, doconv_finetuning.sh). Override any setting from the
# environment, e.g. `EPOCHS=30 SUBSET=0 DEVICE=cuda bash experiments/criteria_at_one_budget.sh` for a longer schedule.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
export PRUNEKIT_DATA="${PRUNEKIT_DATA:-/work/shared/data}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
THREADS="${THREADS:-2}"
NICE="${NICE:-nice -n 5}"
DEVICE="${DEVICE:-cpu}"
MODEL="${MODEL:-resnet20}"
CKPT="${CKPT:-assets/resnet20_cifar10.safetensors}"          # the final checkpoint (85.58%)
CKPT_EARLY="${CKPT_EARLY:-assets/resnet20_cifar10_epoch001.safetensors}"  # epoch 1 of the same run
TARGET="${TARGET:-0.5}"          # fraction of FLOPs removed
EPOCHS="${EPOCHS:-2}"            # fine-tuning schedule, the same for every run (lr 0.01 cosine: the defaults)
SUBSET="${SUBSET:-5000}"         # training images per fine-tuning epoch (0: all 50,000)
TEST_N="${TEST_N:-10000}"        # test images for every accuracy (10000: the whole test split)
RUNS="${RUNS:-experiments/runs}" # runs root (the Compare page reads it via PRUNEKIT_RUNS)
OUT="${OUT:-experiments/out}"    # scores, plans, logs, run index
TAG="${TAG:-}"                   # suffix of every run key and score / plan file name (revised_criteria.sh: _v2), so that a
TAG_NOTE="${TAG_NOTE:-}"         # re-run sits beside the old runs and files; TAG_NOTE: appended to its runs' notes
# PARAMS_<criterion>: that criterion's parameters for `score` and `plan` (recorded in the plan and the run's
# manifest), words NAME=VALUE, e.g. PARAMS_taylor="form=iclr2017"; unset: the criterion's defaults
mkdir -p "$OUT" "$RUNS"
RUN_INDEX="$OUT/runs.tsv"        # key <TAB> experiment <TAB> run directory <TAB> note
touch "$RUN_INDEX"
TIMES="$OUT/times.tsv"           # step <TAB> wall seconds
touch "$TIMES"
# BatchNorm recalibration after pruning (prunekit's default): off here, as for every run of these
# recipes (made before it existed), so that re-runs keep the same recipe; RECALIBRATE=1 turns it on
RECALIBRATE="${RECALIBRATE:-0}"
RECAL=(); [[ "$RECALIBRATE" == 1 ]] || RECAL=(--no-recalibrate)

pk() { $NICE "$PY" -m prunekit "$@"; }

cparams() {  # cparams CRIT: "--param NAME=VALUE" for each word of $PARAMS_<CRIT>
    local var="PARAMS_$1" p
    for p in ${!var:-}; do printf -- '--param %s ' "$p"; done
}

timed() {  # timed STEP-NAME cmd...: runs cmd, appends its wall time to $TIMES
    local name="$1"; shift
    local t0; t0=$(date +%s)
    "$@"
    echo -e "$name\t$(( $(date +%s) - t0 ))" >> "$TIMES"
}

score() {  # score CKPT CRITERION OUTCSV [extra score args]
    local ck="$1" crit="$2" csv="$3"; shift 3
    if [[ -s "$csv" ]]; then echo "have $csv"; return; fi
    # shellcheck disable=SC2046  # cparams' words are meant to split
    timed "score:$(basename "$csv" .csv)" pk score --model "$MODEL" --checkpoint "$ck" --data cifar10 \
        --criterion "$crit" $(cparams "$crit") --device "$DEVICE" --out "$csv" "$@"
}

uniform_plan() {  # uniform_plan CRIT: the uniform plan at $TARGET -> $OUT/plan_uniform_CRIT$TAG.json (and .log)
    local c="$1" plan="$OUT/plan_uniform_$1$TAG"
    # shellcheck disable=SC2046
    pk plan --checkpoint "$CKPT" --preset uniform --target "$TARGET" --criterion "$c" $(cparams "$c") \
        --out "$plan.json" > "$plan.log"
}

run_of() { awk -F'\t' -v k="$1" '$1==k {print $3}' "$RUN_INDEX" | tail -n 1; }

finetuned() {  # true when run dir $1 has a finished fine-tuning with an accuracy
    [[ -n "$1" && -f "$1/manifest.json" ]] && "$PY" - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
sys.exit(0 if (m.get("finetune") or {}).get("accuracy") is not None else 1)
PY
}

prune_ft() {  # prune_ft KEY EXPERIMENT PLAN SCORES NOTE [extra finetune args]: prune (once) and fine-tune
    local key="$1" exp="$2" plan="$3" scores="$4" note="$5"; shift 5
    local run; run="$(run_of "$key")"
    if [[ -z "$run" || ! -f "$run/manifest.json" ]]; then
        local log="$OUT/prune_$key.json"
        timed "prune:$key" pk prune --checkpoint "$CKPT" --plan "$plan" --scores "$scores" --n "$TEST_N" \
            --runs "$RUNS" --device "$DEVICE" --threads "$THREADS" --repeat 3 "${RECAL[@]}" | tail -n 1 > "$log"
        run="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"])' "$log")"
        echo -e "$key\t$exp\t$run\t$note$TAG_NOTE" >> "$RUN_INDEX"
    fi
    if finetuned "$run"; then echo "have $key ($run)"; return; fi
    timed "finetune:$key" pk finetune --run "$run" --epochs "$EPOCHS" --subset "$SUBSET" --test-subset "$TEST_N" \
        --device "$DEVICE" --threads "$THREADS" "$@"
}
