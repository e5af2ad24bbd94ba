"""Does the recalibrated accuracy pick the best criteria after fine-tuning? Fine-tune the sweep's -50% FLOPs points of the K best criteria by recalibrated accuracy (from
out/e1_curves.json, written by criteria_curves_tables.py) with the faithfulness recipe (one seed), then re-write the tables.
Re-runnable: a point already fine-tuned is skipped. Settings: K [4], TARGET [0.5], EPOCHS [1], SUBSET [5000],
TEST_N [2000], THREADS [1], JOBS [2]."""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prunekit.defaults import HELD_OUT

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "out"
PY = str(ROOT / ".venv" / "bin" / "python")
K, TARGET = int(os.environ.get("K", "4")), os.environ.get("TARGET", "0.5")
EPOCHS, SUBSET, TEST_N = (os.environ.get(k, d) for k, d in (("EPOCHS", "1"), ("SUBSET", "5000"),
                                                                     ("TEST_N", str(HELD_OUT.n))))
THREADS, JOBS = os.environ.get("THREADS", "1"), int(os.environ.get("JOBS", "2"))


def finetune(run: str) -> None:
    m = json.loads((ROOT / run / "manifest.json").read_text())
    if (m.get("finetune") or {}).get("accuracy") is not None:
        print("have", run)
        return
    cmd = ["nice", "-n", "10", PY, "-m", "prunekit", "finetune", "--run", run, "--epochs", EPOCHS, "--subset", SUBSET,
           "--test-subset", TEST_N, "--device", "cpu", "--threads", THREADS]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    table = json.loads((OUT / "e1_curves.json").read_text())["table"]
    pts = [(c, v[TARGET]) for c, v in table.items() if v.get(TARGET, {}).get("recalibrated") is not None]
    best = sorted(pts, key=lambda p: -p[1]["recalibrated"])[:K]
    print("best:", [(c, p["recalibrated"]) for c, p in best], flush=True)
    # a point whose model is the one a faithfulness run (predicted_accuracy_faithfulness.py) already fine-tuned with this
    # recipe (same criterion, same uniform plan at this target, same pruned and recalibrated accuracy) is not
    # fine-tuned twice: that run's figure is reported (out/e1_best_finetuned.json says which)
    faith = json.loads((OUT / "faithfulness.json").read_text())["runs"] if (OUT / "faithfulness.json").exists() else []
    same = {c: next((f for f in faith if f["allocation"] == "uniform" and f["criterion"] == c and float(TARGET) == 0.5
                     and f["pruned"] == p["pruned"] and f["recalibrated"] == p["recalibrated"]
                     and f["finetuned"] is not None), None) for c, p in best}
    todo = [p["run"] for c, p in best if same[c] is None]
    with ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(finetune, todo))
    res = []
    for c, p in best:
        m = json.loads((ROOT / p["run"] / "manifest.json").read_text())
        f = same[c]
        res.append({"criterion": c, "sweep_run": p["run"], "pruned": p["pruned"], "recalibrated": p["recalibrated"],
                    "finetuned": f["finetuned"] if f else (m.get("finetune") or {}).get("accuracy"),
                    "finetuned_in": f["run"] if f else p["run"]})
    (OUT / "e1_best_finetuned.json").write_text(json.dumps(
        {"target": float(TARGET), "recipe": f"finetune --epochs {EPOCHS} --subset {SUBSET} --test-subset {TEST_N}, "
         "seed 0, one seed", "best_by_recalibrated": res}, indent=2))
    print(json.dumps(res, indent=1))
    subprocess.run([PY, str(ROOT / "experiments" / "criteria_curves_tables.py")], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
