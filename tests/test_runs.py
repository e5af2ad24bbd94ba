"""Runs on disk: the manifest, the pruned model reloading alone, a killed process, the listing."""
import json
import os
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from prunekit.models.checkpoints import load_checkpoint
from prunekit.errors import PruneError
from prunekit.models.zoo import build_model, count_params
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import prune_model
from prunekit.runs.records import MANIFEST, MODEL_FILE, Run, list_runs, prune_run, read_manifest, runs_root
from prunekit.pruning.structure import structure
from tests.conftest import REPO, tiny_arrays

SIZE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    plan = get_preset("uniform").make(structure(model, SIZE), "resnet20", value=0.5, criterion="random")
    scores = {n: torch.rand(m.out_channels, generator=torch.Generator().manual_seed(1))
              for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    return model, plan, scores


def test_a_recalibrated_run_keeps_the_recalibrated_model_and_every_accuracy(tmp_path):
    from prunekit.data import DeviceLoader
    from prunekit.models.metrics import evaluate
    from prunekit.pruning.recalibrate import recalibrate_bn

    model, plan, scores = _setup()
    held_out, train = tiny_arrays(32), tiny_arrays(40, seed=3)
    run = prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                    data=held_out, recalibrate=train, latency_batches=(1,), repeat=1, runtimes=("eager",))
    m = read_manifest(run.path)
    expected, _ = recalibrate_bn(prune_model(model, plan.ratios, scores, SIZE)[0], train)
    acc = evaluate(expected, DeviceLoader(held_out, 256, train=False))
    assert m["accuracy"]["recalibrated"] == pytest.approx(acc)
    assert m["recalibration"]["n"] == 40 and m["recalibration"]["name"] == "tiny" and m["recalibration"]["note"] is None
    saved, header = load_checkpoint(run.path / MODEL_FILE)  # the run's model is the recalibrated one
    torch.testing.assert_close(saved.layer1[0].bn1.running_var, expected.layer1[0].bn1.running_var)
    assert header["meta"]["accuracy_recalibrated"] == pytest.approx(acc["accuracy"])
    row = list_runs(tmp_path).iloc[0]
    assert row["accuracy_recalibrated"] == pytest.approx(acc["accuracy"])
    assert row["accuracy_pruned"] == pytest.approx(m["accuracy"]["pruned"]["accuracy"])


def test_a_pruning_is_a_run_whose_model_reloads_alone(tmp_path):
    model, plan, scores = _setup()
    run = prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                    data=tiny_arrays(32), latency_batches=(1, 2), repeat=1)
    m = read_manifest(run.path)
    assert m["status"] == "done" and m["finished"] and m["finetune"] is None
    assert m["model"]["arch"] == "resnet20" and len(m["model"]["weights"]) == 64
    assert m["criterion"] == {"name": "random", "params": {}} and m["plan"]["ratios"] == plan.ratios
    assert m["versions"]["torch"] == torch.__version__ and "torch_pruning" in m["versions"]
    expected, _ = prune_model(model, plan.ratios, scores, SIZE)
    assert m["before"]["params"] == count_params(model) and m["after"]["params"] == count_params(expected)
    assert m["after"]["flops"] == 2 * m["after"]["macs"] and m["after"]["tp_macs"] >= m["after"]["macs"]
    assert set(m["after"]["latency_ms"]) == {"1", "2"}
    for stage in ("before", "after"):  # both runtimes, the ONNX export checked equal before it was timed
        assert set(m[stage]["latency_ms_onnxruntime"]) == {"1", "2"}
        assert all(v > 0 for v in m[stage]["latency_ms_onnxruntime"].values())
        ort = m[stage]["onnxruntime"]
        assert ort["error"] is None and ort["max_abs_diff"] < 1e-4 and ort["optimization"] == "ORT_ENABLE_ALL"
        assert ort["threads"] == torch.get_num_threads()
    assert m["accuracy"]["before"]["n"] == 32 and 0 <= m["accuracy"]["pruned"]["accuracy"] <= 100
    assert m["report"]["channels"]["conv1"] == [16, 8] and m["report"]["unprunable"]["fc"]
    stream = next(g for g in m["report"]["groups"] if g["root"] == "conv1")
    assert stream["coupled"] and "layer1.2.conv2" in stream["members"] and len(stream["removed"]) == 8
    reloaded, header = load_checkpoint(run.path / MODEL_FILE)  # the file alone rebuilds the smaller model
    assert header["meta"]["run"] == m["id"]
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), expected(x), atol=1e-6)
    df = list_runs(tmp_path)
    assert df.loc[0, "status"] == "done" and df.loc[0, "params"] == count_params(expected)
    assert df.loc[0, "accuracy_before"] == m["accuracy"]["before"]["accuracy"]
    assert df.loc[0, "latency_ort_b1"] == m["after"]["latency_ms_onnxruntime"]["1"]
    assert pd.isna(df.loc[0, "latency_ort_b64_before"]) and pd.isna(df.loc[0, "ort_error"])  # timed at 1 and 2 only


def test_a_run_from_before_onnx_runtime_still_lists_without_its_figures(tmp_path):
    run = Run.create(tmp_path, name="resnet20", model={"arch": "resnet20"},
                     before={"params": 10, "macs": 5, "flops": 10, "latency_ms": {"1": 2.0, "64": 30.0}},
                     after={"params": 5, "macs": 2, "flops": 4, "latency_ms": {"1": 1.0, "64": 20.0}})
    run.finish()
    (row,) = list_runs(tmp_path).to_dict("records")
    assert row["status"] == "done" and row["latency_b64"] == 20.0 and row["latency_b64_before"] == 30.0
    assert all(row[f"latency_ort_b{b}{s}"] is None for b in (1, 64) for s in ("", "_before"))
    assert row["ort_error"] is None
    bad = {**run.manifest, "after": {**run.manifest["after"], "latency_ms_onnxruntime": [1.0]}}
    (tmp_path / run.manifest["id"] / MANIFEST).write_text(json.dumps(bad))
    assert "'after.latency_ms_onnxruntime' must be an object or null" in list_runs(tmp_path).loc[0, "error"]


def test_a_refused_pruning_writes_nothing(tmp_path, monkeypatch):
    model, plan, scores = _setup()
    with pytest.raises(ValueError, match="no scores"):
        prune_run(model, plan, {}, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                  latency_batches=())
    monkeypatch.setattr("prunekit.pruning.prune._dropped_inputs", lambda wiring, removed: {})  # a reference with every
    with pytest.raises(PruneError, match="went wrong at layer1.0.conv1"):              # channel: the check fails
        prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                  latency_batches=())
    assert list(tmp_path.iterdir()) == []


def test_a_failure_after_pruning_stays_on_disk_marked_failed(tmp_path, monkeypatch):
    model, plan, scores = _setup()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("prunekit.runs.records.prune_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                  latency_batches=())
    (row,) = list_runs(tmp_path).to_dict("records")
    assert row["status"] == "failed" and read_manifest(row["path"])["error"] == "RuntimeError: disk full"
    assert not (tmp_path / row["run"] / MODEL_FILE).exists()


_WRITER = """
import sys
from prunekit.runs.records import Run
run = Run.create(sys.argv[1], name="victim", payload=list(range(2000)))
print("ready", flush=True)
i = 0
while True:
    i += 1
    run.update(step=i, payload=list(range(i % 5000)))
"""


def test_a_killed_process_leaves_earlier_runs_intact_and_its_own_interrupted(tmp_path):
    earlier = Run.create(tmp_path, name="earlier", note="kept")
    earlier.finish("done")
    before = (earlier.path / MANIFEST).read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        victim = next(p for p in tmp_path.iterdir() if "victim" in p.name)
        assert read_manifest(victim)["status"] == "running"  # alive: not mistaken for interrupted
        while json.loads((victim / MANIFEST).read_text()).get("step", 0) < 50:  # a state: 50 rewrites done,
            pass  # the writer going on as fast as it can (every read parses: the file is replaced whole)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    m = read_manifest(victim)  # parses: never half written
    assert m["status"] == "interrupted" and m["step"] > 1
    assert json.loads((victim / MANIFEST).read_text())["status"] == "running"  # what the dead process left
    assert (earlier.path / MANIFEST).read_bytes() == before
    statuses = dict(zip(list_runs(tmp_path)["run"], list_runs(tmp_path)["status"]))
    assert statuses == {earlier.path.name: "done", victim.name: "interrupted"}


def test_the_runs_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "elsewhere"))
    assert runs_root() == tmp_path / "elsewhere" and runs_root("x") == runs_root("x")
    monkeypatch.delenv("PRUNEKIT_RUNS")
    assert str(runs_root()) == "runs"
    assert list_runs(tmp_path / "missing").empty


BAD_MANIFESTS = {  # directory name -> (manifest.json's text, words of the reason)
    "20000101-000001-list-aaaaaa": ("[1, 2, 3]", "it holds a JSON list, not an object"),
    "20000101-000002-text-aaaaaa": ('"a run"', "it holds a JSON string, not an object"),
    "20000101-000003-noid-aaaaaa": ('{"format": "prunekit-run/1", "status": "done"}', "'id' is missing"),
    "20000101-000004-status-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": 5}',
                                      "'status' must be one of"),
    "20000101-000005-model-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": "done", "model": "resnet20"}',
                                     "'model' must be an object or null, got a string"),
    "20000101-000006-nested-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": "done", '
                                      '"accuracy": {"pruned": [1]}}', "'accuracy.pruned' must be an object or null"),
    "20000101-000007-number-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": "done", '
                                      '"after": {"params": "many"}}', "'after.params' must be a number or null"),
    "20000101-000008-epochs-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": "done", '
                                      '"finetune": {"epochs": {"1": 2}}}', "'finetune.epochs' must be a list of "
                                                                            "objects"),
    "20000101-000009-channels-aaaaaa": ('{"format": "prunekit-run/1", "id": "x", "status": "done", '
                                        '"report": {"channels": {"conv1": 16}}}', "'report.channels' must map each "
                                                                                 "conv to [filters before, after]"),
}


def test_a_bad_manifest_is_listed_unreadable_with_its_reason_and_the_others_still_list(tmp_path):
    good = Run.create(tmp_path, name="good", model={"arch": "resnet20"}, after={"params": 100})
    good.finish("done")
    for name, (text, _) in BAD_MANIFESTS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text(text)
    table = list_runs(tmp_path).set_index("run")
    assert table.loc[good.manifest["id"], "status"] == "done" and table.loc[good.manifest["id"], "params"] == 100
    for name, (_, words) in BAD_MANIFESTS.items():
        assert table.loc[name, "status"] == "unreadable", name
        assert words in table.loc[name, "error"] and str(tmp_path / name / MANIFEST) in table.loc[name, "error"]
        with pytest.raises(ValueError, match="not a prunekit run manifest"):
            read_manifest(tmp_path / name)


def test_the_runs_command_lists_the_others_past_a_bad_manifest(tmp_path, capsys):
    from prunekit.cli import main

    Run.create(tmp_path, name="good").finish("done")
    (tmp_path / "20000101-000001-list-aaaaaa").mkdir()
    (tmp_path / "20000101-000001-list-aaaaaa" / MANIFEST).write_text("[1, 2, 3]")
    assert main(["runs", "--runs", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "-good-" in out and re.search(r"20000101-000001-list-aaaaaa +unreadable", out)
    assert "20000101-000001-list-aaaaaa is unreadable" in err and "it holds a JSON list, not an object" in err


def test_a_run_of_a_source_model_gets_a_directory_name_every_file_system_takes(tmp_path):
    run = Run.create(tmp_path, name="torchvision:densenet121@32", model={"arch": "torchvision:densenet121@32"})
    assert ":" not in run.path.name and "-torchvision_densenet121@32-" in run.path.name
    assert run.manifest["model"]["arch"] == "torchvision:densenet121@32"  # the name itself is kept whole


def test_the_accuracy_summary_names_what_each_accuracy_is_measured_on():
    from prunekit.runs.records import accuracy_summary

    manifest = {"accuracy": {"before": {"accuracy": 88.0, "n": 500}, "pruned": {"accuracy": 16.6, "n": 500},
                             "recalibrated": {"accuracy": 54.8, "n": 500}},
                "recalibration": {"name": "cifar10", "n": 1024, "note": None}}
    assert accuracy_summary(manifest) == {"accuracy_before": 88.0, "accuracy_pruned": 16.6,
                                          "accuracy_recalibrated": 54.8, "test_images": 500,
                                          "recalibration_images": 1024}
    manifest["recalibration"] = {"name": "cifar10", "n": 1024, "note": "the model has no BatchNorm layer"}
    manifest["accuracy"]["recalibrated"] = None
    assert accuracy_summary(manifest)["recalibration_images"] is None
    assert accuracy_summary({"accuracy": None, "recalibration": None})["test_images"] is None
