#!/usr/bin/env bash
# Does a searched allocation beat the presets' at the same budget? (the search preset, prunekit.pruning.search)
#
# 1. FLOPs: ResNet-20 at -$TARGET FLOPs, filters chosen by l1 in every case; the per-group ratios from the search
#    (seeds $SEEDS, each searched with its own seed, the presets' plans and the sensitivity curves as its starts)
#    against uniform, sensitivity and AFIE. Every plan pruned (BatchNorm recalibrated) and fine-tuned with
#    `finetune`'s defaults (30 epochs on every training image, distilled from the unpruned model), once per seed.
# 2. Latency: the search by latency (-$LAT_TARGET of ONNX Runtime's batch-1 latency, as the latency model predicts
#    it) against uniform by FLOPs at the same *measured* latency: the uniform FLOPs targets of $LATENCY_GRID are
#    pruned and timed (no accuracy, no fine-tuning), and the target whose measured latency matches the searched run's
#    is interpolated; both then fine-tuned per seed as above.
#
# Toy dry run (minutes, not the result):
#   OUT=/tmp/sa OUT_RUNS=/tmp/sa/runs SEEDS=0 CANDIDATES=3 SENS_N=100 SENS_RATIOS=0.5 TEST_N=100 ROUND_TO=16 \
#     LATENCY_GRID="0.3 0.5" FT_ARGS="--epochs 1 --subset 256 --test-subset 100" bash experiments/search_allocation.sh
export RECALIBRATE="${RECALIBRATE:-1}"              # prunekit's default: recalibrated before judging and fine-tuning
export OUT="${OUT:-experiments/out/search_allocation}"
export RUNS="${OUT_RUNS:-experiments/runs_search}"
source "$(dirname "$0")/common.sh"
C=l1
SEEDS="${SEEDS:-0 1 2}"
CANDIDATES="${CANDIDATES:-48}"                      # the search's stopping rule (reproducible from its seed)
SEARCH_SECONDS="${SEARCH_SECONDS:-3600}"            # its outer time limit: generous, so the count decides
SENS_N="${SENS_N:-1000}"; SENS_RATIOS="${SENS_RATIOS:-0.1 0.3 0.5 0.7 0.9}"
LAT_TARGET="${LAT_TARGET:-0.4}"; RUNTIME="${RUNTIME:-onnxruntime}"; BATCH="${BATCH:-1}"
LATENCY_GRID="${LATENCY_GRID:-0.3 0.35 0.4 0.45 0.5 0.55 0.6 0.65 0.7}"
ROUND_TO="${ROUND_TO:-1}"
read -r -a FT <<< "${FT_ARGS:-}"                    # empty: finetune's defaults
SCORES="$OUT/scores_final_$C.csv"
SENS="$OUT/sensitivity_$C.csv"

score "$CKPT" "$C" "$SCORES"
if [[ ! -s "$SENS" ]]; then
    timed "sensitivity:$C" pk sensitivity --checkpoint "$CKPT" --criterion "$C" --scores "$SCORES" --n "$SENS_N" \
        --ratios $SENS_RATIOS --round-to "$ROUND_TO" --device "$DEVICE" --threads "$THREADS" "${RECAL[@]}" --out "$SENS"
fi

plan() {  # plan NAME ARGS...: $OUT/plan_NAME.json (its printed summary in .log), once
    local name="$1"; shift
    [[ -s "$OUT/plan_$name.json" ]] && return
    timed "plan:$name" pk plan --checkpoint "$CKPT" --criterion "$C" --scores "$SCORES" --round-to "$ROUND_TO" \
        --device "$DEVICE" --threads "$THREADS" --out "$OUT/plan_$name.json" "$@" | tail -n 1 > "$OUT/plan_$name.log"
}

prune_ft_seed() {  # prune_ft_seed KEY PLAN SEED NOTE: prune (once), then fine-tune with seed SEED (once)
    local key="$1" plan="$2" seed="$3" note="$4" run
    run="$(run_of "$key")"
    if [[ -z "$run" || ! -f "$run/manifest.json" ]]; then
        timed "prune:$key" pk prune --checkpoint "$CKPT" --plan "$plan" --scores "$SCORES" --n "$TEST_N" --runs "$RUNS" \
            --device "$DEVICE" --threads "$THREADS" --repeat 10 "${RECAL[@]}" | tail -n 1 > "$OUT/prune_$key.json"
        run="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run"])' "$OUT/prune_$key.json")"
        echo -e "$key\tsearch_allocation\t$run\t$note" >> "$RUN_INDEX"
    fi
    if finetuned "$run"; then echo "have $key ($run)"; return; fi
    timed "finetune:$key" pk finetune --run "$run" --seed "$seed" --test-subset "$TEST_N" --device "$DEVICE" \
        --threads "$THREADS" "${FT[@]}"
}

# 1. FLOPs budget
plan uniform --preset uniform --target "$TARGET"
plan afie --preset afie --target "$TARGET"
plan sensitivity --preset sensitivity --sensitivity "$SENS" --target "$TARGET"
for s in $SEEDS; do
    plan "search_s$s" --preset search --target "$TARGET" --sensitivity "$SENS" --data cifar10 --seed "$s" \
        --candidates "$CANDIDATES" --seconds "$SEARCH_SECONDS"
done
for s in $SEEDS; do
    for a in uniform afie sensitivity; do prune_ft_seed "flops_${a}_s$s" "$OUT/plan_$a.json" "$s" "$a, seed $s"; done
    prune_ft_seed "flops_search_s$s" "$OUT/plan_search_s$s.json" "$s" "search (seed $s), seed $s"
done

# 2. Latency budget: the search by latency, then uniform by FLOPs at the latency it measured
for s in $SEEDS; do
    plan "latency_search_s$s" --preset search --by latency --runtime "$RUNTIME" --batch "$BATCH" --target "$LAT_TARGET" \
        --sensitivity "$SENS" --data cifar10 --seed "$s" --candidates "$CANDIDATES" --seconds "$SEARCH_SECONDS"
    prune_ft_seed "latency_search_s$s" "$OUT/plan_latency_search_s$s.json" "$s" "search by latency (seed $s), seed $s"
done
PROBE_RUNS="$OUT/latency_probe_runs"                 # uniform FLOPs targets, pruned and timed only
for t in $LATENCY_GRID; do
    plan "probe_uniform_$t" --preset uniform --target "$t"
    if [[ ! -s "$OUT/probe_uniform_$t.json" ]]; then
        pk prune --checkpoint "$CKPT" --plan "$OUT/plan_probe_uniform_$t.json" --scores "$SCORES" --n 0 \
            --no-recalibrate --runs "$PROBE_RUNS" --runtimes "$RUNTIME" --repeat 20 --device "$DEVICE" \
            --threads "$THREADS" | tail -n 1 > "$OUT/probe_uniform_$t.json"
    fi
done
MATCHED="$("$PY" - "$OUT" "$RUNTIME" "$BATCH" "$SEEDS" $LATENCY_GRID <<'PY'
import json, sys
import numpy as np
from prunekit.runs.runtimes import get_runtime
out, runtime, batch, seeds, grid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
key = get_runtime(runtime).latency_key
def after(run):
    return json.load(open(f"{run}/manifest.json"))["after"][key][batch]
searched = [json.load(open(f"{r}/manifest.json"))["latency_budget"]["measured_ms"] for r in
            (json.load(open(f"{out}/prune_latency_search_s{s}.json"))["run"] for s in seeds)]
probe = sorted((after(json.load(open(f"{out}/probe_uniform_{t}.json"))["run"]), float(t)) for t in grid)
ms, targets = zip(*probe)
if not ms[0] <= np.mean(searched) <= ms[-1]:
    print(f"warning: the searched runs' {np.mean(searched):.3f} ms is outside the grid's {ms[0]:.3f}-{ms[-1]:.3f} ms: "
          "the nearest grid target is used; widen LATENCY_GRID", file=sys.stderr)
print(round(float(np.interp(np.mean(searched), ms, targets)), 3))  # uniform's target at the searched latency
PY
)"
echo "uniform by FLOPs at the searched runs' measured latency: --target $MATCHED"
plan "latency_uniform_matched" --preset uniform --target "$MATCHED"
for s in $SEEDS; do
    prune_ft_seed "latency_uniform_s$s" "$OUT/plan_latency_uniform_matched.json" "$s" \
        "uniform by FLOPs at the searched latency (target $MATCHED), seed $s"
done
"$PY" - "$RUN_INDEX" > "$OUT/table.md" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
print("| run key | allocation | FLOPs | ONNX b1 ms | recalibrated | fine-tuned |\n|---|---|---|---|---|---|")
for key, _, run, note in rows:
    m = json.load(open(f"{run}/manifest.json"))
    a = m.get("after") or {}
    lat = (a.get("latency_ms_onnxruntime") or {}).get("1")
    rec = ((m.get("accuracy") or {}).get("recalibrated") or {}).get("accuracy")
    ft = (m.get("finetune") or {}).get("accuracy")
    print(f"| {key} | {note} | {a.get('flops')} | {lat} | {rec} | {ft} |")
PY
cat "$OUT/table.md"
