"""Does distillation change how the criteria compare? Every criterion's -50% FLOPs sweep point (out/e1_curves.json, written by criteria_curves_tables.py)
fine-tuned with the better fine-tuning recipe of distillation.py, distillation from the unpruned model (alpha 0.9, T 4: prunekit's
defaults), for each seed in SEEDS. Each (criterion, seed) fine-tunes its own copy of the sweep point's run directory
(model + manifest; the copy's id is the sweep run's id + "-s<seed>", its manifest says what it copies) under
experiments/runs_e1_distilled/, so the sweep points stay as they were. Writes out/e1_distilled.json and
out/e1_distilled.md (mean and sample standard deviation over the seeds). Re-runnable: a copy already fine-tuned is
skipped; seeds are done in order (all criteria at seed 0, then seed 1, ...), so an interrupted run leaves balanced
rows. Settings (environment): SEEDS [0 1 2], TARGET [0.5], EPOCHS [1], SUBSET [5000], TEST_N [2000], THREADS [1],
JOBS [1], REPORT_ONLY [0]."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy.stats import spearmanr

from prunekit.defaults import HELD_OUT

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "out"
RUNS = ROOT / "experiments" / "runs_e1_distilled"
PY = str(ROOT / ".venv" / "bin" / "python")
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1 2").split()]
TARGET = os.environ.get("TARGET", "0.5")
EPOCHS, SUBSET, TEST_N = (os.environ.get(k, d) for k, d in (("EPOCHS", "1"), ("SUBSET", "5000"),
                                                                     ("TEST_N", str(HELD_OUT.n))))
THREADS, JOBS = os.environ.get("THREADS", "1"), int(os.environ.get("JOBS", "1"))
RECIPE = (f"finetune --epochs {EPOCHS} --subset {SUBSET} --test-subset {TEST_N} --seed S (distillation from the "
          "unpruned model: alpha 0.9, T 4, prunekit's defaults; lr 0.01 cosine, batch 128)")


def copy_of(sweep_run: Path, seed: int) -> Path:
    """The (criterion, seed) run directory: a copy of the sweep point's model and manifest (made once)."""
    dst = RUNS / f"{sweep_run.name}-s{seed}"
    if not (dst / "manifest.json").exists():
        tmp = RUNS / f".{dst.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(sweep_run / "model.safetensors", tmp / "model.safetensors")
        m = json.loads((sweep_run / "manifest.json").read_text())
        m.update(id=dst.name, finetune=None, note=f"copy of sweep run {sweep_run.name} for fine-tuning seed {seed}")
        m.pop("process", None)
        (tmp / "manifest.json").write_text(json.dumps(m, indent=1))
        tmp.rename(dst)
    return dst


def finetune(job: tuple[str, int, Path]) -> None:
    crit, seed, run = job
    m = json.loads((run / "manifest.json").read_text())
    if (m.get("finetune") or {}).get("accuracy") is not None:
        print("have", run.name, flush=True)
        return
    cmd = ["nice", "-n", "10", PY, "-m", "prunekit", "finetune", "--run", str(run), "--epochs", EPOCHS,
           "--subset", SUBSET, "--test-subset", TEST_N, "--seed", str(seed), "--device", "cpu", "--threads", THREADS]
    t0 = time.time()
    print("+", crit, seed, " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(OUT / "e1_distilled_times.tsv", "a") as f:
        f.write(f"{crit}\t{seed}\t{time.time() - t0:.0f}\n")


def points() -> dict[str, dict]:
    table = json.loads((OUT / "e1_curves.json").read_text())["table"]
    return {c: v[TARGET] for c, v in table.items() if (v.get(TARGET) or {}).get("run")}


def report(pts: dict[str, dict]) -> None:
    rows = []
    for c, p in pts.items():
        accs, runs = [], []
        for seed in SEEDS:
            run = RUNS / f"{Path(p['run']).name}-s{seed}"
            ft = (json.loads((run / "manifest.json").read_text()).get("finetune") or {}) if run.exists() else {}
            if ft.get("accuracy") is not None:
                accs.append(ft["accuracy"])
                runs.append(str(run.relative_to(ROOT)))
        rows.append({"criterion": c, "flops_removed": p["flops_removed"], "pruned": p["pruned"],
                     "recalibrated": p["recalibrated"], "finetuned_plain_seed0": p.get("finetuned"),
                     "distilled": accs, "mean": statistics.mean(accs) if accs else None,
                     "sd": statistics.stdev(accs) if len(accs) > 1 else None, "runs": runs})
    rows.sort(key=lambda r: -(r["mean"] if r["mean"] is not None else -1))
    done = [r for r in rows if r["mean"] is not None]
    rho = {k: spearmanr([r[k] for r in done], [r["mean"] for r in done]).statistic if len(done) > 2 else None
           for k in ("pruned", "recalibrated")}
    (OUT / "e1_distilled.json").write_text(json.dumps({"target": float(TARGET), "recipe": RECIPE, "seeds": SEEDS,
                                                       "spearman_with_mean": rho, "rows": rows}, indent=2))
    f2 = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"-{float(TARGET):.0%} FLOPs, uniform preset; every accuracy (%) on the same 2,000 held-out test images. "
             f"Fine-tuned: {RECIPE}; seeds {' '.join(map(str, SEEDS))}.", "",
             "| criterion | plain pruned | recalibrated | fine-tuned with distillation, per seed | mean | sd | n |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['criterion']} | {f2(r['pruned'])} | {f2(r['recalibrated'])} | "
              f"{' / '.join(f2(a) for a in r['distilled'])} | **{f2(r['mean'])}** | {f2(r['sd'])} | "
              f"{len(r['distilled'])} |" for r in rows]
    lines += ["", f"Spearman of the mean fine-tuned accuracy with the plain pruned one: {rho['pruned']:.2f}; with "
              f"the recalibrated one: {rho['recalibrated']:.2f} (n = {len(done)} criteria)."] if done else []
    (OUT / "e1_distilled.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    pts = points()
    if os.environ.get("REPORT_ONLY") != "1":
        jobs = [(c, s, copy_of(ROOT / p["run"], s)) for s in SEEDS for c, p in pts.items()]
        with ThreadPoolExecutor(JOBS) as pool:
            for _ in pool.map(finetune, jobs):
                report(pts)
    report(pts)


if __name__ == "__main__":
    main()
