"""prunekit.runs.compare: the Pareto front on hand-made tables, the chart's points, the baselines, the run's files
and its report zip (nothing outside the run directory)."""
import io
import json
import zipfile

import pandas as pd
import pytest

from prunekit.runs import compare
from prunekit.runs.compare import (
    baselines,
    channels_frame,
    comparison,
    finetune_frame,
    latency_suspects,
    pareto_front,
    report_zip,
    run_files,
)
from prunekit.runs.records import MODEL_FILE, Run, list_runs


def test_pareto_front_keeps_the_undominated_points():
    df = pd.DataFrame({"cost": [1, 2, 3, 4, 2, None], "acc": [50, 70, 60, 80, 70, 99]}, index=list("abcdef"))
    mask = pareto_front(df, "cost", "acc")
    # c is beaten by b (cheaper, better); b and e are equal (both kept); f has no cost (never on the front)
    assert mask.to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": True, "f": False}


def test_pareto_front_of_an_empty_table_is_empty():
    assert pareto_front(pd.DataFrame({"x": [], "y": []}), "x", "y").empty


def _runs_table():
    return pd.DataFrame({
        "run": ["r3", "r2", "r1"], "arch": ["resnet20"] * 3, "criterion": ["l1", "sfm_entropy", "l1"],
        "preset": ["uniform"] * 3, "flops": [40.0, 60.0, 50.0], "flops_before": [80.0] * 3,
        "accuracy_before": [90.0] * 3, "accuracy_pruned": [70.0, 85.0, 60.0],
        "accuracy_finetuned": [None, None, 88.0], "test_images": [1000] * 3,
        "test_images_finetuned": [None, None, 500]})


def test_comparison_takes_the_fine_tuned_accuracy_where_there_is_one():
    tuned = comparison(_runs_table(), "flops", "finetuned").set_index("run")
    assert tuned["accuracy"].to_dict() == {"r3": 70.0, "r2": 85.0, "r1": 88.0}
    assert tuned.loc["r1", "stage"] == "fine-tuned" and tuned.loc["r2", "stage"] == "pruned"
    assert tuned["pareto"].to_dict() == {"r3": True, "r2": False, "r1": True}  # r2 costs more than r1 for less
    pruned = comparison(_runs_table(), "flops", "pruned").set_index("run")
    assert pruned["accuracy"].to_dict() == {"r3": 70.0, "r2": 85.0, "r1": 60.0}
    assert pruned["pareto"].to_dict() == {"r3": True, "r2": True, "r1": False}
    with pytest.raises(ValueError, match="x must be one of"):
        comparison(_runs_table(), "speed")


def test_each_stage_falls_back_to_the_one_before_it():
    runs = _runs_table().assign(accuracy_recalibrated=[None, 86.0, 75.0])
    recal = comparison(runs, "flops", "recalibrated").set_index("run")
    assert recal["accuracy"].to_dict() == {"r3": 70.0, "r2": 86.0, "r1": 75.0}
    assert recal["stage"].to_dict() == {"r3": "pruned", "r2": "recalibrated", "r1": "recalibrated"}
    tuned = comparison(runs, "flops", "finetuned").set_index("run")
    assert tuned["accuracy"].to_dict() == {"r3": 70.0, "r2": 86.0, "r1": 88.0}
    assert tuned["stage"].to_dict() == {"r3": "pruned", "r2": "recalibrated", "r1": "fine-tuned"}


def test_baselines_are_one_per_distinct_model():
    base = baselines(_runs_table(), "flops")
    assert base.to_dict("records") == [{"arch": "resnet20", "x": 80.0, "accuracy": 90.0, "n": 1000.0, "runs": 3}]
    assert baselines(pd.DataFrame(), "flops").empty


def _run(tmp_path, **fields):
    run = Run.create(tmp_path, name="resnet20", model={"arch": "resnet20"}, criterion={"name": "l1"},
                     plan={"format": "prunekit-plan/1", "arch": "resnet20", "ratios": {"conv1": 0.5}}, **fields)
    run.finish("done")
    return run


def test_report_zip_holds_the_manifest_plan_channels_and_fine_tuning(tmp_path):
    epochs = [{"epoch": 1, "test_accuracy": 80.0}, {"epoch": 2, "test_accuracy": 82.5}]
    run = _run(tmp_path, report={"channels": {"conv1": [16, 8], "fc0": [10, 10]}},
               finetune={"epochs": epochs, "accuracy": 82.5})
    assert channels_frame(run.manifest).to_dict("records") == [
        {"layer": "conv1", "before": 16, "after": 8, "removed": 8},
        {"layer": "fc0", "before": 10, "after": 10, "removed": 0}]
    assert finetune_frame(run.manifest)["test_accuracy"].tolist() == [80.0, 82.5]
    zf = zipfile.ZipFile(io.BytesIO(report_zip(run.path, {"channels": "<html></html>"})))
    assert sorted(zf.namelist()) == ["channels.csv", "charts/channels.html", "finetune.csv", "manifest.json",
                                     "plan.json"]
    assert json.loads(zf.read("plan.json"))["ratios"] == {"conv1": 0.5}
    assert json.loads(zf.read("manifest.json"))["id"] == run.manifest["id"]
    assert zf.read("channels.csv").decode().splitlines()[1] == "conv1,16,8,8"
    assert "finetune.csv" not in zipfile.ZipFile(io.BytesIO(report_zip(_run(tmp_path).path))).namelist()


def test_run_files_offers_only_files_inside_the_run(tmp_path):
    run = _run(tmp_path)
    assert run_files(run.path) == {}
    (run.path / MODEL_FILE).write_bytes(b"weights")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"secret")
    (run.path / "finetune").mkdir()
    (run.path / "finetune" / MODEL_FILE).symlink_to(outside)  # a link out of the run is not offered
    assert run_files(run.path) == {"pruned": (run.path / MODEL_FILE).resolve()}


def test_list_runs_gives_the_error_of_failed_and_unreadable_runs(tmp_path):
    run = Run.create(tmp_path, name="broken")
    run.finish("failed", "ValueError: no scores")
    (tmp_path / "20000101-000000-corrupt-abcdef").mkdir()
    (tmp_path / "20000101-000000-corrupt-abcdef" / "manifest.json").write_text("{ not json")
    rows = list_runs(tmp_path).set_index("status")["error"].to_dict()
    assert rows["failed"] == "ValueError: no scores" and "not a readable run manifest" in rows["unreadable"]


def test_each_runtime_has_its_latency_columns_and_a_run_its_latency_table():
    assert compare.axis("latency_b64", "onnxruntime") == "latency_ort_b64"
    assert compare.axis("latency_b1") == "latency_b1" and compare.axis("flops", "onnxruntime") == "flops"
    assert {"latency_b1", "latency_b64", "latency_ort_b1", "latency_ort_b64"} < set(compare.axes())
    with pytest.raises(ValueError, match="runtime one of"):
        compare.axis("latency_b1", "tensorrt")
    manifest = {"before": {"latency_ms": {"1": 2.0, "64": 40.0}, "latency_ms_onnxruntime": {"1": 1.0, "64": 30.0}},
                "after": {"latency_ms": {"1": 1.0, "64": 20.0}, "latency_ms_onnxruntime": {"1": 0.5, "64": 10.0},
                          "onnxruntime": {"error": None}}}
    frame = compare.latency_frame(manifest)
    assert frame[["runtime", "batch", "speedup"]].values.tolist() == [
        ["PyTorch eager", "1", 2.0], ["PyTorch eager", "64", 2.0], ["ONNX Runtime", "1", 2.0],
        ["ONNX Runtime", "64", 3.0]]
    assert frame["check"].isna().all()  # without MAC counts nothing is judged
    # 2x fewer MACs: 2x and 3x are plausible (<= 1.5 x 2), 200x (a busy machine's 199.7 -> 0.99 ms) and 0.41x not
    manifest["before"] |= {"macs": 40_000_000, "latency_ms": {"1": 199.7, "64": 903.3}}
    manifest["after"] |= {"macs": 20_000_000, "latency_ms": {"1": 0.99, "64": 2203.7}}
    checks = compare.latency_frame(manifest)["check"].tolist()
    assert pd.isna(checks[2:]).all() and "202x for 2x fewer MACs" in checks[0] and "0.41x for 2x" in checks[1]
    # an export that disagreed: no ONNX Runtime figures, one row saying why
    manifest["after"] = {"latency_ms": {"1": 1.0}, "onnxruntime": {"error": "outputs differ"}}
    manifest["before"] = {"latency_ms": {"1": 2.0}, "onnxruntime": {"error": "outputs differ"}}
    frame = compare.latency_frame(manifest)
    assert frame["note"].fillna("-").tolist() == ["-", "outputs differ"]
    assert frame["after"].isna().tolist() == [False, True]
    old = compare.latency_frame({"before": {"latency_ms": {"1": 2.0}}, "after": {}})  # a run from before ORT
    assert old["runtime"].tolist() == ["PyTorch eager"]


def test_latency_suspects_are_judged_within_one_runtime():
    # ONNX Runtime is 10x faster than eager on every run: no run is suspect in either runtime on its own
    runs = pd.DataFrame({"run": ["r1", "r2", "r3"], "arch": ["resnet20"] * 3, "macs": [20e6, 30e6, 40e6],
                         "latency_b1": [2.0, 3.0, 4.0], "latency_ort_b1": [0.2, 0.3, 40.0]})
    assert latency_suspects(runs, "latency_b1").isna().all()
    assert latency_suspects(runs, "latency_ort_b1").notna().tolist() == [False, False, True]


def test_each_point_says_how_many_test_images_its_accuracy_is_on():
    tuned = comparison(_runs_table(), "flops", "finetuned").set_index("run")
    assert tuned["n"].to_dict() == {"r3": 1000, "r2": 1000, "r1": 500}  # r1's accuracy is its fine-tuned one


def test_a_latency_far_off_its_siblings_per_mac_is_suspect_and_off_the_front():
    # five resnet20 runs: ms per MMAC 0.1 except r5 (100x: timed on a busy machine) and r4 (0.3: within 5x)
    runs = pd.DataFrame({
        "run": [f"r{i}" for i in range(1, 6)], "arch": ["resnet20"] * 5, "criterion": ["l1"] * 5,
        "preset": ["uniform"] * 5, "macs": [20e6, 30e6, 40e6, 20e6, 10e6], "latency_b1": [2.0, 3.0, 4.0, 6.0, 100.0],
        "accuracy_pruned": [60.0, 70.0, 80.0, 65.0, 99.0]})
    why = latency_suspects(runs, "latency_b1")
    assert why.isna().tolist() == [True, True, True, True, False]
    assert why[4].startswith("100x the median time per MAC of the resnet20 runs")  # 10 ms / 100 MMAC vs 0.1
    points = comparison(runs, "latency_b1", "pruned").set_index("run")
    assert not points.loc["r5", "pareto"]  # 99% would dominate everything if its timing were trusted
    assert points["pareto"].to_dict() == {"r1": True, "r2": True, "r3": True, "r4": False, "r5": False}
    # fewer than three timed runs of an architecture: nothing to compare with, nothing flagged
    assert latency_suspects(runs.iloc[:2], "latency_b1").isna().all()
