#!/usr/bin/env bash
# E4: DO-Conv. E1's uniform sfm_entropy pruning fine-tuned plainly (E1's run) and, in a second run pruned
# identically, with --doconv (the same schedule; the saved files hold folded plain convs).
# TAG / PARAMS_<criterion> (common.sh): a re-run under new keys and file names.
source "$(dirname "$0")/common.sh"
S="$OUT/scores_final_sfm_entropy$TAG.csv" P="$OUT/plan_uniform_sfm_entropy$TAG.json"
score "$CKPT" sfm_entropy "$S"
uniform_plan sfm_entropy
prune_ft "e1_sfm_entropy$TAG" E1 "$P" "$S" "uniform, sfm_entropy"
prune_ft "e4_sfm_entropy_doconv$TAG" E4 "$P" "$S" "uniform, sfm_entropy, fine-tuned with DO-Conv" --doconv
