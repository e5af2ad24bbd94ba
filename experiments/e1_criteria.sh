#!/usr/bin/env bash
# E1: criteria at one budget (CPU-scale stand-in for the VGG-16 / ResNet-56 comparison).
# The bundled ResNet-20 (85.58%), one uniform plan at -50% FLOPs (the same ratios for every criterion: the
# uniform preset does not depend on the scores; one plan file per criterion only so that each run's manifest
# names its criterion), pruned by each criterion's scores, then fine-tuned with the same schedule.
# An entry CRIT@seedN repeats CRIT's run with fine-tuning seed N (the same pruned model): a measure of the noise.
source "$(dirname "$0")/common.sh"
CRITERIA="${CRITERIA:-l1 sfm_entropy random information l1@seed1 fpgm hrank chip}"   # linear_ensembles: see README
for entry in $CRITERIA; do
    c="${entry%@*}"; seed=0; key="e1_$c"
    if [[ "$entry" == *@seed* ]]; then seed="${entry#*@seed}"; key="e1_${c}_seed$seed"; fi
    score "$CKPT" "$c" "$OUT/scores_final_$c.csv"
    pk plan --checkpoint "$CKPT" --preset uniform --target "$TARGET" --criterion "$c" \
        --out "$OUT/plan_uniform_$c.json" > "$OUT/plan_uniform_$c.log"
    prune_ft "$key" E1 "$OUT/plan_uniform_$c.json" "$OUT/scores_final_$c.csv" "uniform, $c, fine-tuning seed $seed" \
        --seed "$seed"
done
