#!/usr/bin/env bash
# Every CPU-scale experiment in sequence (one training at a time), then the tables. Re-runnable: finished runs
# (listed in experiments/out/runs.tsv with a fine-tuned accuracy) and existing score CSVs are skipped.
set -euo pipefail
D="$(cd "$(dirname "$0")" && pwd)"
CRITERIA="l1 sfm_entropy" bash "$D/e1_criteria.sh"   # the runs E2-E4 compare against, first
bash "$D/e2_allocation.sh"
bash "$D/e3_early.sh"
bash "$D/e4_doconv.sh"
bash "$D/e1_criteria.sh"                             # the other criteria
CRITERIA=linear_ensembles bash "$D/e1_criteria.sh"  # last: ~10 min of scoring (its budget_s=600) on 2 CPU cores
bash "$D/issue12.sh"                                # the rows issue 12 changed, re-run beside the old ones (_v2)
"${PY:-$D/../.venv/bin/python}" "$D/tables.py"
