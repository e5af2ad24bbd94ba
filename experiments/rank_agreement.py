"""E3: rank agreement between epoch-1 and final scores (CSV files written by `python -m prunekit score`).

Per layer: Spearman, Kendall and the overlap of the bottom 30% (prunekit.analysis.views.rank_agreement). A criterion that
gives one score per layer (AFIE: every filter of a layer carries the layer's score) has no within-layer ranking,
so for it the agreement is taken across layers (Spearman of the per-layer scores). --plans compares two plans'
per-group ratios (e.g. the AFIE allocation made on each checkpoint).

    python experiments/rank_agreement.py --pair sfm_entropy early.csv final.csv [--pair ...] \
        [--plans early_plan.json final_plan.json] --out e3_rank_agreement.csv --summary e3_summary.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from prunekit.analysis.views import rank_agreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "EARLY_CSV", "FINAL_CSV"), required=True)
    ap.add_argument("--plans", nargs=2, metavar=("EARLY_PLAN", "FINAL_PLAN"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    args = ap.parse_args()
    tables, summary = [], {}
    for name, early_csv, final_csv in args.pair:
        a, b = pd.read_csv(early_csv), pd.read_csv(final_csv)
        per_layer = rank_agreement(a, b)
        per_layer.insert(0, "criterion", name)
        tables.append(per_layer)
        within = a.groupby("layer")["score"].nunique().max() > 1
        entry = {"layers": int(len(per_layer)), "within_layer_ranking": bool(within)}
        if within:
            rho = per_layer["spearman"].dropna()
            entry.update(spearman_mean=float(rho.mean()), spearman_median=float(rho.median()),
                         spearman_min=float(rho.min()), spearman_max=float(rho.max()),
                         bottom30_overlap_mean=float(per_layer["overlap"].mean()))
        # across layers: one value per layer (the layer score for AFIE, the mean filter score otherwise)
        la, lb = a.groupby("layer")["score"].mean(), b.groupby("layer")["score"].mean()
        common = la.index.intersection(lb.index)
        entry["across_layers_spearman"] = float(spearmanr(la[common], lb[common]).statistic)
        summary[name] = entry
    if args.plans:
        pa, pb = (json.load(open(p))["ratios"] for p in args.plans)
        groups = sorted(set(pa) & set(pb))
        ra, rb = np.array([pa[g] for g in groups]), np.array([pb[g] for g in groups])
        summary["plans"] = {"files": args.plans, "groups": len(groups),
                            "ratio_spearman": float(spearmanr(ra, rb).statistic),
                            "max_abs_ratio_difference": float(np.abs(ra - rb).max()),
                            "ratios": {g: [round(pa[g], 4), round(pb[g], 4)] for g in groups}}
    pd.concat(tables).to_csv(args.out, index=False)
    with open(args.summary, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "ratios"} for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
