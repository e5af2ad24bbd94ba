#!/usr/bin/env bash
# E1: criteria at one budget (CPU-scale stand-in for the VGG-16 / ResNet-56 comparison).
# The bundled ResNet-20 (85.58%), one uniform plan at -50% FLOPs (the same ratios for every criterion: the
# uniform preset does not depend on the scores; one plan file per criterion only so that each run's manifest
# names its criterion), pruned by each criterion's scores, then fine-tuned with the same schedule.
# An entry CRIT@seedN repeats CRIT's run with fine-tuning seed N (the same pruned model): a measure of the noise.
# TAG / PARAMS_<criterion> (common.sh): a re-run under new keys and file names, with chosen parameters.
source "$(dirname "$0")/common.sh"
CRITERIA="${CRITERIA:-l1 sfm_entropy random information l1@seed1 fpgm hrank chip}"   # linear_ensembles: see README
for entry in $CRITERIA; do
    c="${entry%@*}"; seed=0; key="e1_$c$TAG"
    if [[ "$entry" == *@seed* ]]; then seed="${entry#*@seed}"; key="e1_${c}_seed$seed$TAG"; fi
    score "$CKPT" "$c" "$OUT/scores_final_$c$TAG.csv"
    uniform_plan "$c"
    prune_ft "$key" E1 "$OUT/plan_uniform_$c$TAG.json" "$OUT/scores_final_$c$TAG.csv" \
        "uniform, $c, fine-tuning seed $seed" --seed "$seed"
done
