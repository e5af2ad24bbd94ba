#!/usr/bin/env bash
# Do the revised criteria change the results? The rows whose criterion was revised, with the same recipe (common.sh), under the key / file
# suffix TAG=_v2 so that the old runs, scores and rows stay beside them for comparison:
#   hrank, chip: a residual block's last conv read after the add and its ReLU (was: its BN output);
#   taylor: form=cvpr2019 (new default; not in E1 before); sfm_entropy: estimator=pooled, reads=post_add (was gap,
#   BN output). E1 (those four), E3 (sfm_entropy epoch 1 vs final, and the run pruned by epoch-1 scores), E4
#   (DO-Conv); two extra E1 rows (below); then each criterion's ranking reliability (criteria_reliability.py) and
#   the tables.
# The parameters are pinned here (not left to the defaults), so that _v2 keeps meaning this even if a default moves.
export TAG="${TAG:-_v2}" TAG_NOTE="${TAG_NOTE:-, revised defaults}"
export PARAMS_sfm_entropy="${PARAMS_sfm_entropy:-estimator=pooled bins=32 reads=post_add}"
export PARAMS_taylor="${PARAMS_taylor:-form=cvpr2019}"
source "$(dirname "$0")/common.sh"
CRITERIA="sfm_entropy hrank chip taylor" bash "$HERE/criteria_at_one_budget.sh"
bash "$HERE/early_scoring.sh"
bash "$HERE/doconv_finetuning.sh"
# Two extra rows: the new HRank run fine-tuned again with seed 1 (the same pruned model: its change against the old
# run is the largest), and taylor in its old default form (the two forms' rankings differ most in reliability)
CRITERIA="hrank@seed1" bash "$HERE/criteria_at_one_budget.sh"
TAG="${TAG}_iclr2017" TAG_NOTE=", form=iclr2017 on the revised code" PARAMS_taylor="form=iclr2017" CRITERIA=taylor \
    bash "$HERE/criteria_at_one_budget.sh"
if [[ ! -s "$OUT/criteria_reliability.json" ]]; then
    timed "reliability:criteria" $NICE "$PY" "$HERE/criteria_reliability.py" --out "$OUT/criteria_reliability.json" \
        > "$OUT/criteria_reliability.log"
fi
"$PY" "$HERE/tables.py" > /dev/null
