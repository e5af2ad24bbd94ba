"""AppTest of the Compare runs page on a temporary runs root ($PRUNEKIT_RUNS): the table, the Pareto front
(known by hand), loading a run's plan into the editor, the empty state and a corrupt manifest."""
import base64
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pages.ui.wording import WRAPPED_ROW_PX, local_time
from prunekit.runs.records import Run, read_manifest
from tests.apptest_kit import open_page

PLAN_RATIOS = {"conv1": 0.5, "layer2.0.conv1": 0.25}


def _run(root, criterion, flops, pruned, finetuned=None, status="done", error=None, ort=None):
    """A run written by hand: ResNet-20 (81.1M FLOPs, 90% before) pruned to ``flops`` FLOPs, timed at batch 1 in
    PyTorch eager (2 ms -> 1 ms) and, given ``ort`` (ms after), in ONNX Runtime (0.8 ms before)."""
    timed = {} if ort is None else {"latency_ms_onnxruntime": {"1": ort}}
    finetune = None if finetuned is None else {
        "accuracy": finetuned, "epochs": [{"epoch": 1, "test_accuracy": finetuned - 2, "train_accuracy": 70.0},
                                          {"epoch": 2, "test_accuracy": finetuned, "train_accuracy": 75.0}]}
    run = Run.create(root, name="resnet20", model={"arch": "resnet20"}, criterion={"name": criterion, "params": {}},
                     plan={"format": "prunekit-plan/1", "arch": "resnet20", "ratios": PLAN_RATIOS,
                           "preset": {"name": "uniform"}},
                     before={"params": 272_474, "flops": 81_100_000, "latency_ms": {"1": 2.0},
                             **({} if ort is None else {"latency_ms_onnxruntime": {"1": 0.8}})},
                     after={"params": 150_000, "flops": flops, "latency_ms": {"1": 1.0}, **timed},
                     accuracy={"before": {"accuracy": 90.0}, "pruned": {"accuracy": pruned}},
                     report={"channels": {"conv1": [16, 8], "layer1.0.conv1": [16, 8]}}, finetune=finetune)
    run.finish(status, error)
    return run.manifest["id"]


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("PRUNEKIT_RUNS", str(root))
    return root


@pytest.fixture
def three_runs(runs_root):
    """a: cheapest and best after fine-tuning; b: dearer, best of all; c: beaten by a; d: failed."""
    ids = {"a": _run(runs_root, "l1", 20e6, 80.0, finetuned=88.0), "b": _run(runs_root, "sfm_entropy", 30e6, 90.0),
           "c": _run(runs_root, "l1", 25e6, 70.0)}
    ids["d"] = _run(runs_root, "fpgm", 20e6, 50.0, status="failed", error="RuntimeError: out of memory")
    return ids


def _page(**session) -> AppTest:
    return open_page("pages/compare.py", **session)


def _traces(at, index: int = 0) -> list[dict]:
    """The traces of the page's ``index``-th plotly chart, numpy arrays (sent as typed arrays) decoded."""
    def decode(v):
        return np.frombuffer(base64.b64decode(v["bdata"]), v["dtype"]).tolist() if isinstance(v, dict) and \
            "bdata" in v else v
    return [{k: decode(v) for k, v in t.items()} for t in json.loads(at.get("plotly_chart")[index].proto.spec)["data"]]


def _table(at):
    return at.dataframe[-1].value.set_index("run")


def test_the_table_lists_every_run_with_its_pareto_front(three_runs):
    at = _page()
    assert not at.exception
    table = _table(at)
    assert set(table.index) == set(three_runs.values())
    ids = {v: k for k, v in three_runs.items()}
    # after fine-tuning: a (20M, 88%) and b (30M, 90%) are on the front; c (25M, 70%) and the failed d are not
    assert {ids[r]: bool(p) for r, p in table["Pareto"].items()} == {"a": True, "b": True, "c": False, "d": False}
    assert table.loc[three_runs["d"], "status"] == "failed"
    assert table.loc[three_runs["d"], "error"] == "out of memory"  # the message, without the exception class
    assert table.loc[three_runs["a"], "FLOPs"] == "81.10M → 20.00M"
    assert "All runs (4)" in [s.value for s in at.subheader]


def test_the_run_header_and_the_table_give_times_as_the_jobs_page_does(runs_root, three_runs):
    # the header said "created 2026-12-07T21:43:11+00:00"; now minutes in this machine's zone, as on the Jobs page
    at = _page(compare_run=three_runs["d"])
    assert not at.exception
    (header,) = [m.value for m in at.markdown if m.value.startswith(f"**{three_runs['d']}**")]
    created = read_manifest(runs_root / three_runs["d"])["created"]
    assert f"created {local_time(created)}" in header and not re.search(r"T\d\d:\d\d:\d\d", header)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", local_time(created))
    assert set(_table(at)["created"]) == {local_time(read_manifest(runs_root / r)["created"])
                                          for r in three_runs.values()}
    assert [e.value for e in at.error] == ["This run failed: out of memory"]  # no "RuntimeError:"


def test_every_view_of_the_runs_table_fits_a_projector(runs_root, three_runs):
    # the table had 17 columns side by side, cut at 1280 px ("test i..."); each view now fits the main column
    at, shown = _page(), set()
    for view in ("accuracy", "cost", "origin and status"):
        at.segmented_control(key="compare_columns").set_value(view).run()
        assert not at.exception
        frame = at.dataframe[-1].proto
        assert frame.column_order[0] == "run", view
        assert sum(json.loads(frame.columns)[c]["width"] for c in frame.column_order) <= 818, view
        shown |= set(frame.column_order)
    assert shown == set(_table(at).reset_index().columns)  # every column in one view or another
    assert at.dataframe[-1].proto.row_height == WRAPPED_ROW_PX  # the failed run's message on up to four lines
    at.segmented_control(key="compare_columns").set_value("accuracy").run()
    assert not at.dataframe[-1].proto.row_height  # one line a row
    Run.create(runs_root, name="torchvision:densenet121@32").finish("done")  # an id of 49 characters
    at.run()
    assert at.dataframe[-1].proto.row_height == WRAPPED_ROW_PX  # it wraps, never cut


def test_after_pruning_only_the_front_moves(three_runs):
    at = _page(compare_stage="pruned")
    ids = {v: k for k, v in three_runs.items()}
    # right after pruning: a (20M, 80%) and b (30M, 90%); d (20M, 50%) is beaten by a
    assert {ids[r]: bool(p) for r, p in _table(at)["Pareto"].items()} == {"a": True, "b": True, "c": False,
                                                                          "d": False}


def test_the_chart_has_every_run_and_the_unpruned_model_as_a_line_and_on_request_a_star(three_runs):
    at = _page()
    traces = _traces(at)
    runs = {row[0] for t in traces if t.get("customdata") and t["name"] != "unpruned" for row in t["customdata"]}
    assert runs == set(three_runs.values())
    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    # by default the x axis fits the runs (20M-30M), not the unpruned model's 81.1M: no column of dots
    lo, hi = layout["xaxis"]["range"]
    assert 10e6 < lo < 20e6 and 30e6 < hi < 40e6
    (line,) = [sh for sh in layout["shapes"] if sh.get("line", {}).get("dash") == "dot"]
    assert line["y0"] == line["y1"] == 90.0
    assert any("unpruned resnet20: 90.00%" in a["text"] for a in layout["annotations"])
    assert not [t for t in traces if t["name"] == "unpruned"]
    (star,) = [t for t in _traces(_page(compare_base=True)) if t["name"] == "unpruned"]
    assert star["x"] == [81_100_000] and star["y"] == [90.0] and star["marker"]["symbol"] == "star"


def test_no_two_criteria_share_a_colour_and_a_symbol(three_runs):
    traces = [t for t in _traces(_page()) if t.get("mode") == "markers" and t["name"] != "unpruned"]
    styles = [(t["marker"]["color"], json.dumps(t["marker"]["symbol"])) for t in traces]
    assert len(traces) >= 2 and len(set(styles)) == len(styles)


def test_the_runtime_picker_switches_the_latency_axis_and_the_table_column(runs_root):
    ids = {"a": _run(runs_root, "l1", 20e6, 80.0, ort=0.3), "b": _run(runs_root, "fpgm", 30e6, 85.0, ort=0.5),
           "old": _run(runs_root, "l1", 25e6, 70.0)}  # a run from before ONNX Runtime was timed

    def chart(at):
        xs = {row[0]: x for t in _traces(at) if t.get("mode") == "markers" for row, x in zip(t["customdata"], t["x"])}
        return xs, json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["xaxis"]["title"]["text"]

    eager = _page(compare_x="latency_b1")
    assert not eager.exception
    assert chart(eager) == ({ids["a"]: 1.0, ids["b"]: 1.0, ids["old"]: 1.0}, "PyTorch eager latency, batch 1 (ms)")
    ort = _page(compare_x="latency_b1", compare_runtime="onnxruntime")
    assert not ort.exception
    assert chart(ort) == ({ids["a"]: 0.3, ids["b"]: 0.5}, "ONNX Runtime latency, batch 1 (ms)")  # old: none
    table = _table(ort)
    assert "latency b1 (ms, PyTorch eager)" not in table
    assert table["latency b1 (ms, ONNX Runtime)"].fillna(-1).to_dict() == {ids["a"]: 0.3, ids["b"]: 0.5,
                                                                          ids["old"]: -1}
    assert _table(eager)["latency b1 (ms, PyTorch eager)"].to_dict() == {r: 1.0 for r in ids.values()}
    run = _page(compare_run=ids["a"], compare_runtime="onnxruntime")  # the run's own latencies, per runtime
    latencies = run.dataframe[0].value
    assert latencies[["runtime", "before", "after"]].values.tolist() == [["PyTorch eager", 2.0, 1.0],
                                                                         ["ONNX Runtime", 0.8, 0.3]]


def test_load_this_plan_sets_the_editor_plan_and_criterion(three_runs):
    at = _page(compare_run=three_runs["b"])
    assert not at.exception
    assert [m.value for m in at.metric if m.label == "After pruning"] == ["90.00%"]
    at.button(key="compare_load").click().run()
    assert at.session_state["plan"] == PLAN_RATIOS and at.session_state["criterion"] == "sfm_entropy"


def test_an_empty_runs_root_says_how_to_make_a_run(runs_root):
    at = _page()
    assert not at.exception
    message = " ".join(i.value for i in at.info)
    assert "No runs yet" in message and "Plan & prune" in message
    assert "python -m prunekit prune" in at.code[0].value


def test_a_corrupt_manifest_is_listed_unreadable_and_the_page_stays_up(runs_root, three_runs):
    broken = runs_root / "20000101-000000-resnet20-abcdef"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format": "prunekit-run/1", "id": ')
    at = _page()
    assert not at.exception
    table = _table(at)
    assert table.loc[broken.name, "status"] == "unreadable"
    assert "not a readable run manifest" in table.loc[broken.name, "error"]


def test_manifests_of_the_wrong_shape_are_listed_unreadable_and_the_page_stays_up(runs_root, three_runs):
    from tests.test_runs import BAD_MANIFESTS

    for name, (text, _) in BAD_MANIFESTS.items():
        (runs_root / name).mkdir()
        (runs_root / name / "manifest.json").write_text(text)
    at = _page()
    assert not at.exception
    table = _table(at)
    (why,) = [e for e in at.expander if "cannot be read" in e.label]
    for name, (_, words) in BAD_MANIFESTS.items():  # the whole reason under the table, its start in the table
        assert table.loc[name, "status"] == "unreadable" and table.loc[name, "error"].startswith("…/manifest.json")
        assert any(f"`{name}`: " in m.value and words in m.value for m in why.markdown), name
    assert (table["status"] == "done").sum() == 3  # the good runs are all there


def _sweep_point(root, sweep, criterion, target, flops, acc):
    """One point of sweep ``sweep``, written by hand (its spec not recorded: never marked partial)."""
    run = Run.create(root, name="resnet20", model={"arch": "resnet20"}, criterion={"name": criterion},
                     plan={"preset": {"name": "uniform"}}, sweep={"id": sweep, "criterion": criterion, "target": target},
                     before={"params": 272_474, "flops": 81_100_000}, after={"params": 1, "flops": flops},
                     accuracy={"before": {"accuracy": 90.0}, "pruned": {"accuracy": 10.0},
                               "recalibrated": {"accuracy": acc}})
    run.finish("done")


def _queue(at) -> None:
    next(b for b in at.button if b.label == "Queue the sweep").click()
    at.run()
    assert not at.exception


def test_a_sweep_is_queued_from_the_page_on_the_saliency_criterion_and_l1_without_latency(runs_root, tmp_path,
                                                                                         monkeypatch):
    from prunekit.runs import jobs

    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    assert _page().multiselect[0].value == ["sfm_entropy", "l1"]  # the Saliency page's default criterion, and l1
    at = _page(criterion="fpgm")  # the criterion chosen on the Saliency page
    assert at.multiselect[0].value == ["fpgm", "l1"]
    assert at.pills[0].value == []  # no latency unless asked: the quick sweep
    at.text_input[0].set_value("0.5, 0.2")
    _queue(at)
    job = jobs.get(at.session_state["compare_last_sweep"][0])
    assert job.kind == "sweep" and job.status == "queued"
    assert job.args["criteria"] == ["fpgm", "l1"] and job.args["targets"] == [0.2, 0.5]
    assert job.args["arch"] == "resnet20" and job.args["input_size"] == [3, 32, 32]
    assert job.args["round_to"] == 1  # the Plan page's rounding (none), which the form starts from
    assert job.args["runtimes"] == [] and job.args["plain"] is False  # no latency, the recalibrated accuracy only
    next(c for c in at.checkbox if c.label.startswith("Also measure each point right after pruning")).check()
    next(n for n in at.number_input if n.label == "Round kept channels to a multiple of").set_value(16)
    at.pills[0].set_value(["eager"])  # one click adds the latency in PyTorch eager
    at.text_input[0].set_value("0.3")
    _queue(at)
    queued = jobs.get(at.session_state["compare_last_sweep"][0]).args
    assert queued["round_to"] == 16 and queued["runtimes"] == ["eager"] and queued["plain"] is True
    at.text_input[0].set_value("0.5, 2")
    _queue(at)
    assert any("each in (0, 1)" in e.value for e in at.error)  # refused, with the reason


def test_one_legend_entry_and_one_fixed_colour_per_criterion_however_many_sweeps(runs_root):
    from pages.ui.figures import CRITERION_COLORS

    for sweep in ("s1", "s2"):  # two sweeps of l1: two curves, one legend entry
        for target, flops, acc in ((0.2, 60e6, 80.0), (0.5, 40e6, 70.0)):
            _sweep_point(runs_root, sweep, "l1", target, flops, acc)
    _sweep_point(runs_root, "s3", "fpgm", 0.5, 41e6, 72.0)
    traces = _traces(_page())
    legend = [t["name"] for t in traces if t.get("showlegend") is not False and t["name"] != "Pareto front"]
    assert sorted(legend) == ["fpgm", "l1"]  # not "l1 (sweep)" once per sweep
    lines = [t for t in traces if t.get("mode") == "lines" and t.get("legendgroup") == "l1"]
    assert len(lines) == 2 and all(t["showlegend"] is False for t in lines)
    assert lines[0]["x"] == [40e6, 60e6] and lines[0]["y"] == [70.0, 80.0]  # the recalibrated accuracy
    colours = {t["legendgroup"]: t.get("marker", {}).get("color") or t["line"]["color"] for t in traces
               if t.get("legendgroup")}
    assert colours == {"l1": CRITERION_COLORS["l1"], "fpgm": CRITERION_COLORS["fpgm"]}
    assert all(t["line"]["dash"] == "solid" for t in lines)  # complete (or of unknown size): not marked partial


def test_a_criterion_keeps_its_colour_whichever_others_are_drawn(runs_root):
    # the colour came from the criterion's place among those drawn: fpgm changed colour when l1 runs appeared
    _run(runs_root, "fpgm", 30e6, 85.0)
    alone = {t["name"]: t["marker"]["color"] for t in _traces(_page()) if t.get("mode") == "markers"}
    _run(runs_root, "l1", 20e6, 80.0)
    _run(runs_root, "bn_scale", 25e6, 82.0)
    beside = {t["name"]: t["marker"]["color"] for t in _traces(_page()) if t.get("mode") == "markers"}
    assert alone["fpgm"] == beside["fpgm"] and len(set(beside.values())) == 3


def test_a_run_not_fine_tuned_is_fine_tuned_from_its_own_page(three_runs, cifar_data_root, tmp_path, monkeypatch):
    from prunekit.runs import jobs

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    at = _page(compare_run=three_runs["b"])
    message = " ".join(i.value for i in at.info)
    assert "queue its fine-tuning in the form below" in message and "Jobs page" not in message
    next(n for n in at.number_input if n.label == "Epochs").set_value(1)
    next(b for b in at.button if b.label == "Queue fine-tuning").click()
    at.run()
    assert not at.exception
    job = jobs.get(at.session_state["plan_last_job"])
    assert job.kind == "finetune" and job.args["run"].endswith(three_runs["b"]) and job.args["data"] == "cifar10"
    assert any(f"Fine-tuning queued as job {job.id}" in s.value for s in at.success)


@pytest.fixture
def fragments(monkeypatch):
    """The run_every of every st.fragment the page makes (the real fragment still runs)."""
    import streamlit as st

    made, real = [], st.fragment

    def recording(func=None, *, run_every=None, **kwargs):
        made.append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(st, "fragment", recording)
    return made


def test_the_page_redraws_itself_only_while_a_sweep_of_the_sidebars_model_runs(three_runs, tmp_path, monkeypatch,
                                                                             fragments):
    from pages.ui.sweep_form import REFRESH_S
    from prunekit.models.zoo import build_model
    from prunekit.runs import jobs
    from prunekit.runs.records import _this_process

    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")

    def sweep(arch):
        return jobs.submit("sweep", {"criteria": ["l1"], "targets": [0.5], "data": "cifar10", "arch": arch,
                                     "num_classes": 10, "input_size": [3, 32, 32]},
                           model=build_model("resnet20"), arch=arch, num_classes=10, device="cpu")

    def redraws(at):
        fragments.clear()
        at.run()
        assert not at.exception
        return fragments

    at = _page()
    assert redraws(at) == [None]  # nothing runs: no timer
    other = sweep("vgg11_bn")
    other.save(status="running", process=_this_process())
    assert redraws(at) == [None]  # another model's sweep: not this chart's
    mine = sweep("resnet20")
    mine.save(status="running", process=_this_process())
    (mine.path / "progress.json").write_text(json.dumps({"fraction": 0.5, "done": 1, "total": 2}))
    assert redraws(at) == [REFRESH_S]
    assert any(f"Sweep job `{mine.id}`" in c.value and "point 1 of 2" in c.value for c in at.caption)
    mine.save(status="done")
    assert redraws(at) == [None]  # it ended: the timer stops


def test_a_cancelled_sweep_is_marked_partial_and_resumed_from_the_page_as_the_same_sweep(runs_root, tmp_path,
                                                                                        cifar_data_root,
                                                                                        monkeypatch):
    from prunekit.runs import jobs
    from prunekit.runs.records import list_runs
    from tests.test_sweeps import cancel_after_first_point, submit_sweep_job

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    job = submit_sweep_job(tmp_path, monkeypatch, n=64)  # l1 and random at 0.2 and 0.4: four points
    with monkeypatch.context() as m:
        cancel_after_first_point(m)
        jobs.work("cpu", idle_exit=0.1)
    (kept,) = list_runs(runs_root)["path"]
    at = _page(compare_stage="recalibrated")
    (line,) = [t for t in _traces(at) if t.get("legendgroup") == "l1" and "lines" in t["mode"]]
    assert line["line"]["dash"] == "dash" and "l1 (partial: 1 of 2 points)" in line["text"]
    notice = next(i.value for i in at.info if "stopped part-way" in i.value)
    assert f"Sweep `{job.id}`" in notice and "l1 1 of 2, random 0 of 2" in notice and "epoch" not in notice
    at.button(key=f"compare_resume_{job.id}").click().run()
    assert not at.exception
    assert jobs.get(job.id).status == "queued"  # the same job, so the same sweep id
    jobs.work("cpu", idle_exit=0.1)
    table = list_runs(runs_root)
    assert len(table) == 4 and set(table["sweep"]) == {job.id} and kept in set(table["path"])  # none redone
    at = _page(compare_stage="recalibrated")
    lines = [t for t in _traces(at) if t.get("legendgroup") in ("l1", "random") and "lines" in t["mode"]]
    assert len(lines) == 2 and {t["line"]["dash"] for t in lines} == {"solid"}  # complete: no longer marked
    assert not any("stopped part-way" in i.value for i in at.info)


def test_queueing_a_stopped_sweep_again_resumes_it_rather_than_starting_over(runs_root, tmp_path, monkeypatch):
    from prunekit.runs import jobs

    monkeypatch.setenv("PRUNEKIT_JOBS", str(tmp_path / "jobs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    at = _page(criterion="l1")
    _queue(at)
    first, resumed = at.session_state["compare_last_sweep"]
    assert not resumed
    jobs.cancel(first)
    _queue(at)  # the same form again: the same sweep of the same weights
    again, resumed = at.session_state["compare_last_sweep"]
    assert again == first and resumed and jobs.get(first).status == "queued"
    assert len(jobs.list_jobs()) == 1  # no second sweep under a new id
    assert any("resumed as job" in s.value and "keeping the points it finished" in s.value for s in at.success)
