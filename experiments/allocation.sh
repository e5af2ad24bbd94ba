#!/usr/bin/env bash
# E2: allocation. The same -50% FLOPs budget as E1, filters chosen by L1 inside each group, the per-group ratios
# set by the AFIE preset and by the sensitivity preset (from `sensitivity`), against E1's uniform L1 run.
source "$(dirname "$0")/common.sh"
C="${E2_CRITERION:-l1}"
SENS_N="${SENS_N:-1000}"                       # test images per sensitivity point
SENS_RATIOS="${SENS_RATIOS:-0.1 0.3 0.5 0.7 0.9}"
score "$CKPT" "$C" "$OUT/scores_final_$C.csv"
# uniform: E1's run (run it here too if E1 was not run)
pk plan --checkpoint "$CKPT" --preset uniform --target "$TARGET" --criterion "$C" \
    --out "$OUT/plan_uniform_$C.json" > "$OUT/plan_uniform_$C.log"
prune_ft "e1_$C" E1 "$OUT/plan_uniform_$C.json" "$OUT/scores_final_$C.csv" "uniform, $C"
# AFIE allocation (a layer score from the weights alone; target met in FLOPs)
pk plan --checkpoint "$CKPT" --preset afie --target "$TARGET" --criterion "$C" \
    --out "$OUT/plan_afie_$C.json" > "$OUT/plan_afie_$C.log"
prune_ft "e2_afie_$C" E2 "$OUT/plan_afie_$C.json" "$OUT/scores_final_$C.csv" "AFIE allocation, $C"
# sensitivity allocation: prune each group alone at several ratios, least sensitive groups pruned most
if [[ ! -s "$OUT/sensitivity_$C.csv" ]]; then
    timed "sensitivity:$C" pk sensitivity --checkpoint "$CKPT" --criterion "$C" --scores "$OUT/scores_final_$C.csv" \
        --n "$SENS_N" --ratios $SENS_RATIOS --device "$DEVICE" --threads "$THREADS" "${RECAL[@]}" \
        --out "$OUT/sensitivity_$C.csv"
fi
pk plan --checkpoint "$CKPT" --preset sensitivity --sensitivity "$OUT/sensitivity_$C.csv" --target "$TARGET" \
    --criterion "$C" --out "$OUT/plan_sensitivity_$C.json" > "$OUT/plan_sensitivity_$C.log"
prune_ft "e2_sensitivity_$C" E2 "$OUT/plan_sensitivity_$C.json" "$OUT/scores_final_$C.csv" "sensitivity allocation, $C"
