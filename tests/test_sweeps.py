"""Sweeps: criteria x targets, each point a recalibrated run, FLOPs falling as the target rises, curves on
Compare; from Python, the command line and the jobs."""
import json

import pytest
import torch

from prunekit.runs import jobs
from prunekit.cli import main
from prunekit.runs.compare import comparison
from prunekit.errors import UnknownNameError, UserError
from prunekit.models.zoo import build_model
from prunekit.runs.records import list_runs, read_manifest
from prunekit.runs.sweeps import SweepSpec, run_sweep
from tests.conftest import tiny_arrays

SIZE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_sweep_is_one_recalibrated_run_per_point_and_its_flops_fall_as_the_target_rises(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    spec = SweepSpec(criteria=("l1", "random"), targets=(0.6, 0.2, 0.4), runtimes=())
    runs = run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=tiny_arrays(16),
                     train=tiny_arrays(24, seed=2), root=tmp_path)
    assert len(runs) == 6 and spec.targets == (0.2, 0.4, 0.6)
    table = list_runs(tmp_path)
    assert table["sweep"].nunique() == 1 and sorted(table["target"].unique()) == [0.2, 0.4, 0.6]
    for criterion, rows in table.groupby("criterion"):
        rows = rows.sort_values("target")
        assert rows["flops"].is_monotonic_decreasing and rows["flops"].nunique() == 3, criterion
        assert all(1 - f / b >= t for f, b, t in zip(rows["flops"], rows["flops_before"], rows["target"]))
        assert rows["accuracy_recalibrated"].notna().all()
    m = read_manifest(runs[0].path)
    assert m["sweep"]["criterion"] == "l1" and m["sweep"]["preset"] == "uniform" and m["recalibration"]["n"] == 24
    curves = comparison(table, "flops", "recalibrated")
    assert set(curves["stage"]) == {"recalibrated"} and curves["sweep"].notna().all() and len(curves) == 6


def test_what_a_sweep_cannot_do_is_refused_before_any_work():
    with pytest.raises(UnknownNameError, match="unknown criterion 'nope'"):
        SweepSpec(criteria=("nope",), targets=(0.5,))
    with pytest.raises(UserError, match=r"each in \(0, 1\)"):
        SweepSpec(criteria=("l1",), targets=(0.5, 1.2))
    with pytest.raises(UserError, match="pick uniform, threshold or afie"):
        SweepSpec(criteria=("l1",), targets=(0.5,), preset="sensitivity")
    with pytest.raises(UserError, match="unknown runtime 'tensorrt'.*eager, onnxruntime"):
        SweepSpec(criteria=("l1",), targets=(0.5,), runtimes=("eager", "tensorrt"))


def test_a_sweep_from_the_shell_and_as_a_job_times_latency_only_where_asked(tmp_path, capsys, monkeypatch):
    assert main(["sweep", "--model", "resnet20", "--criteria", "l1", "fpgm", "--targets", "0.3", "0.5", "--n", "0",
                 "--no-recalibrate", "--no-latency", "--runs", str(tmp_path / "cli")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    table = list_runs(tmp_path / "cli")
    assert out["points"] == 4 and len(table) == 4
    assert table[["latency_b1", "latency_b64", "latency_ort_b1", "latency_ort_b64"]].isna().all().all()
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "job-runs"))
    job = jobs.submit("sweep", {"criteria": ["l1"], "targets": [0.25, 0.5], "data": "cifar10", "n": 0,
                                "recalibrate": False, "runtimes": ["eager"], "arch": "resnet20", "num_classes": 10,
                                "input_size": [3, 32, 32]},
                      model=build_model("resnet20"), arch="resnet20", num_classes=10, device="cpu", start_worker=False)
    assert "Sweep l1 at 2 targets (uniform)" == job.description
    assert jobs.work("cpu", idle_exit=0.5) == 0
    done = jobs.get(job.id)
    assert done.status == "done", done.error
    table = list_runs(tmp_path / "job-runs")
    assert len(done.result["runs"]) == 2 and len(table) == 2
    assert (table[["latency_b1", "latency_b64"]] > 0).all().all()  # eager timed, ONNX Runtime not
    assert table[["latency_ort_b1", "latency_ort_b64"]].isna().all().all()


def test_a_sweep_evaluates_the_unpruned_model_once_and_the_plain_accuracy_only_when_asked(tmp_path, monkeypatch):
    import prunekit.runs.records as records
    import prunekit.runs.sweeps as sweeps

    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    evaluated = []
    real = records.held_out_accuracy
    counting = lambda m, data, **kw: evaluated.append(m is model) or real(m, data, **kw)  # noqa: E731
    monkeypatch.setattr(records, "held_out_accuracy", counting)
    monkeypatch.setattr(sweeps, "held_out_accuracy", counting)
    spec = SweepSpec(criteria=("l1",), targets=(0.2, 0.4, 0.6), runtimes=())
    run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=tiny_arrays(16),
              train=tiny_arrays(24, seed=2), root=tmp_path / "a")
    # the unpruned model once for the sweep, then one recalibrated evaluation per point (no plain one)
    assert evaluated == [True, False, False, False]
    table = list_runs(tmp_path / "a")
    assert table["accuracy_pruned"].isna().all() and table["accuracy_recalibrated"].notna().all()
    assert table["accuracy_before"].nunique() == 1
    evaluated.clear()
    run_sweep(model, "resnet20", SweepSpec(criteria=("l1",), targets=(0.2, 0.4), runtimes=(), plain=True),
              num_classes=10, input_size=SIZE, held_out=tiny_arrays(16), train=tiny_arrays(24, seed=2),
              root=tmp_path / "b")
    assert evaluated == [True, False, False, False, False]  # with plain: two evaluations per point
    assert list_runs(tmp_path / "b")["accuracy_pruned"].notna().all()


def test_a_stopped_sweep_resumed_under_its_id_keeps_the_points_it_finished(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    spec = SweepSpec(criteria=("l1",), targets=(0.2, 0.4, 0.6), runtimes=())

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=None, train=None,
                  root=tmp_path, sweep_id="lecture", progress=stop_after_two)
    first = list_runs(tmp_path)
    assert sorted(first["target"]) == [0.2, 0.4] and set(first["status"]) == {"done"}
    runs = run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=None, train=None,
                     root=tmp_path, sweep_id="lecture")
    table = list_runs(tmp_path)
    assert len(table) == 3 and sorted(table["target"]) == [0.2, 0.4, 0.6] and set(table["sweep"]) == {"lecture"}
    assert [str(r.path) for r in runs[:2]] == sorted(first["path"], key=lambda p: read_manifest(p)["sweep"]["target"])


SWEEP_JOB = {"criteria": ["l1", "random"], "targets": [0.2, 0.4], "data": "cifar10", "n": 0, "recalibrate": False,
             "runtimes": [], "arch": "resnet20", "num_classes": 10, "input_size": [3, 32, 32]}


def cancel_after_first_point(monkeypatch) -> None:
    """The sweep job's own cancel flag set (jobs.cancel) when its first point is done: the worker stops it at that
    point's progress report, deterministically, with one finished run on disk."""
    from prunekit.runs.jobs.worker import Context

    points = Context.points

    def cancelling(ctx, done, total):
        if done == 1 and ctx.job.kind == "sweep":
            jobs.cancel(ctx.job.id)
        points(ctx, done, total)

    monkeypatch.setattr(Context, "points", cancelling)


def submit_sweep_job(tmp_path, monkeypatch, n: int = 0):
    """SWEEP_JOB queued (no worker) with its jobs in tmp_path/jobs and its runs in tmp_path/runs, evaluating each
    point on ``n`` cifar10 test images (0: none, no data needed)."""
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "runs"))
    torch.manual_seed(0)
    return jobs.submit("sweep", {**SWEEP_JOB, "n": n}, model=build_model("resnet20").eval(), arch="resnet20",
                       num_classes=10, device="cpu", start_worker=False)


def test_a_cancelled_sweep_job_resumes_as_the_same_sweep_and_never_redoes_a_finished_point(tmp_path, monkeypatch):
    job = submit_sweep_job(tmp_path, monkeypatch)
    with monkeypatch.context() as m:
        cancel_after_first_point(m)
        assert jobs.work("cpu", idle_exit=0.1) == 0
    assert jobs.get(job.id).status == "cancelled"
    first = list_runs(tmp_path / "runs")
    assert len(first) == 1 and first["sweep"].tolist() == [job.id] and first["status"].tolist() == ["done"]
    kept = first["path"].iloc[0]
    assert jobs.resume(job.id, start_worker=False).id == job.id
    assert jobs.work("cpu", idle_exit=0.1) == 0
    done = jobs.get(job.id)
    assert done.status == "done", done.error
    table = list_runs(tmp_path / "runs")
    # four points, four runs: the one finished before the cancel kept (the same directory), three made after
    assert len(table) == 4 and set(table["sweep"]) == {job.id} and set(table["status"]) == {"done"}
    assert sorted(zip(table["criterion"], table["target"])) == [("l1", 0.2), ("l1", 0.4), ("random", 0.2),
                                                                ("random", 0.4)]
    assert kept in table["path"].tolist() and done.result["runs"][0] == kept
    assert done.result["sweep"] == job.id


def test_targets_whose_widths_round_alike_are_evaluated_once(tmp_path, monkeypatch):
    from prunekit.runs import records
    evaluations = []
    counting = records.held_out_accuracy

    def count(model, images, **kw):
        evaluations.append(len(images))
        return counting(model, images, **kw)

    monkeypatch.setattr(records, "held_out_accuracy", count)
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    spec = SweepSpec(criteria=("l1",), targets=(0.05, 0.1), round_to=16, runtimes=())
    runs = run_sweep(model, "resnet20", spec, num_classes=10, input_size=SIZE, held_out=tiny_arrays(16),
                     train=tiny_arrays(24, seed=2), root=tmp_path)
    first, second = (read_manifest(r.path) for r in runs)
    assert first["report"]["channels"] == second["report"]["channels"]  # the same kept widths...
    assert evaluations == [16]  # ...so only the first point's recalibrated model is evaluated (the unpruned: by the sweep)
    assert second["sweep"]["same_filters_as"] == runs[0].path.name and first["sweep"]["same_filters_as"] is None
    assert second["accuracy"]["recalibrated"] == first["accuracy"]["recalibrated"]
    assert second["accuracy"]["recalibrated"]["n"] == 16
