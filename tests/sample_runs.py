"""Runs and jobs written by hand, as pruning and the job worker write them, for the pages that list them (the
Compare and Jobs pages) in tests that draw every page: tests/test_figures.py, tests/test_browser_screens.py."""
import json

from prunekit.runs import jobs
from prunekit.runs.records import Run


def write_runs(root) -> list[str]:
    """Four runs of ResNet-20 as pruning writes them (l1 and sfm_entropy at about 50% and 75% of the FLOPs), the
    first fine-tuned, the last (the newest finished: the Compare page opens it) timed 10x faster for 4x fewer MACs
    (implausible: the page says why), then a fifth that failed before pruning (a long message with a path); returns
    their ids in that order."""
    ids = []
    for criterion, macs, pruned, tuned, after_ms in (("l1", 20e6, 80.0, 87.5, 1.2), ("l1", 10e6, 60.0, None, 0.8),
                                                     ("sfm_entropy", 21e6, 78.0, None, 1.3),
                                                     ("sfm_entropy", 10.5e6, 55.0, None, 0.2)):
        finetune = None if tuned is None else {"accuracy": tuned, "epochs": [
            {"epoch": e, "test_accuracy": a, "train_accuracy": a - 3} for e, a in ((1, 84.0), (2, 86.5), (3, tuned))]}
        run = Run.create(root, name="resnet20", model={"arch": "resnet20"}, criterion={"name": criterion, "params": {}},
                         plan={"format": "prunekit-plan/1", "arch": "resnet20", "ratios": {"conv1": 0.5},
                               "preset": {"name": "uniform"}},
                         before={"params": 272_474, "macs": 40_550_000, "flops": 81_100_000, "latency_ms": {"1": 2.0}},
                         after={"params": 150_000, "macs": macs, "flops": 2 * macs, "latency_ms": {"1": after_ms}},
                         accuracy={"before": {"accuracy": 86.05, "n": 2000}, "pruned": {"accuracy": pruned, "n": 2000}},
                         report={"channels": {"conv1": [16, 8], "layer1.0.conv1": [16, 8], "layer3.0.conv1": [64, 32]}},
                         finetune=finetune)
        run.finish("done")
        ids.append(run.manifest["id"])
    failed = Run.create(root, name="resnet20", model={"arch": "resnet20"}, criterion={"name": "fpgm", "params": {}})
    failed.finish("failed", f"OSError: [Errno 28] No space left on device: '{failed.path / 'model.safetensors'}'")
    return [*ids, failed.manifest["id"]]


def write_jobs(root, work) -> None:
    """Two finished fine-tunings: one done (3 epochs, with its curves), one failed with a long message."""
    metrics = work / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0 / e, "test_accuracy": 80 + 2 * e}) + "\n"
                               for e in (1, 2, 3)))
    failed = jobs.submit("finetune", {"run": str(work / "runs" / "gone"), "epochs": 2}, device="cpu", root=root,
                         start_worker=False)
    failed.save(status="failed", started="2026-12-07T18:01:00+00:00", finished="2026-12-07T18:01:04+00:00",
                error="ValueError: run gone has no pruned model (model.safetensors): prune it again on the Plan & "
                      "prune page, then queue the fine-tuning from there")
    done = jobs.submit("finetune", {"run": str(work / "runs" / "r1"), "epochs": 3}, device="cpu", root=root,
                       start_worker=False)
    done.save(status="done", started="2026-12-07T18:03:00+00:00", finished="2026-12-07T18:09:35+00:00",
              metrics_file=str(metrics), result={"run": "r1", "accuracy": 86.0, "epochs": 3})
