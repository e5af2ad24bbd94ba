#!/usr/bin/env bash
# E3: early scoring. Rank agreement (Spearman, per layer) between scores of the epoch-1 checkpoint (50.81%) and
# of the final one (85.58%) for sfm_entropy (filter ranks) and AFIE (its layer scores and the allocation it
# gives); then the FINAL model pruned by the epoch-1 SFM scores against the final SFM scores (E1's run), the same
# uniform plan and fine-tuning. TAG / PARAMS_<criterion> (common.sh): a re-run under new keys and file names.
source "$(dirname "$0")/common.sh"
for c in sfm_entropy afie; do
    score "$CKPT_EARLY" "$c" "$OUT/scores_epoch1_$c$TAG.csv"
    score "$CKPT" "$c" "$OUT/scores_final_$c$TAG.csv"
done
# the AFIE allocation computed on each checkpoint (inner criterion L1, as in E2)
pk plan --checkpoint "$CKPT_EARLY" --preset afie --target "$TARGET" --criterion l1 \
    --out "$OUT/plan_afie_epoch1_l1$TAG.json" > "$OUT/plan_afie_epoch1_l1$TAG.log"
pk plan --checkpoint "$CKPT" --preset afie --target "$TARGET" --criterion l1 \
    --out "$OUT/plan_afie_l1$TAG.json" > "$OUT/plan_afie_l1$TAG.log"
$NICE "$PY" experiments/rank_agreement.py \
    --pair sfm_entropy "$OUT/scores_epoch1_sfm_entropy$TAG.csv" "$OUT/scores_final_sfm_entropy$TAG.csv" \
    --pair afie "$OUT/scores_epoch1_afie$TAG.csv" "$OUT/scores_final_afie$TAG.csv" \
    --plans "$OUT/plan_afie_epoch1_l1$TAG.json" "$OUT/plan_afie_l1$TAG.json" \
    --out "$OUT/e3_rank_agreement$TAG.csv" --summary "$OUT/e3_summary$TAG.json"
# final model, uniform plan, filters chosen by epoch-1 SFM scores
uniform_plan sfm_entropy
P="$OUT/plan_uniform_sfm_entropy$TAG.json"
prune_ft "e1_sfm_entropy$TAG" E1 "$P" "$OUT/scores_final_sfm_entropy$TAG.csv" "uniform, sfm_entropy"
prune_ft "e3_sfm_entropy_epoch1$TAG" E3 "$P" "$OUT/scores_epoch1_sfm_entropy$TAG.csv" \
    "uniform, sfm_entropy scored at epoch 1, applied to the final model"
