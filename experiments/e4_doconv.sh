#!/usr/bin/env bash
# E4: DO-Conv. E1's uniform sfm_entropy pruning fine-tuned plainly (E1's run) and, in a second run pruned
# identically, with --doconv (the same schedule; the saved files hold folded plain convs).
source "$(dirname "$0")/common.sh"
score "$CKPT" sfm_entropy "$OUT/scores_final_sfm_entropy.csv"
pk plan --checkpoint "$CKPT" --preset uniform --target "$TARGET" --criterion sfm_entropy \
    --out "$OUT/plan_uniform_sfm_entropy.json" > "$OUT/plan_uniform_sfm_entropy.log"
prune_ft "e1_sfm_entropy" E1 "$OUT/plan_uniform_sfm_entropy.json" "$OUT/scores_final_sfm_entropy.csv" \
    "uniform, sfm_entropy"
prune_ft "e4_sfm_entropy_doconv" E4 "$OUT/plan_uniform_sfm_entropy.json" "$OUT/scores_final_sfm_entropy.csv" \
    "uniform, sfm_entropy, fine-tuned with DO-Conv" --doconv
