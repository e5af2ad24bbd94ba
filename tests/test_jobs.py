"""Background jobs: one at a time per device in submission order, cancel, a failing job does not stop the
queue, state on disk; and with a real worker process: a killed worker leaves the job and its run interrupted,
and resuming completes the fine-tuning."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from prunekit.runs import jobs
from prunekit.errors import UnknownNameError, UserError
from prunekit.runs.jobs import JobKind
from prunekit.runs.jobs.worker import Context
from prunekit.models.zoo import build_model
from prunekit.pruning.presets import get_preset
from prunekit.runs.records import prune_run, read_manifest
from prunekit.pruning.structure import estimate, structure
from tests.conftest import REPO

SIZE = (3, 32, 32)


@pytest.fixture
def fake_kinds(monkeypatch, tmp_path):
    """Job kinds registered for the test (unregistered after it) that run in this process: ``steps`` (n steps of
    dt seconds, logging start and end to ``log.jsonl``) and ``boom`` (raises). The worker loop runs in-process
    (``jobs.work``)."""
    log = tmp_path / "log.jsonl"

    class Steps(JobKind):
        name, requires = "steps", ("n",)

        def run(self, job, ctx: Context):
            with open(log, "a") as fh:
                fh.write(json.dumps({"job": job.id, "event": "start", "t": time.monotonic()}) + "\n")
            n = job.args["n"]
            for i in range(1, n + 1):
                time.sleep(job.args.get("dt", 0.01))
                ctx.steps(i, n)
            with open(log, "a") as fh:
                fh.write(json.dumps({"job": job.id, "event": "end", "t": time.monotonic()}) + "\n")
            return {"steps": n}

    class Boom(JobKind):
        name = "boom"

        def run(self, job, ctx):
            raise RuntimeError("CUDA out of memory (simulated)")

    for kind in (Steps, Boom):
        jobs.KINDS.register(kind)
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    yield tmp_path / "jobs", log
    for kind in (Steps, Boom):
        jobs.KINDS.unregister(kind.name)


def _events(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def _wait(predicate, timeout=300.0, every=0.05):
    """Wait for the state ``predicate()`` (polled); False after ``timeout`` s, a deadline for a hang, not a pace."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_the_queue_runs_jobs_one_at_a_time_in_order_and_a_failure_does_not_stop_it(fake_kinds):
    root, log = fake_kinds
    a = jobs.submit("steps", {"n": 5}, device="cpu", root=root)
    bad = jobs.submit("boom", {}, device="cpu", root=root)
    b = jobs.submit("steps", {"n": 6}, device="cpu", root=root)
    assert [j.status for j in jobs.list_jobs(root)] == ["queued"] * 3
    assert jobs.work("cpu", root, idle_exit=0.1) == 0
    assert [jobs.get(j.id, root).status for j in (a, bad, b)] == ["done", "failed", "done"]
    events = _events(log)
    assert [(e["job"], e["event"]) for e in events] == [(a.id, "start"), (a.id, "end"), (b.id, "start"),
                                                        (b.id, "end")]  # never two at once, in submission order
    failed = jobs.get(bad.id, root)
    assert failed.error == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in failed.traceback and "simulated" in failed.traceback
    done = jobs.get(b.id, root)
    assert done.result == {"steps": 6} and done.progress["fraction"] == 1.0 and done.spec["attempts"] == 1


def test_cancel_stops_a_running_job_and_a_queued_one_never_starts(fake_kinds):
    root, log = fake_kinds
    long = jobs.submit("steps", {"n": 2000, "dt": 0.005}, device="cpu", root=root)
    queued = jobs.submit("steps", {"n": 3}, device="cpu", root=root)
    worker = threading.Thread(target=jobs.work, args=("cpu", root), kwargs={"idle_exit": 0.1})
    worker.start()
    assert _wait(lambda: jobs.get(long.id, root).status == "running")
    assert _wait(lambda: jobs.get(long.id, root).progress.get("done", 0) > 0)
    jobs.cancel(queued.id, root)
    assert jobs.get(queued.id, root).status == "cancelled"
    jobs.cancel(long.id, root)
    worker.join(60)
    assert not worker.is_alive()
    stopped = jobs.get(long.id, root)
    assert stopped.status == "cancelled" and stopped.error == "cancelled by the user"
    assert stopped.progress["done"] < 2000
    assert [e["job"] for e in _events(log)] == [long.id]  # the queued one never started
    assert jobs.get(queued.id, root).error == "cancelled before it started"
    with pytest.raises(ValueError, match="only a queued or running job"):
        jobs.cancel(long.id, root)
    resumed = jobs.resume(long.id, root)
    assert resumed.status == "queued" and not (resumed.path / "cancel").exists()


def test_submit_refuses_what_it_cannot_run(fake_kinds):
    root, _ = fake_kinds
    with pytest.raises(ValueError, match="unknown job kind 'fly'"):
        jobs.submit("fly", {}, root=root)
    with pytest.raises(ValueError, match="a finetune job needs run"):
        jobs.submit("finetune", {"epochs": 1}, root=root)
    with pytest.raises(ValueError, match="needs the model"):
        jobs.submit("score", {"criterion": "l1", "data": "cifar10"}, root=root)
    with pytest.raises(ValueError, match="no job"):
        jobs.get("../../etc", root)
    assert jobs.list_jobs(root) == []


def test_the_same_job_is_not_queued_twice_while_the_first_is_active(fake_kinds):
    # a double click on "Queue fine-tuning" queued the same fine-tuning of the same run twice
    root, _ = fake_kinds
    first = jobs.submit("steps", {"n": 3}, device="cpu", root=root)
    with pytest.raises(ValueError, match=f"the same steps job is already queued as {first.id}"):
        jobs.submit("steps", {"n": 3}, device="cpu", root=root)
    other = jobs.submit("steps", {"n": 4}, device="cpu", root=root)  # other arguments: another job
    assert [j.id for j in jobs.list_jobs(root)] == [other.id, first.id]
    assert jobs.work("cpu", root, idle_exit=0.1) == 0
    again = jobs.submit("steps", {"n": 3}, device="cpu", root=root)  # the first is done: queueing it again is fine
    assert again.status == "queued"


def test_submit_refuses_bad_hyperparameters_before_queueing(fake_kinds):
    root, _ = fake_kinds
    for kind, args, words in (
            ("finetune", {"run": "r", "epochs": 3, "lr": float("inf")}, "lr (the base learning rate) must be a "
                                                                         "finite number in (0, 10], got inf"),
            ("finetune", {"run": "r", "epochs": 2.5}, "epochs (the passes over the training images) must be a whole "
                                                      "number >= 1, got 2.5"),
            ("train", {"model": "resnet20", "data": "cifar10", "epochs": 1, "weight_decay": -1},
             "weight_decay (the L2 penalty) must be a finite number in [0, 1), got -1")):
        with pytest.raises(ValueError) as err:
            jobs.submit(kind, args, device="cpu", root=root)
        assert words in str(err.value)
    assert jobs.list_jobs(root) == []
    job = jobs.submit("finetune", {"run": "r", "epochs": 3.0, "lr": 0.02}, device="cpu", root=root)  # JSON's 3.0
    config = jobs.job_kind("finetune").config(job.args)
    assert (config.epochs, config.lr) == (3, 0.02)


def test_a_sensitivity_job_with_a_bad_scores_file_is_refused_at_submit(fake_kinds, tmp_path):
    from prunekit.criteria.scores import score

    root, _ = fake_kinds
    model = build_model("resnet20")
    table = score(model, "l1", cache=False)
    table.loc[table.layer == "layer1.0.conv1", "score"] = float("nan")
    table.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"nan.csv: 'layer1.0.conv1' has no usable score for filters 0, 1, 2"):
        jobs.submit("sensitivity", {"scores": str(tmp_path / "nan.csv"), "data": "cifar10"}, device="cpu",
                    model=model, arch="resnet20", num_classes=10, root=root)
    assert jobs.list_jobs(root) == []


SWEEP_ARGS = {"criteria": ["l1"], "targets": [0.5], "data": "cifar10", "arch": "resnet20", "num_classes": 10,
              "input_size": [3, 32, 32]}
BAD_INPUTS = [  # (kind, arguments, words of its refusal, naming the value)
    ("finetune", {"run": "r", "epochs": 3, "lr": float("inf")},
     "lr (the base learning rate) must be a finite number in (0, 10], got inf"),
    ("train", {"model": "resnet20", "epochs": 1}, "a train job needs data (a data set's name) or folder"),
    ("score", {"criterion": "nope", "data": "cifar10"}, "unknown criterion 'nope'"),
    ("score", {"criterion": "l1", "data": "cifar10", "n": 2.5}, "n (the probe images) must be a whole number >= 1, "
                                                                "got 2.5"),
    ("sensitivity", {"scores": "scores.csv", "data": "cifar10", "ratios": [0.5, 1.5]},
     "ratio of 'sensitivity' must be a number in [0, 0.95], got 1.5"),
    ("sweep", {**SWEEP_ARGS, "criteria": ["l1", "nope"]}, "unknown criterion 'nope'"),
    ("sweep", {**SWEEP_ARGS, "targets": [0.5, 1.5]}, "each in (0, 1); got [1.5]"),
    ("search", {"data": "cifar10", "target": 1.5, "scores": "scores.csv"},
     "target must be a fraction of flops to remove, in (0, 1), got 1.5"),
]


def test_every_built_in_kind_has_a_bad_input_case():
    assert {kind for kind, _, _ in BAD_INPUTS} == set(jobs.KINDS.names())


@pytest.mark.parametrize("kind, args, words", BAD_INPUTS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_INPUTS)])
def test_each_kind_refuses_a_bad_input_itself_and_submit_writes_nothing(kind, args, words, tmp_path):
    entry = jobs.job_kind(kind)
    model = build_model("resnet20") if entry.needs_model else None
    with pytest.raises(UserError) as err:
        entry.check(args, model)  # the kind's own check, without the queue
    assert words in str(err.value)
    root = tmp_path / "jobs"
    with pytest.raises(UserError) as err:
        jobs.submit(kind, args, device="cpu", model=model, arch="resnet20", num_classes=10, root=root,
                    start_worker=False)
    assert words in str(err.value)
    assert not root.exists()


def test_a_kind_registered_outside_the_package_runs_through_the_queue_and_the_worker(tmp_path):
    root = tmp_path / "jobs"

    class Echo(JobKind):
        name, requires = "echo", ("text",)

        def check(self, args, model):
            if not isinstance(args["text"], str):
                raise UserError(f"text must be a string, got {args['text']!r}")

        def describe(self, args):
            return f"Echo {args['text']!r}"

        def run(self, job, ctx):
            ctx.steps(1, 1)
            return {"echo": job.args["text"].upper()}

    jobs.KINDS.register(Echo)
    try:
        with pytest.raises(UserError, match="text must be a string, got 3"):
            jobs.submit("echo", {"text": 3}, device="cpu", root=root, start_worker=False)
        assert not root.exists()
        job = jobs.submit("echo", {"text": "hi"}, device="cpu", root=root, start_worker=False)
        before = sorted(p.name for p in root.rglob("*"))
        with pytest.raises(UserError, match=r"text must be a string, got \['hi'\]"):
            jobs.submit("echo", {"text": ["hi"]}, device="cpu", root=root, start_worker=False)
        assert sorted(p.name for p in root.rglob("*")) == before
        assert job.description == "Echo 'hi'"
        assert jobs.work("cpu", root, idle_exit=0.1) == 0
        done = jobs.get(job.id, root)
        assert (done.status, done.result, done.progress["fraction"]) == ("done", {"echo": "HI"}, 1.0)
    finally:
        jobs.KINDS.unregister("echo")
    with pytest.raises(UnknownNameError, match="unknown job kind 'echo'"):
        jobs.submit("echo", {"text": "hi"}, device="cpu", root=root, start_worker=False)


BAD_JOBS = {  # directory name -> (job.json's text, words of the reason)
    "20000101-000001-list-aaaaaa": ("[1, 2]", "it holds a JSON list, not an object"),
    "20000101-000002-broken-aaaaaa": ('{"id": ', "not JSON"),
    "20000101-000003-noargs-aaaaaa": ('{"id": "x", "kind": "train", "status": "queued", "device": "cpu"}',
                                      "'args' is missing"),
    "20000101-000004-status-aaaaaa": ('{"id": "x", "kind": "train", "status": "lost", "device": "cpu", "args": {}}',
                                      "'status' must be one of"),
}


def write_bad_jobs(root):
    for name, (text, _) in BAD_JOBS.items():
        (root / name).mkdir(parents=True)
        (root / name / "job.json").write_text(text)


def test_a_bad_job_file_is_listed_unreadable_and_the_queue_goes_on(fake_kinds, capsys):
    from prunekit.cli import main

    root, _ = fake_kinds
    good = jobs.submit("steps", {"n": 1}, device="cpu", root=root)
    write_bad_jobs(root)
    (good.path / "progress.json").write_text("[0.5]")  # progress of the wrong shape: none
    (root / "20000101-000009-new-aaaaaa").mkdir()  # a job being created (no job.json yet) is not listed
    listed = {j.id: j for j in jobs.list_jobs(root)}
    assert set(listed) == {good.id, *BAD_JOBS} and listed[good.id].progress == {}
    for name, (_, words) in BAD_JOBS.items():
        job = listed[name]
        assert job.status == "unreadable" and not job.active and words in job.error, name
        assert str(root / name / "job.json") in job.error and job.description == "unreadable job"
        with pytest.raises(ValueError, match="not a prunekit job"):
            jobs.get(name, root)
    assert main(["jobs", "list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "20000101-000001-list-aaaaaa" in out and "unreadable" in out and good.id in out
    jobs.work("cpu", root, idle_exit=0.1)  # the worker runs the good job past the bad ones
    assert jobs.get(good.id, root).status == "done"


def test_a_job_of_a_dead_worker_reads_interrupted(fake_kinds):
    root, _ = fake_kinds
    job = jobs.submit("steps", {"n": 1}, device="cpu", root=root)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job.save(status="running", process={"pid": dead.pid, "host": os.uname().nodename, "start": None})
    assert jobs.get(job.id, root).status == "interrupted"


def _half_flops_run(root, test_set):
    """The bundled ResNet-20 pruned by L1 to about half its FLOPs (uniform ratios solved for the target)."""
    from prunekit.models.checkpoints import DEFAULT_CHECKPOINT, load_checkpoint
    from prunekit.criteria.scores import score, to_tensors

    model, header = load_checkpoint(DEFAULT_CHECKPOINT)
    struct = structure(model, SIZE)
    plan = get_preset("uniform").make(struct, "resnet20", target=0.5, by="flops", criterion="l1")
    assert 0.45 <= estimate(struct, plan.ratios).macs_reduction <= 0.55
    return prune_run(model, plan, to_tensors(score(model, "l1")), arch="resnet20", num_classes=10, input_size=SIZE,
                     root=root, checkpoint=DEFAULT_CHECKPOINT, data=test_set, latency_batches=(), repeat=1)


def test_a_killed_worker_leaves_the_run_interrupted_and_resume_completes_it(cifar_data_root, tmp_path, monkeypatch):
    from prunekit.data import load_arrays

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("PRUNEKIT_JOBS_NO_WORKER", raising=False)
    root = tmp_path / "jobs"
    run = _half_flops_run(tmp_path / "runs", load_arrays("cifar10", "test").subset(500, seed=0))
    pruned = run.manifest["accuracy"]["pruned"]["accuracy"]
    job = jobs.submit("finetune", {"run": str(run.path), "epochs": 2, "subset": 2560, "test_subset": 500},
                      device="cpu", root=root)  # starts a real worker process
    assert _wait(lambda: jobs.get(job.id, root).progress.get("epoch") == 2
                 and jobs.get(job.id, root).progress.get("batch", 0) >= 2, timeout=600)
    pid = jobs.get(job.id, root).spec["process"]["pid"]
    os.kill(pid, signal.SIGKILL)  # mid-epoch 2
    assert _wait(lambda: jobs.get(job.id, root).status == "interrupted")
    assert read_manifest(run.path)["status"] == "interrupted"
    assert len(read_manifest(run.path)["finetune"]["epochs"]) == 1  # epoch 1's checkpoint survived
    jobs.resume(job.id, root)
    assert _wait(lambda: jobs.get(job.id, root).status in ("done", "failed"), timeout=600)
    finished = jobs.get(job.id, root)
    assert finished.status == "done", finished.error
    assert finished.spec["attempts"] == 2
    manifest = read_manifest(run.path)
    assert manifest["status"] == "done"
    assert [r["epoch"] for r in manifest["finetune"]["epochs"]] == [1, 2] == [r["epoch"] for r in finished.metrics()]
    assert manifest["finetune"]["accuracy"] == finished.result["accuracy"] > pruned  # accuracy recovers
    assert manifest["finetune"]["teacher"]["unpruned"] is True  # the default recipe distils from the bundled file


def test_jobs_from_the_shell(fake_kinds, tmp_path):
    root, _ = fake_kinds
    env = {**os.environ, "PRUNEKIT_JOBS_NO_WORKER": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "prunekit", "jobs", *args, "--root", str(root)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=120)

    out = cli("submit", "finetune", "--arg", "run=runs/x", "--arg", "epochs=3", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert jobs.get(job["job"], root).args == {"run": "runs/x", "epochs": 3}  # 3 read as JSON: an int
    bad = cli("cancel", "nope")
    assert bad.returncode == 2 and "no job 'nope'" in bad.stderr
    jobs.cancel(job["job"], root)
    listed = cli()
    assert job["job"] in listed.stdout and "cancelled" in listed.stdout


def test_a_score_job_fills_the_cache_the_dashboard_reads(fake_kinds, monkeypatch, tmp_path):
    from prunekit.criteria.scores import score

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    root, _ = fake_kinds
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    job = jobs.submit("score", {"criterion": "l2", "data": "cifar10"}, model=model, arch="resnet20", num_classes=10,
                      device="cpu", root=root)
    jobs.work("cpu", root, idle_exit=0.1)
    done = jobs.get(job.id, root)
    assert done.status == "done", done.error
    assert done.result["filters"] == 688
    again = score(model, "l2")
    assert again.attrs["cached"] and again.attrs["key"] == done.result["key"]


def test_a_sweeps_points_are_each_written_however_close_together(fake_kinds, monkeypatch):
    """Progress is throttled for fine steps, but every coarse point is written: a resumed sweep counts off its
    finished points in a burst, and the Jobs page must not lag a point behind until the next one."""
    from prunekit.runs.jobs import worker
    from prunekit.runs.jobs.queue import PROGRESS_FILE

    root, _ = fake_kinds
    job = jobs.submit("steps", {"n": 1}, device="cpu", root=root)
    written = []
    monkeypatch.setattr(worker, "write_text_atomic", lambda path, text: written.append(json.loads(text)["done"])
                        if path.name == PROGRESS_FILE else None)
    monkeypatch.setattr(worker.time, "monotonic", lambda: 100.0)  # every report at the same instant
    ctx = Context(job)
    for done in (1, 2, 3):
        ctx.points(done, 6)
    ctx.steps(4, 6)  # a fine step at that instant: throttled
    assert written == [1, 2, 3]
