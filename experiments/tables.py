"""Read the CPU-scale runs (experiments/out/runs.tsv -> each run's manifest.json) and the E3 summary, and write
the tables: experiments/out/tables.md, and the same tables into RESULTS.md between its
`<!-- BEGIN name -->` / `<!-- END name -->` markers (the prose around them is left alone).

    .venv/bin/python experiments/tables.py
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"


def load_runs() -> pd.DataFrame:
    rows = []
    index = OUT / "runs.tsv"
    if not index.exists():
        return pd.DataFrame()
    for line in index.read_text().splitlines():
        if not line.strip():
            continue
        key, exp, run, note = (line.split("\t") + [""] * 4)[:4]
        path = ROOT / run
        if not (path / "manifest.json").exists():
            continue
        m = json.loads((path / "manifest.json").read_text())
        before, after = m.get("before") or {}, m.get("after") or {}
        acc, ft = m.get("accuracy") or {}, m.get("finetune") or {}
        epochs = ft.get("epochs") or []
        rows.append({
            "key": key, "exp": exp, "note": note, "run": m["id"], "status": m.get("status"),
            "criterion": (m.get("criterion") or {}).get("name"),
            "preset": ((m.get("plan") or {}).get("preset") or {}).get("name"),
            "ratios": (m.get("plan") or {}).get("ratios"),
            "params_before": before.get("params"), "params": after.get("params"),
            "flops_before": before.get("flops"), "flops": after.get("flops"),
            "lat64_before": (before.get("latency_ms") or {}).get("64"),
            "lat64": (after.get("latency_ms") or {}).get("64"),
            "acc_before": (acc.get("before") or {}).get("accuracy"), "n_test": (acc.get("before") or {}).get("n"),
            "acc_pruned": (acc.get("pruned") or {}).get("accuracy"),
            "acc_ft": ft.get("accuracy"), "ft_epochs": len(epochs),
            "ft_train": (ft.get("data") or {}).get("train"), "ft_test": (ft.get("data") or {}).get("test"),
            "doconv": (ft.get("config") or {}).get("doconv"),
            "ft_seconds": sum(e.get("seconds") or 0 for e in epochs),
            "ft_img_s": (sum(e.get("images_per_s") or 0 for e in epochs) / len(epochs)) if epochs else None,
        })
    df = pd.DataFrame(rows)
    return df.drop_duplicates("key", keep="last") if len(df) else df


def pct(a, b) -> str:
    return "" if a is None or b is None or pd.isna(a) or pd.isna(b) else f"{100 * (a - b) / b:+.1f}%"


def num(x, fmt="{:.2f}") -> str:
    return "—" if x is None or pd.isna(x) else fmt.format(x)


def run_table(df: pd.DataFrame, keys: list[tuple[str, str]], first: str) -> str:
    head = (f"| {first} | params | FLOPs | acc before | acc after pruning | acc after fine-tuning | "
            "change vs before | run |")
    lines = [head, "|" + "---|" * 8]
    by = df.set_index("key") if len(df) else pd.DataFrame()
    for key, label in keys:
        if key not in by.index:
            why = MISSING.get(key, "missing: not reached in the 80-minute time box")
            lines.append(f"| {label} | — | — | — | — | — | — | {why} |")
            continue
        r = by.loc[key]
        params = f"{r.params / 1e3:.1f}k ({pct(r.params, r.params_before)})"
        flops = f"{r.flops / 1e6:.1f}M ({pct(r.flops, r.flops_before)})"
        ft = num(r.acc_ft) if r.acc_ft is not None and not pd.isna(r.acc_ft) else "— (fine-tuning not finished)"
        delta = "" if r.acc_ft is None or pd.isna(r.acc_ft) else f"{r.acc_ft - r.acc_before:+.2f}"
        lines.append(f"| {label} | {params} | {flops} | {num(r.acc_before)} | {num(r.acc_pruned)} | {ft} | {delta} | "
                     f"`{r.run}` |")
    return "\n".join(lines)


E1 = [("e1_sfm_entropy", "sfm_entropy (gap)"), ("e1_l1", "l1"), ("e1_fpgm", "fpgm"), ("e1_hrank", "hrank"),
      ("e1_chip", "chip"), ("e1_information", "information (capacity + independence, sigma 1)"),
      ("e1_random", "random (seed 0)"), ("e1_linear_ensembles",
      "linear_ensembles (stopped by budget_s=600: 819 of the default 2,752 masks, log)"),
      ("e1_l1_seed1", "l1 again, fine-tuning seed 1 (same pruned model: the noise of one fine-tuning)")]
MISSING = {"e1_linear_ensembles": "left out: scoring it takes about 10 min on this CPU, beyond the time box"}
E2 = [("e1_l1", "uniform (E1's l1 run)"), ("e2_afie_l1", "AFIE allocation"),
      ("e2_sensitivity_l1", "sensitivity allocation")]
E3 = [("e1_sfm_entropy", "final model, final sfm_entropy scores (E1)"),
      ("e3_sfm_entropy_epoch1", "final model, epoch-1 sfm_entropy scores")]
E4 = [("e1_sfm_entropy", "plain fine-tuning (E1)"), ("e4_sfm_entropy_doconv", "fine-tuned with DO-Conv")]

# The re-run of the revised criteria (experiments/revised_criteria.sh): the same keys with this suffix, the same recipe.
TAG = "_v2"
POST_ADD = ("map of each residual block's last conv (9 of the 19 convs): its BN output -> after the add and its "
            "ReLU, as the published code reads it")
CHANGED = {  # criterion -> what the revision changed in it
    "sfm_entropy": "estimator `gap` -> `pooled` (a histogram of every value of the map, not of the per-image "
                   "spatial means); reads `pre_add` -> `post_add`: " + POST_ADD,
    "hrank": POST_ADD,
    "chip": POST_ADD,
    "taylor": "new row; form `cvpr2019`, the default now (per probe batch, the squared sum of activation x gradient "
              "at a gate after BN); the old default `iclr2017` was not in E1",
}
CHANGED["hrank again, fine-tuning seed 1 (extra: the same pruned model as the hrank re-run)"] = (
    "as hrank; fine-tuning seed 1 instead of 0: the noise of one fine-tuning")
CHANGED["taylor form=iclr2017 (extra: the old default form, on the revised code)"] = (
    "form `iclr2017` (per image, the absolute spatial mean of activation x gradient, averaged over images)")
# (old run's key or None, re-run's key, label): the re-run's rows beside the old ones
E1_V2 = [("e1_sfm_entropy", "e1_sfm_entropy_v2", "sfm_entropy"), ("e1_hrank", "e1_hrank_v2", "hrank"),
         ("e1_chip", "e1_chip_v2", "chip"), (None, "e1_taylor_v2", "taylor"),
         (None, "e1_hrank_seed1_v2", "hrank again, fine-tuning seed 1 (extra: the same pruned model as the hrank "
                                     "re-run)"),
         (None, "e1_taylor_v2_iclr2017", "taylor form=iclr2017 (extra: the old default form, on the revised code)")]
E3_V2 = [(k, k + TAG, label) for k, label in E3]
E4_V2 = [(k, k + TAG, label) for k, label in E4]


def arrow(old, new, fmt="{:.2f}") -> str:
    """'old -> new (+d)'; a missing side as '—'."""
    if new is None or pd.isna(new):
        return f"{num(old, fmt)} -> —"
    if old is None or pd.isna(old):
        return f"— -> **{num(new, fmt)}**"
    return f"{num(old, fmt)} -> **{num(new, fmt)}** ({new - old:+.2f})"


def rerun_table(df: pd.DataFrame, rows: list[tuple[str | None, str, str]], first: str,
                what: dict[str, str] | None = None) -> str:
    """Each old run beside its re-run with the revised criteria, rows (old key or None, new key, label): accuracy after
    pruning and after fine-tuning, old -> new; the new run's size; both run ids; ``what``: the change, per label."""
    by = df.set_index("key") if len(df) else pd.DataFrame()
    cols = [first] + (["what the revision changed"] if what else []) + [
        "params / FLOPs (new)", "acc after pruning: old -> new", "acc after fine-tuning: old -> new",
        "change vs before (new)", "runs: old / new"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for old_key, new_key, label in rows:
        old = by.loc[old_key] if old_key in by.index else None
        new = by.loc[new_key] if new_key in by.index else None
        get = lambda r, f: None if r is None else r[f]  # noqa: E731
        size = "—" if new is None else (f"{new.params / 1e3:.1f}k ({pct(new.params, new.params_before)}) / "
                                        f"{new.flops / 1e6:.1f}M ({pct(new.flops, new.flops_before)})")
        delta = "" if new is None or pd.isna(new.acc_ft) else f"{new.acc_ft - new.acc_before:+.2f}"
        runs = (("—" if old is None else f"`{old.run}`") + " / " +
                ("not run yet (`experiments/revised_criteria.sh`)" if new is None else f"`{new.run}`"))
        cells = [label] + ([what.get(label, "")] if what else []) + [
            size, arrow(get(old, "acc_pruned"), get(new, "acc_pruned")),
            arrow(get(old, "acc_ft"), get(new, "acc_ft")), delta, runs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choice_change_table() -> str:
    """How far the revision moved each changed criterion's filter ranking on the final model: per layer, the old scores
    (scores_final_C.csv) against the re-run's (scores_final_C_v2.csv), same 640 probe images; Spearman and bottom-30%
    overlap (prunekit.analysis.views.rank_agreement), medians over every conv and over the residual convs (`layerS.B.conv2`,
    the last conv of each block)."""
    from prunekit.analysis.views import rank_agreement  # here only: the other tables need no torch

    lines = ["| criterion | old vs new ranking, median Spearman: all 19 convs / 9 residual convs / other 10 | "
             "median bottom-30% overlap: all / residual / other |", "|---|---|---|"]
    for c in ("sfm_entropy", "hrank", "chip"):
        f_old, f_new = OUT / f"scores_final_{c}.csv", OUT / f"scores_final_{c}{TAG}.csv"
        if not (f_old.exists() and f_new.exists()):
            continue
        t = rank_agreement(*(pd.read_csv(f, dtype={"layer": str}) for f in (f_old, f_new)))
        res = t.layer.str.fullmatch(r"layer\d+\.\d+\.conv2")
        parts = [t, t[res], t[~res]]
        lines.append(f"| {c} | " + " / ".join(num(x.spearman.median(), "{:.2f}") for x in parts) + " | " +
                     " / ".join(num(x.overlap.median()) for x in parts) + " |")
    return "\n".join(lines)


def ratios_table(df: pd.DataFrame) -> str:
    by = df.set_index("key") if len(df) else pd.DataFrame()
    cols = [(k, lab) for k, lab in [("e1_l1", "uniform"), ("e2_afie_l1", "AFIE"), ("e2_sensitivity_l1", "sensitivity")]
            if k in by.index]
    if not cols:
        return "(no E2 run yet)"
    groups = list(by.loc[cols[0][0]].ratios)
    lines = ["| group | " + " | ".join(lab for _, lab in cols) + " |", "|---|" + "---|" * len(cols)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{by.loc[k].ratios.get(g, float('nan')):.3f}" for k, _ in cols) + " |")
    return "\n".join(lines)


def e3_agreement() -> str:
    f = OUT / "e3_summary.json"
    if not f.exists():
        return "(E3 rank agreement not computed)"
    s = json.loads(f.read_text())
    lines = ["| criterion | what is ranked | Spearman epoch 1 vs final | bottom-30% overlap |", "|---|---|---|---|"]
    for name, e in s.items():
        if name == "plans":
            continue
        what = (f"filters within each layer ({e['layers']} layers)" if name != "afie" else
                f"filters within each layer by AFIE's inner criterion (`within=l1`: L1 of the weights; "
                f"{e['layers']} layers)")
        if e["within_layer_ranking"]:
            lines.append(f"| {name} | {what} | mean {e['spearman_mean']:.3f}, "
                         f"median {e['spearman_median']:.3f}, "
                         f"range {e['spearman_min']:.3f} to {e['spearman_max']:.3f} | "
                         f"mean {e['bottom30_overlap_mean']:.2f} |")
        if name != "afie":  # afie's CSV carries the inner L1 scores; its layer score is compared through the plan
            lines.append(f"| {name} | layers (mean filter score per layer, {e['layers']} layers) | "
                         f"{e['across_layers_spearman']:.3f} | |")
    if "plans" in s:
        p = s["plans"]
        lines.append(f"| afie (layer score) | per-group ratios of the AFIE plan at -50% FLOPs, made on each checkpoint "
                     f"(ratio = lambda_min * AFIE_max / AFIE_l; {p['groups']} groups) | "
                     f"{p['ratio_spearman']:.3f} (largest ratio difference {p['max_abs_ratio_difference']:.4f}) | |")
    per_layer = OUT / "e3_rank_agreement.csv"
    if per_layer.exists():
        t = pd.read_csv(per_layer)
        t = t[t.criterion == "sfm_entropy"]
        lines += ["", "sfm_entropy, per layer (epoch 1 vs final):", "",
                  "| layer | filters | Spearman | Kendall | bottom-30% overlap |", "|---|---|---|---|---|"]
        for r in t.itertuples():
            lines.append(f"| {r.layer} | {r.filters} | {num(r.spearman, '{:.3f}')} | {num(r.kendall, '{:.3f}')} | "
                         f"{r.overlap:.2f} |")
    return "\n".join(lines)


def e3_agreement_v2() -> str:
    """E3's rank agreement before (e3_summary.json) and after the revision (e3_summary_v2.json), side by side."""
    f_old, f_new = OUT / "e3_summary.json", OUT / f"e3_summary{TAG}.json"
    if not f_new.exists():
        return "(E3 re-run not computed yet: `experiments/revised_criteria.sh`)"
    old, new = (json.loads(f.read_text()) if f.exists() else {} for f in (f_old, f_new))
    f3 = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    lines = ["| criterion | what is ranked | Spearman epoch 1 vs final: old -> new | bottom-30% overlap: old -> new |",
             "|---|---|---|---|"]
    for name, e in new.items():
        if name == "plans":
            continue
        o = old.get(name, {})
        if e["within_layer_ranking"]:
            what = (f"filters within each layer ({e['layers']} layers)" if name != "afie" else
                    f"filters within each layer by AFIE's inner criterion (L1 of the weights; not changed by "
                    f"the revision; {e['layers']} layers)")
            rho = "; ".join(f"{stat} {f3(o.get('spearman_' + stat))} -> **{f3(e['spearman_' + stat])}**"
                            for stat in ("mean", "median", "min", "max"))
            lines.append(f"| {name} | {what} | {rho} | mean {f3(o.get('bottom30_overlap_mean'))} -> "
                         f"**{f3(e['bottom30_overlap_mean'])}** |")
        if name != "afie":
            lines.append(f"| {name} | layers (mean filter score per layer) | "
                         f"{f3(o.get('across_layers_spearman'))} -> **{f3(e['across_layers_spearman'])}** | |")
    if "plans" in new:
        p, po = new["plans"], old.get("plans", {})
        lines.append(f"| afie (layer score; revision 2) | per-group ratios of the AFIE plan made on "
                     f"each checkpoint | {f3(po.get('ratio_spearman'))} -> **{f3(p['ratio_spearman'])}** "
                     f"(largest ratio difference {f3(po.get('max_abs_ratio_difference'))} -> "
                     f"{f3(p['max_abs_ratio_difference'])}) | |")
    f_old, f_new = OUT / "e3_rank_agreement.csv", OUT / f"e3_rank_agreement{TAG}.csv"
    if f_new.exists():
        t = pd.read_csv(f_new)
        t = t[t.criterion == "sfm_entropy"].set_index("layer")
        o = pd.read_csv(f_old) if f_old.exists() else pd.DataFrame(columns=["criterion", "layer"])
        o = o[o.criterion == "sfm_entropy"].set_index("layer")
        lines += ["", "sfm_entropy, per layer (epoch 1 vs final), old (gap, BN output) -> new (pooled, post_add; "
                  "the residual convs are the `.conv2` rows):", "",
                  "| layer | filters | Spearman: old -> new | bottom-30% overlap: old -> new |", "|---|---|---|---|"]
        for layer, r in t.iterrows():
            ro = o.loc[layer] if layer in o.index else None
            lines.append(f"| {layer} | {r.filters} | "
                         f"{arrow(None if ro is None else ro.spearman, r.spearman, '{:.3f}')} | "
                         f"{arrow(None if ro is None else ro.overlap, r.overlap)} |")
    return "\n".join(lines)


def sfm_reliability_table() -> str:
    """out/sfm_reliability.json (experiments/sfm_reliability.py): estimator x reads x probe size -> per-layer
    agreement between two disjoint probes; the default chosen in bold, the old default marked."""
    f = OUT / "sfm_reliability.json"
    if not f.exists():
        return "(not measured: experiments/sfm_reliability.py)"
    s = json.loads(f.read_text())
    lines = [f"sfm_entropy on `{s['checkpoint']}`, two disjoint probes of the CIFAR-10 train split (seeds "
             f"{s['seeds'][0]} and {s['seeds'][1]}); {s['machine']}; from `experiments/out/sfm_reliability.json`.",
             "", "| estimator | reads | probe images | median Spearman | min Spearman | median bottom-30% overlap | "
             "residual convs: median / min Spearman | seconds per probe |", "|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        chosen = (r["estimator"], r["reads"], r["n"]) == ("pooled", "post_add", 640)
        mark = " (default)" if chosen else " (old default)" if (r["estimator"], r["reads"], r["n"]) == (
            "gap", "pre_add", 640) else ""
        cells = [r["estimator"] + mark, r["reads"], str(r["n"]), f"{r['median_spearman']:.3f}",
                 f"{r['min_spearman']:.3f}", f"{r['median_overlap']:.2f}",
                 f"{r['residual']['median_spearman']:.3f} / {r['residual']['min_spearman']:.3f}",
                 f"{r['seconds_per_probe']:.1f}"]
        lines.append("| " + " | ".join(f"**{c}**" if chosen else c for c in cells) + " |")
    return "\n".join(lines)


def criteria_reliability_table() -> str:
    """out/criteria_reliability.json (experiments/criteria_reliability.py): each data-driven criterion's
    per-layer agreement between two disjoint probes, now and (for the changed ones) before the revision."""
    f = OUT / "criteria_reliability.json"
    if not f.exists():
        return "(not measured yet: experiments/criteria_reliability.py)"
    s = json.loads(f.read_text())
    lines = [f"The data-driven criteria on `{s['checkpoint']}`, two disjoint probes of "
             f"{s['n']} CIFAR-10 train images (seeds {s['seeds'][0]} and {s['seeds'][1]}), scored uncached; "
             f"{s['machine']}; from `experiments/out/criteria_reliability.json`. \"layers without a ranking\": "
             "layers whose scores are constant on a probe (Spearman undefined, left out of the median and min).", "",
             "| criterion | median Spearman | min Spearman | median bottom-30% overlap | residual convs: median / min "
             "Spearman | layers without a ranking | seconds per probe |", "|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        res = r["residual"]
        lines.append(f"| {r['label']} | {r['median_spearman']:.3f} | {r['min_spearman']:.3f} | "
                     f"{r['median_overlap']:.2f} | {res['median_spearman']:.3f} / {res['min_spearman']:.3f} | "
                     f"{r['nan_layers']} of {r['layers']} | {r['seconds_per_probe']:.1f} |")
    return "\n".join(lines)


def times_table(df: pd.DataFrame) -> str:
    f = OUT / "times.tsv"
    lines = ["| step | wall s |", "|---|---|"]
    total = rerun = 0
    if f.exists():
        for line in f.read_text().splitlines():
            if line.strip():
                step, sec = line.split("\t")
                total += int(sec)
                if TAG in step or step.startswith("reliability:"):  # experiments/revised_criteria.sh
                    rerun += int(sec)
                lines.append(f"| {step} | {sec} |")
    lines.append(f"| **total** | **{total}** ({total / 60:.1f} min) |")
    if rerun:
        lines.append(f"| of which the re-run with the revised criteria (`{TAG}` steps and the criteria's reliability) | {rerun} "
                     f"({rerun / 60:.1f} min) |")
    if len(df):
        ips = df.ft_img_s.dropna()
        if len(ips):
            lines += ["", f"Fine-tuning throughput over the runs: {ips.min():.0f} to {ips.max():.0f} training images/s "
                          "(the mean of prunekit's per-epoch `images_per_s` per run; the spread is the machine's "
                          "load)."]
    return "\n".join(lines)


def setup_line(df: pd.DataFrame) -> str:
    if not len(df):
        return "(no runs yet)"
    r = df.iloc[0]
    n = int(r.n_test)
    test = (f"all {n} CIFAR-10 test images (the whole test split of the JPEG copy)" if n >= 10000 else
            f"the same {n} CIFAR-10 test images (a seed-0 subset of the JPEG copy's test split)")
    return (f"Every run: the bundled ResNet-20 (`assets/resnet20_cifar10.safetensors`), accuracies on {test}; "
            f"fine-tuning {int(r.ft_epochs)} epochs x {int(r.ft_train)} training images (seed-0 subset), SGD lr 0.01 "
            f"cosine, momentum 0.9, weight decay 5e-4, batch 128 (the `finetune` defaults). Single seed.")


def main() -> None:
    df = load_runs()
    sections = {
        "setup": setup_line(df),
        "e1": run_table(df, E1, "criterion"),
        "e2": run_table(df, E2, "allocation (filters by l1)") + "\n\nPer-group ratios:\n\n" + ratios_table(df),
        "e3": e3_agreement() + "\n\n" + run_table(df, E3, "scores used"),
        "e4": run_table(df, E4, "fine-tuning"),
        "e1_v2": rerun_table(df, E1_V2, "criterion", CHANGED) + "\n\nHow far the filter choice moved (final "
                 "model, old scores against the re-run's, per layer):\n\n" + choice_change_table(),
        "e3_v2": e3_agreement_v2() + "\n\n" + rerun_table(df, E3_V2, "scores used"),
        "e4_v2": rerun_table(df, E4_V2, "fine-tuning"),
        "reliability_sfm": sfm_reliability_table(),
        "reliability_criteria": criteria_reliability_table(),
        "times": times_table(df),
    }
    md = "\n\n".join(f"## {k}\n\n{v}" for k, v in sections.items())
    (OUT / "tables.md").write_text(md + "\n")
    results = ROOT / "RESULTS.md"
    if results.exists():
        text = results.read_text()
        for k, v in sections.items():
            text = re.sub(rf"(<!-- BEGIN {k} -->\n).*?(<!-- END {k} -->)",
                          lambda m, v=v: m.group(1) + v + "\n" + m.group(2), text, flags=re.S)
        results.write_text(text)
    print(md)


if __name__ == "__main__":
    main()
