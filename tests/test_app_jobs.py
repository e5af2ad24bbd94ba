"""AppTest of the Jobs page: live progress of a running job read from disk, cancel, a failure's message, resume."""
import base64
import json
import os

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from prunekit.runs import jobs
from prunekit.runs.records import _this_process
from prunekit.training.train import START_FILE
from tests.apptest_kit import open_page


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    return tmp_path / "jobs"


def _page(**session) -> AppTest:
    return open_page("pages/jobs.py", **session)


def _running(root, tmp_path):
    """A fine-tuning job that reads as running (owned by this live process), at epoch 2 of 3, one epoch done."""
    job = jobs.submit("finetune", {"run": str(tmp_path / "runs" / "r1"), "epochs": 3}, device="cpu", root=root)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"epoch": 1, "train_loss": 1.25, "test_accuracy": 61.5}) + "\n")
    (tmp_path / START_FILE).write_text(json.dumps({"epoch": 0, "test_loss": 2.5, "test_accuracy": 10.25}))
    job.save(status="running", process=_this_process(), metrics_file=str(metrics))
    (job.path / "progress.json").write_text(json.dumps(
        {"fraction": 0.5, "eta_s": 125, "epoch": 2, "epochs": 3, "batch": 30, "batches": 60, "loss": 0.812,
         "accuracy": 71.25}))
    return job


def _array(values) -> list:
    """A plotly figure's array as sent to the browser: a list, or base64 bytes of a typed array."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_a_running_job_shows_its_progress_curves_and_cancels(root, tmp_path):
    job = _running(root, tmp_path)
    queued = jobs.submit("finetune", {"run": "runs/r2", "epochs": 1}, device="cpu", root=root)
    at = _page()
    assert not at.exception
    assert any(s.value == "Running and queued (2)" for s in at.subheader)
    texts = " ".join(m.value for m in at.markdown)
    assert "Fine-tune run `r1` for 3 epochs" in texts and "Fine-tune run `r2` for 1 epoch " in texts
    bars = [p for p in at.get("progress")]
    assert len(bars) == 2
    assert "epoch 2/3 · batch 30/60 · train loss 0.812 · train accuracy 71.2% · ETA 2 min 05 s" in \
        [b.proto.text for b in bars]
    assert "waiting for the device" in [b.proto.text for b in bars]
    assert len(at.get("plotly_chart")) == 1  # the running job's curves (one finished epoch)
    loss, accuracy = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert (_array(loss["x"]), _array(loss["y"])) == ([1], [1.25])  # no train loss before training
    assert (_array(accuracy["x"]), _array(accuracy["y"])) == ([0, 1], [10.25, 61.5])  # epoch 0: before fine-tuning
    at.button(key=f"cancel-{job.id}").click().run()
    assert not at.exception
    assert (job.path / "cancel").exists()
    assert jobs.get(queued.id, root).status == "queued"  # only the one clicked


def test_failed_and_interrupted_jobs_say_why_and_resume(root, tmp_path):
    failed = jobs.submit("finetune", {"run": "runs/x", "epochs": 1}, device="cpu", root=root)
    failed.save(status="failed", error="ValueError: run x has no pruned model")
    (failed.path / "error.txt").write_text("Traceback (most recent call last):\nValueError: run x has no pruned model")
    gone = jobs.submit("finetune", {"run": "runs/y", "epochs": 2}, device="cpu", root=root)
    gone.save(status="running", process={"pid": 2**22 + 7, "host": os.uname().nodename, "start": None})
    at = _page(job_detail=failed.id)
    assert not at.exception
    assert any(s.value == "Running and queued (0)" for s in at.subheader)
    assert any(s.value == "Finished (2)" for s in at.subheader)
    table = at.dataframe[0].value
    assert dict(zip(table["job"], table["status"])) == {failed.id: "failed", gone.id: "interrupted"}
    # the message in the product's voice, in the table and the details: no exception class, no traceback
    assert table.set_index("job").loc[failed.id, "result"] == "run x has no pruned model"
    assert any("This job failed: run x has no pruned model" in e.value for e in at.error)
    assert not any("ValueError" in e.value or "Traceback" in e.value for e in at.error)  # both in the expander
    at = _page(job_detail=gone.id)
    assert any("stopped before the end" in w.value for w in at.warning)
    at.button(key=f"resume-{gone.id}").click().run()
    assert not at.exception
    assert jobs.get(gone.id, root).status == "queued"


def test_the_details_follow_the_job_that_just_finished(root):
    # the details stayed on the job picked before (the oldest) when a newer one finished
    old = jobs.submit("finetune", {"run": "runs/old", "epochs": 1}, device="cpu", root=root)
    old.save(status="failed", error="ValueError: the old one")
    at = _page()
    assert at.selectbox(key="job_detail").value == old.id
    new = jobs.submit("finetune", {"run": "runs/new", "epochs": 1}, device="cpu", root=root)
    new.save(status="failed", error="ValueError: the new one")
    at.run()
    assert not at.exception
    assert at.selectbox(key="job_detail").value == new.id
    assert any("This job failed: the new one" in e.value for e in at.error)
    at.selectbox(key="job_detail").set_value(old.id).run()  # the user's own pick stays while nothing new finishes
    assert at.selectbox(key="job_detail").value == old.id


def test_without_jobs_the_page_says_how_to_start_one(root):
    at = _page()
    assert not at.exception
    (empty,) = [i.value for i in at.info if "Nothing is running" in i.value]
    # where fine-tuning starts in the dashboard (the Compare page sent people here, and this page has no form)
    assert "**Plan & prune** page right after pruning, or on the **Compare** page for any run" in empty


def test_bad_job_files_are_listed_as_unreadable_and_the_page_stays_up(root, tmp_path):
    from tests.test_jobs import BAD_JOBS, write_bad_jobs

    _running(root, tmp_path)
    write_bad_jobs(root)
    at = _page()
    assert not at.exception
    table = at.dataframe[0].value.set_index("job")
    for name, (_, words) in BAD_JOBS.items():
        assert table.loc[name, "status"] == "unreadable" and words in table.loc[name, "result"], name


def test_a_cancelled_sweep_says_what_resume_keeps_and_resumes_as_the_same_sweep(tmp_path, monkeypatch):
    from prunekit.runs.records import list_runs
    from tests.test_sweeps import cancel_after_first_point, submit_sweep_job

    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    job = submit_sweep_job(tmp_path, monkeypatch)  # l1 and random at 0.2 and 0.4: four points
    with monkeypatch.context() as m:
        cancel_after_first_point(m)
        jobs.work("cpu", idle_exit=0.1)
    (kept,) = list_runs()["path"]
    at = _page(job_detail=job.id)
    assert not at.exception
    (note,) = [i.value for i in at.info if i.value.startswith("Cancelled.")]
    assert "the 1 of 4 points it finished stay" in note and "only the other 3 are made" in note
    assert "epoch" not in note  # a sweep has points, not epochs
    at.button(key=f"resume-{job.id}").click().run()
    assert not at.exception
    assert jobs.get(job.id).status == "queued"
    jobs.work("cpu", idle_exit=0.1)
    table = list_runs()
    assert jobs.get(job.id).status == "done" and len(table) == 4  # four points, four runs: none made twice
    assert set(table["sweep"]) == {job.id} and kept in set(table["path"])


def test_a_running_sweep_counts_its_points(root):
    from prunekit.models.zoo import build_model

    job = jobs.submit("sweep", {"criteria": ["l1", "fpgm"], "targets": [0.3, 0.5], "data": "cifar10",
                                "arch": "resnet20", "num_classes": 10, "input_size": [3, 32, 32]},
                      model=build_model("resnet20"), arch="resnet20", num_classes=10, device="cpu", root=root)
    job.save(status="running", process=_this_process())
    (job.path / "progress.json").write_text(json.dumps({"fraction": 0.5, "eta_s": 30, "done": 2, "total": 4}))
    at = _page()
    assert not at.exception
    assert [b.proto.text for b in at.get("progress")] == ["point 2/4 · ETA 30 s"]


def test_the_finished_table_fits_a_projector_and_the_details_hold_the_rest(root):
    # the table used to have eight columns (cut at 1280 px) and a failure's raw "ValueError: ..." cut in its cell
    long = ("ValueError: run gone has no pruned model (model.safetensors): prune it again on the Plan & prune page, "
            "then queue the fine-tuning from there, or pick another run on the Compare page")
    failed = jobs.submit("finetune", {"run": "runs/gone", "epochs": 2}, device="cpu", root=root)
    failed.save(status="failed", started="2026-12-07T18:01:00+00:00", finished="2026-12-07T18:01:04+00:00",
                error=long)
    at = _page()
    assert not at.exception
    (frame,) = at.dataframe
    assert list(frame.proto.column_order) == ["finished", "status", "what", "took", "result"]
    assert sum(json.loads(frame.proto.columns)[c]["width"] for c in frame.proto.column_order) <= 818  # 1280 px
    result = frame.value.loc[0, "result"]
    assert result.startswith("run gone has no pruned model") and result.endswith(" …") and len(result) <= 110
    (details,) = [m.value for m in at.markdown if f"job `{failed.id}`" in m.value]
    assert "on cpu, queued by" in details and "Fine-tune run gone for 2 epochs" in details and "after 4 s" in details
    assert any(e.value == f"This job failed: {long.removeprefix('ValueError: ')}" for e in at.error)  # whole
