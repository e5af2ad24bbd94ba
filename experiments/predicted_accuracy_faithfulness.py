"""Is the recalibrated accuracy of a pruned model a faithful proxy of its accuracy after a
short fine-tuning?  Many ResNet-20s pruned at one budget (-50% FLOPs): several criteria under the uniform preset,
plus random per-group allocations (random positive weight per group, ratios scaled to the budget; filters by L1).
Each is pruned with the CLI (`prune --n N`, recalibration on by default) and fine-tuned with one fixed recipe
(`finetune --epochs E --subset S --test-subset T`); then Spearman(fine-tuned, pruned) and Spearman(fine-tuned,
recalibrated) go into out/faithfulness.json.

Re-runnable: a key recorded in out/faithfulness_runs.tsv is not pruned again, and a run whose manifest has a
fine-tuned accuracy is not fine-tuned again.  Settings from the environment (defaults in brackets):
TARGET [0.5], N [2000], EPOCHS [1], SUBSET [5000], TEST_N [2000], CRITERIA [l1 l2 fpgm random bn_scale hrank taylor
information], ALLOC_SEEDS [0 1 2 3 4 5], RUNS [experiments/runs_faithfulness], THREADS [2], JOBS [3] (runs at once),
ORDER [] (keys to do first).
`--report-only`: skip pruning / fine-tuning, only (re)write the JSON from what exists.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from prunekit.defaults import HELD_OUT, RECALIBRATION

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "out"
PY = str(ROOT / ".venv" / "bin" / "python")
CKPT = os.environ.get("CKPT", "assets/resnet20_cifar10.safetensors")
TARGET = float(os.environ.get("TARGET", "0.5"))
N = int(os.environ.get("N", HELD_OUT.n))
EPOCHS = int(os.environ.get("EPOCHS", "1"))
SUBSET = int(os.environ.get("SUBSET", "5000"))
TEST_N = int(os.environ.get("TEST_N", HELD_OUT.n))
CRITERIA = os.environ.get("CRITERIA", "l1 l2 fpgm random bn_scale hrank taylor information").split()
ALLOC_SEEDS = [int(s) for s in os.environ.get("ALLOC_SEEDS", "0 1 2 3 4 5").split()]
RUNS = os.environ.get("RUNS", "experiments/runs_faithfulness")
THREADS = os.environ.get("THREADS", "2")
JOBS = int(os.environ.get("JOBS", "3"))   # runs pruned / fine-tuned at the same time
INDEX = OUT / "faithfulness_runs.tsv"   # key <TAB> run dir <TAB> prune s <TAB> finetune s
NICE = ["nice", "-n", "10"]


def pk(*args: str) -> str:
    cmd = [*NICE, PY, "-m", "prunekit", *args]
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    return res.stdout


def index() -> dict[str, list[str]]:
    if not INDEX.exists():
        return {}
    rows = [line.rstrip("\n").split("\t") for line in INDEX.read_text().splitlines() if line.strip()]
    return {r[0]: r for r in rows}


LOCK = threading.Lock()


def write_index(rows: dict[str, list[str]]) -> None:
    with LOCK:
        INDEX.write_text("".join("\t".join(r) + "\n" for r in rows.values()))


def uniform_plan(crit: str) -> Path:
    path = OUT / f"faithfulness_plan_uniform_{crit}.json"
    if not path.exists():
        pk("plan", "--checkpoint", CKPT, "--preset", "uniform", "--target", str(TARGET), "--criterion", crit,
           "--out", str(path))
    return path


def random_alloc_plan(seed: int, lo: float = 0.2, cap: float = 0.9) -> Path:
    """Random per-group ratios: weight w_g ~ U(lo, 1) per group, ratio_g = min(cap, t * w_g), t solved by
    bisection on prunekit.pruning.structure.estimate so that the FLOPs fall by TARGET.  Filters inside a group: L1."""
    path = OUT / f"faithfulness_plan_randalloc_s{seed}.json"
    if path.exists():
        return path
    sys.path.insert(0, str(ROOT))
    from prunekit.models.zoo import build_model
    from prunekit.pruning.plan import Plan
    from prunekit.pruning.structure import estimate, signature, structure

    struct = structure(build_model("resnet20", num_classes=10).eval(), (3, 32, 32))
    roots = [g.root for g in struct.groups]
    w = np.random.default_rng(1000 + seed).uniform(lo, 1.0, len(roots))

    def shape(t: float) -> dict[str, float]:
        return {r: float(min(cap, t * wi)) for r, wi in zip(roots, w)}

    a, b = 0.0, cap / w.min()
    if estimate(struct, shape(b)).macs_reduction < TARGET:
        raise SystemExit(f"seed {seed}: target out of reach")
    for _ in range(50):
        m = (a + b) / 2
        a, b = (m, b) if estimate(struct, shape(m)).macs_reduction < TARGET else (a, m)
    ratios = shape(b)
    plan = Plan(arch="resnet20", ratios=ratios, criterion="l1", signature=signature(struct),
                preset={"name": "random_allocation", "seed": seed, "weights": f"U({lo:g},1)", "cap": cap,
                        "target": TARGET, "by": "flops",
                        "estimate": estimate(struct, ratios).macs_reduction})
    plan.save(path)
    return path


def manifest(run: str) -> dict:
    return json.loads((ROOT / run / "manifest.json").read_text())


def ft_acc(m: dict):
    return (m.get("finetune") or {}).get("accuracy")


def do_run(key: str, plan: Path, rows: dict[str, list[str]]) -> None:
    if key not in rows or not (ROOT / rows[key][1] / "manifest.json").exists():
        t0 = time.time()
        out = pk("prune", "--checkpoint", CKPT, "--plan", str(plan), "--n", str(N), "--runs", RUNS,
                 "--device", "cpu", "--threads", THREADS, "--no-latency")
        run = json.loads(out.strip().splitlines()[-1])["run"]
        run = os.path.relpath(os.path.join(ROOT, run), ROOT) if os.path.isabs(run) else run
        rows[key] = [key, run, f"{time.time() - t0:.0f}", ""]
        write_index(rows)
    run = rows[key][1]
    while subprocess.run(["pgrep", "-f", f"finetune --run {run}"], stdout=subprocess.DEVNULL).returncode == 0:
        time.sleep(10)  # a fine-tuning of this run started by an earlier invocation is still going
    if ft_acc(manifest(run)) is None:
        t0 = time.time()
        pk("finetune", "--run", run, "--epochs", str(EPOCHS), "--subset", str(SUBSET), "--test-subset", str(TEST_N),
           "--device", "cpu", "--threads", THREADS)
        rows[key][3] = f"{time.time() - t0:.0f}"
        write_index(rows)


def _span(rows) -> float | None:
    plans = list(OUT.glob("faithfulness_plan_*.json"))
    mans = [ROOT / r[1] / "manifest.json" for r in rows.values() if (ROOT / r[1] / "manifest.json").exists()]
    if not plans or not mans:
        return None
    return round(max(p.stat().st_mtime for p in mans) - min(p.stat().st_mtime for p in plans))


def _records(rows) -> list[dict]:
    """One dict per indexed run: key, run, criterion, allocation, accuracies (before, pruned, recalibrated,
    finetuned; None where missing) and the prune / finetune seconds."""
    recs = []
    for key, r in rows.items():
        m = manifest(r[1])
        acc = m.get("accuracy") or {}
        recs.append({"key": key, "run": r[1], "criterion": (m.get("criterion") or {}).get("name"),
                     "allocation": "random" if key.startswith("randalloc") else "uniform",
                     "before": (acc.get("before") or {}).get("accuracy"),
                     "pruned": (acc.get("pruned") or {}).get("accuracy"),
                     "recalibrated": (acc.get("recalibrated") or {}).get("accuracy"),
                     "finetuned": ft_acc(m), "prune_s": float(r[2] or "nan"),
                     "finetune_s": float(r[3]) if len(r) > 3 and r[3] else None})
    return recs


def _rho(done: list[dict], col: str) -> dict:
    """Spearman of column col against the fine-tuned accuracy over the finished runs done: rho, p, n."""
    if len(done) < 3:
        return {"rho": None, "p": None, "n": len(done)}
    from scipy.stats import spearmanr  # optional dependency

    res = spearmanr([x[col] for x in done], [x["finetuned"] for x in done])
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(done)}


def _bootstrap(done: list[dict], reps: int = 2000) -> dict | None:
    """95% bootstrap interval (runs resampled, seed 0) of both rhos (pruned, recalibrated) and of their gap."""
    if len(done) < 5:
        return None
    from scipy.stats import spearmanr  # optional dependency

    rng, a = np.random.default_rng(0), np.array([[x["pruned"], x["recalibrated"], x["finetuned"]] for x in done])
    out = []
    for _ in range(reps):
        b = a[rng.integers(0, len(a), len(a))]
        rp, rr = spearmanr(b[:, 0], b[:, 2]).statistic, spearmanr(b[:, 1], b[:, 2]).statistic
        if np.isfinite(rp) and np.isfinite(rr):
            out.append((rp, rr, rr - rp))
    q = np.nanpercentile(np.array(out), [2.5, 97.5], axis=0)
    return {k: [float(q[0, i]), float(q[1, i])] for i, k in enumerate(("pruned", "recalibrated", "gap"))} | {
        "reps": len(out), "seed": 0}


def report(t_wall: float | None) -> dict:
    from scipy.stats import spearmanr  # optional dependency

    rows = index()
    recs = _records(rows)
    done = [x for x in recs if x["finetuned"] is not None and x["pruned"] is not None]
    prev = json.loads((OUT / "faithfulness.json").read_text()) if (OUT / "faithfulness.json").exists() else {}
    result = {
        "what": "Spearman, over pruned ResNet-20s at one budget, of the accuracy after a short fine-tuning with the "
                "accuracy right after pruning (plain) and after BatchNorm recalibration (recalibrated)",
        "spearman_finetuned_vs_pruned": _rho(done, "pruned"),
        "spearman_finetuned_vs_recalibrated": _rho(done, "recalibrated"),
        "spearman_uniform_only": None,
        "bootstrap_95": _bootstrap(done),
        "recipe": {"checkpoint": CKPT, "target_flops_removed": TARGET, "prune": f"prune --n {N} (recalibration on: "
                   f"{RECALIBRATION.n} train images, seed {RECALIBRATION.seed}) --no-latency",
                   "finetune": f"finetune --epochs {EPOCHS} --subset {SUBSET} --test-subset {TEST_N} (lr 0.01 "
                               "cosine, momentum 0.9, wd 5e-4, batch 128, seed 0)",
                   "criteria_uniform": CRITERIA, "random_allocations": {"seeds": ALLOC_SEEDS, "filters": "l1",
                   "ratio_g": "min(0.9, t*w_g), w_g ~ U(0.2,1), t solved for the FLOPs target"}},
        "machine": "2-core CPU, shared (other jobs running; nice -n 10, OMP_NUM_THREADS=2)",
        "wall_s_this_invocation": t_wall if t_wall is not None else prev.get("wall_s_this_invocation"),
        "wall_s_first_plan_to_last_manifest": _span(rows) or prev.get("wall_s_first_plan_to_last_manifest"),
        "runs": recs,
    }
    uni = [x for x in done if x["allocation"] == "uniform"]
    if len(uni) >= 3:
        result["spearman_uniform_only"] = {
            c: {"rho": float(spearmanr([x[c] for x in uni], [x["finetuned"] for x in uni]).statistic), "n": len(uni)}
            for c in ("pruned", "recalibrated")}
    (OUT / "faithfulness.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    t0 = time.time()
    if "--report-only" not in sys.argv:
        rows = index()
        jobs = [(f"uniform_{c}", uniform_plan(c)) for c in CRITERIA]
        jobs += [(f"randalloc_s{s}", random_alloc_plan(s)) for s in ALLOC_SEEDS]
        order = os.environ.get("ORDER", "").split()  # keys to do first, in this order (e.g. to fit a deadline)
        jobs.sort(key=lambda j: (j[0] not in rows, order.index(j[0]) if j[0] in order else len(order)))
        with ThreadPoolExecutor(JOBS) as pool:  # nice-10 jobs in parallel: a bigger share of a busy machine
            for f in [pool.submit(do_run, key, plan, rows) for key, plan in jobs]:
                f.result()
    res = report(None if "--report-only" in sys.argv else time.time() - t0)
    print(json.dumps({k: res[k] for k in ("spearman_finetuned_vs_pruned", "spearman_finetuned_vs_recalibrated",
                                          "spearman_uniform_only")}, indent=1))


if __name__ == "__main__":
    main()
