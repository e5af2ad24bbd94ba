#!/usr/bin/env bash
# Every CPU-scale experiment in sequence (one training at a time), then the tables. Re-runnable: finished runs
# (listed in experiments/out/runs.tsv with a fine-tuned accuracy) and existing score CSVs are skipped.
set -euo pipefail
D="$(cd "$(dirname "$0")" && pwd)"
CRITERIA="l1 sfm_entropy" bash "$D/criteria_at_one_budget.sh"   # the runs E2-E4 compare against, first
bash "$D/allocation.sh"
bash "$D/early_scoring.sh"
bash "$D/doconv_finetuning.sh"
bash "$D/criteria_at_one_budget.sh"                             # the other criteria
CRITERIA=linear_ensembles bash "$D/criteria_at_one_budget.sh"  # last: ~10 min of scoring (its budget_s=600) on 2 CPU cores
bash "$D/revised_criteria.sh"                                # the rows of the revised criteria, re-run beside the old ones (_v2)
"${PY:-$D/../.venv/bin/python}" "$D/tables.py"
