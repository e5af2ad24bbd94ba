"""AppTest: the Plan & prune page on the bundled ResNet-20: the editor's groups, the instant estimate, presets,
bad ratios, a real pruning recorded as a run (the cached model untouched), and its fine-tuning queued as a job.

The app runs once on its default page, then switches to the plan page (AppTest needs a first run to know an
st.navigation app's pages); choices are set through session_state before the first run."""
import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from pages.ui.sidebar import REGISTRY_SOURCE
from pages.ui.state import CRITERION, LONG_PLAN, PLAN, PLAN_ROUND_TO
from prunekit.criteria.scores import weights_hash
from prunekit.defaults import DISTILL_ALPHA, HELD_OUT, SENSITIVITY
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.zoo import build_model
from prunekit.pruning.presets import get_preset
from prunekit.pruning.prune import coupled_groups
from prunekit.pruning.structure import estimate, structure
from prunekit.text import human
from tests.apptest_kit import open_page
from tests.conftest import REPO

SIZE = (3, 32, 32)
STREAM = "conv1 + layer1.0.conv2 + layer1.1.conv2 + layer1.2.conv2 (residual stream, 16 filters)"


@pytest.fixture(scope="module")
def default():
    model, _ = load_checkpoint(REPO / "assets" / "resnet20_cifar10.safetensors")
    return model, structure(model, SIZE)


@pytest.fixture
def runs(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PRUNEKIT_JOBS_NO_WORKER", "1")
    return tmp_path / "runs"


def _plan_page(**session) -> AppTest:
    at = open_page("pages/plan.py", **session)
    assert not at.exception, [(e.message, e.stack_trace) for e in at.exception]
    return at


def _metrics(at: AppTest) -> dict:
    return {m.label: (m.value, m.delta) for m in at.metric}


def _table(at: AppTest):
    """The plan table (the editor picked with the segmented control; the sliders are picked back after)."""
    at.segmented_control[0].set_value("Table").run()
    assert not at.exception and not [s for s in at.slider if (s.key or "").startswith("ratio::")]
    table = at.data_editor[0].value
    at.segmented_control[0].set_value("Sliders").run()
    return table


def _sliders(at: AppTest) -> dict:
    return {s.key.removeprefix("ratio::"): s for s in at.slider if s.key and s.key.startswith("ratio::")}


def _assert_estimate(at: AppTest, est) -> None:
    """The three metrics and the exact counts under them are prunekit.pruning.plan.estimate's."""
    metrics = _metrics(at)
    assert metrics["Parameters"][0] == human(est.params)
    assert metrics["MACs / image"][0] == human(est.macs)
    assert metrics["FLOPs / image"][0] == human(2 * est.macs)
    assert metrics["Parameters"][1] == f"{est.params / est.params_before - 1:.1%}"
    assert metrics["FLOPs / image"][1] == f"{est.macs / est.macs_before - 1:.1%}"
    exact = f"parameters {est.params_before:,} → {est.params:,}; MACs {est.macs_before:,} → {est.macs:,}"
    assert any(exact in c.value for c in at.caption)


def test_the_editor_has_one_row_per_coupled_group(default):
    model, _ = default
    groups, _ = coupled_groups(model, SIZE)
    assert len(groups) == 12  # ResNet-20's 19 convs: 3 residual streams (4 + 3 + 3 convs) and 9 lone conv1s
    at = _plan_page()
    sliders = _sliders(at)
    assert list(sliders) == [g.root for g in groups]
    assert sliders["conv1"].label == STREAM and sliders["conv1"].max == 15 / 16  # keeps one of 16 filters
    assert sliders["layer3.1.conv1"].label == "layer3.1.conv1 (64 filters)" and sliders["layer3.1.conv1"].max == 0.95
    table = _table(at)
    assert len(table) == 12 and list(table["group"]) == [g.root for g in groups]
    assert _metrics(at)["Parameters"] == ("0.27M", "")  # nothing pruned yet: no delta


def test_a_model_with_many_groups_opens_on_the_table():
    # ResNet-56: 3 residual streams and 27 lone conv1s, a slider each would run far down the page
    at = _plan_page(model_source=REGISTRY_SOURCE, arch="resnet56")
    groups = structure(build_model("resnet56"), SIZE).groups
    assert len(groups) == 30 > LONG_PLAN
    assert at.segmented_control[0].value == "Table" and not _sliders(at)
    assert list(at.data_editor[0].value["group"]) == [g.root for g in groups]
    # every group is in the table, which scrolls at LONG_PLAN rows (DenseNet-121's 120 ran 4,000 px down the page)
    assert any("The table scrolls: 30 groups." in c.value for c in at.caption)


def test_a_plan_in_session_state_drives_sliders_table_and_estimate(default):
    _, struct = default
    ratios = {"conv1": 0.5, "layer3.0.conv2": 0.25, "layer2.1.conv1": 0.75}
    at = _plan_page(**{PLAN: ratios})
    _assert_estimate(at, estimate(struct, ratios))
    sliders = _sliders(at)
    assert sliders["conv1"].value == 0.5 and sliders["layer2.1.conv1"].value == 0.75
    assert sliders["layer1.0.conv1"].value == 0.0
    table = _table(at).set_index("group")
    assert table.loc["layer3.0.conv2", "ratio"] == 0.25 and table.loc["layer3.0.conv2", "kept"] == 48


def test_moving_a_slider_changes_the_plan_and_the_estimate(default):
    _, struct = default
    at = _plan_page()
    _sliders(at)["layer3.0.conv1"].set_value(0.5)
    at.run()
    assert not at.exception
    assert at.session_state[PLAN] == {"layer3.0.conv1": 0.5}
    _assert_estimate(at, estimate(struct, {"layer3.0.conv1": 0.5}))
    assert _table(at).set_index("group").loc["layer3.0.conv1", "kept"] == 32  # the table follows


def test_rounding_kept_channels_changes_the_estimate_the_table_and_the_preset(default):
    _, struct = default
    ratios = {"layer3.0.conv1": 0.3, "conv1": 0.3}
    at = _plan_page(**{PLAN: ratios})
    (control,) = [n for n in at.number_input if n.key == "round_to_input"]
    assert control.label == "Round kept channels to a multiple of" and control.value == 1
    assert "blocks of channels" in control.help and "16 with AVX-512" in control.help
    _assert_estimate(at, estimate(struct, ratios))
    assert _table(at).set_index("group").loc["layer3.0.conv1", "kept"] == 44  # int(64 * 0.7)
    control.set_value(16).run()
    assert not at.exception and at.session_state[PLAN_ROUND_TO] == 16
    rounded = estimate(struct, ratios, 16)
    assert rounded.macs != estimate(struct, ratios).macs
    _assert_estimate(at, rounded)
    table = _table(at).set_index("group")
    assert table.loc["layer3.0.conv1", "kept"] == 48 and table.loc["conv1", "kept"] == 16  # 44 -> 48; 11 -> 16
    at.selectbox(key="preset_kind").set_value("uniform")
    at.radio(key="preset_mode").set_value("a target")
    at.number_input(key="preset_target").set_value(0.5)
    at.button(key="preset_apply").click()
    at.run()
    assert not at.exception
    plan = get_preset("uniform").make(struct, "resnet20", target=0.5, round_to=16)
    _assert_estimate(at, estimate(struct, plan.ratios, 16))
    assert any(f"it removes {plan.preset['reached']:.1%} of the FLOPs" in s.value for s in at.success)


def test_the_uniform_preset_at_half_fills_the_editor(default):
    _, struct = default
    at = _plan_page(preset_kind="uniform", preset_mode="one ratio", preset_value=0.5)
    at.button(key="preset_apply").click()
    at.run()
    assert not at.exception
    plan = get_preset("uniform").make(struct, "resnet20", value=0.5)
    est = estimate(struct, plan.ratios)
    _assert_estimate(at, est)
    # by hand, a half-width ResNet-20: convs 216 + 6*576 + 1152 + 5*2304 + 4608 + 5*9216, BNs 2*(8+48+96+192),
    # fc 32*10 + 10
    assert est.params == 68050 and _metrics(at)["Parameters"][0] == "68.05k"
    assert {root: s.value for root, s in _sliders(at).items()} == {g.root: 0.5 for g in struct.groups}
    assert at.session_state["plan_preset"]["name"] == "uniform"
    at.run()  # another run (the predicted accuracy arriving reruns the page): the notice stays
    assert [s.value for s in at.success] == ["Uniform applied: the editor below holds its ratios."]
    _sliders(at)["layer3.0.conv1"].set_value(0.25).run()  # the plan edited: it is no longer the preset's
    assert not at.exception and not at.success


def test_the_published_vgg16_budget_explains_itself_on_resnet20():
    at = _plan_page(preset_kind="vgg16_published")
    at.button(key="preset_apply").click()
    at.run()
    assert not at.exception
    assert any("defined for vgg16_bn" in e.value for e in at.error)
    assert at.session_state[PLAN] == {}


@pytest.mark.parametrize("ratio, words", [
    (1.2, "ratio of 'conv1' must be a number in [0, 0.95], got 1.2"),
    (-0.1, "ratio of 'conv1' must be a number in [0, 0.95], got -0.1"),
    (0.95, "ratio 0.95 removes every one of the 16 filters of 'conv1'"),
])
def test_a_bad_ratio_is_a_message_and_the_previous_plan_stays(default, ratio, words):
    _, struct = default
    good = {"layer1.0.conv1": 0.5}
    at = _plan_page(**{PLAN: good})
    at.session_state[PLAN] = {**good, "conv1": ratio}
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert words in errors and "The previous plan stays" in errors
    assert at.session_state[PLAN] == good
    _assert_estimate(at, estimate(struct, good))


def test_prune_with_l1_records_one_run_and_leaves_the_cached_model_alone(default, runs, cifar_data_root,
                                                                        monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    _, struct = default
    ratios = {"conv1": 0.25, "layer3.0.conv1": 0.5}
    at = _plan_page(**{CRITERION: "l1", PLAN: ratios})
    cached = at.session_state["selection"].model
    before = weights_hash(cached)
    at.button(key="prune_go").click()
    at.run()
    assert not at.exception
    made = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(made) == 1 and at.session_state["last_run"] == made[0].name
    m = json.loads((made[0] / "manifest.json").read_text())
    assert m["status"] == "done" and m["criterion"]["name"] == "l1" and m["plan"]["ratios"] == ratios
    assert m["data"]["n"] == HELD_OUT.n and m["model"]["checkpoint_sha256"]  # the command line's held-out set
    assert any(c.value.startswith(f"Each accuracy is top-1 on the same {HELD_OUT.n:,} test images; the recalibrated "
                                  f"one after re-estimating BatchNorm on {m['recalibration']['n']:,} training images.")
               for c in at.caption)
    assert m["after"]["params"] == estimate(struct, ratios).params  # the estimate was exact
    metrics = _metrics(at)
    assert metrics["Accuracy before"][0] == f"{m['accuracy']['before']['accuracy']:.2f}%"
    assert metrics["Accuracy after pruning"][0] == f"{m['accuracy']['pruned']['accuracy']:.2f}%"
    assert metrics["Parameters after"][0] == human(m["after"]["params"])
    assert metrics["FLOPs after"][0] == human(m["after"]["flops"])
    assert weights_hash(cached) == before  # never pruned in place
    assert any(made[0].name in s.value for s in at.success)


def test_without_data_prune_works_sensitivity_explains_and_l1_stands_in(default, runs, monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "nodata"))
    at = _plan_page(**{PLAN: {"layer2.0.conv1": 0.5}})  # the default criterion, sfm_entropy, reads images
    infos = " ".join(i.value for i in at.info)
    assert "Sensitivity curves need test images" in infos
    assert not any(b.key == "sens_go" for b in at.button)
    at.button(key="prune_go").click()
    at.run()
    assert not at.exception
    assert "sfm_entropy reads images" in " ".join(i.value for i in at.info)  # the fallback is said, by the package
    assert "ranked by l1 instead" in " ".join(i.value for i in at.info)
    (run,) = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "done" and m["data"] is None
    assert m["accuracy"] == {"before": None, "pruned": None, "recalibrated": None} and m["recalibration"] is None
    assert m["criterion"]["name"] == "l1"
    assert _metrics(at)["Accuracy after pruning"][0] == "–"  # a dash that fits; the help says why
    assert next(m for m in at.metric if m.label == "Accuracy after pruning").help.startswith("not measured: no test")
    assert any("training images" in w.value for w in at.warning)  # fine-tuning needs data: said, not crashed


def test_fine_tuning_is_queued_as_a_background_job(runs, cifar_data_root, monkeypatch):
    from prunekit.runs import jobs

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    at = _plan_page(**{CRITERION: "l1", PLAN: {"layer3.2.conv1": 0.5}})
    at.button(key="prune_go").click()
    at.run()
    inputs = {n.label: n for n in at.number_input}
    inputs["Epochs"].set_value(1)
    inputs["Train images (0 = all)"].set_value(256)
    inputs["Test images (0 = all)"].set_value(500)
    (distil,) = [t for t in at.toggle if t.label == "Distil from the unpruned model"]
    assert distil.value is True and not distil.disabled  # on by default: pruned from the bundled file, on disk
    assert inputs["Teacher weight (alpha)"].value == DISTILL_ALPHA
    inputs["Teacher weight (alpha)"].set_value(0.8)
    inputs["Temperature (T)"].set_value(3.0)
    (bf16,) = [t for t in at.toggle if t.label == "bf16 on the CPU"]
    assert bf16.value is False
    bf16.set_value(True)
    next(b for b in at.button if b.label == "Queue fine-tuning").click()
    at.run()
    assert not at.exception
    job_id = at.session_state["plan_last_job"]
    assert any(f"Fine-tuning queued as job {job_id}" in s.value for s in at.success)
    job = jobs.get(job_id)
    assert job.status == "queued" and job.kind == "finetune"  # PRUNEKIT_JOBS_NO_WORKER: nobody picks it up
    assert job.args == {"run": str(runs / at.session_state["last_run"]), "epochs": 1, "lr": 0.01, "subset": 256,
                        "test_subset": 500, "batch_size": 128, "data": "cifar10", "distill_alpha": 0.8,
                        "distill_temperature": 3.0, "precision": "bf16"}
    assert jobs.job_kind("finetune").config(job.args).precision == "bf16"
    assert "distilled from the unpruned model: alpha 0.8, T 3.0" in job.description


def test_sensitivity_curves_then_the_sensitivity_preset(default, cifar_data_root, monkeypatch):
    """The button hands the page's model, scores and SENSITIVITY.n test images to prunekit.pruning.sensitivity (faked here: the
    real one prunes 48 models); the curves feed the Sensitivity preset."""
    import pandas as pd

    from pages.ui import sensitivity_view
    from prunekit.pruning.ratios import kept_channels

    model, struct = default
    calls = []

    def fake(model, scores, data, *, ratios, round_to, progress=None, **_):
        calls.append((len(data), tuple(ratios), sorted(scores), round_to))
        rows = [{"group": g.root, "ratio": r, "kept": kept_channels(g.channels, r, round_to), "loss": 0.0, "params": 0,
                 "macs": 0,
                 "accuracy": 90 - (80 if g.root == "conv1" else 10) * r} for g in struct.groups for r in (0.0, *ratios)]
        progress(1, 1)
        return pd.DataFrame(rows)

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    monkeypatch.setattr(sensitivity_view, "sensitivity", fake)  # what the page's sensitivity view calls
    at = _plan_page(**{CRITERION: "l1", PLAN: {"conv1": 0.3}}, preset_kind="sensitivity", preset_target=0.3)
    assert any("60 pruned models, about a minute on a 2-core CPU" in c.value for c in at.caption)  # 12 groups x 5
    at.button(key="sens_go").click()
    at.run()
    assert not at.exception
    convs = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    assert calls == [(SENSITIVITY.n, SENSITIVITY.ratios, convs, 1)]  # the shared defaults, the l1 scores of all 19
    # convs, the plan's rounding (none)
    assert any("Each panel is one group" in c.value for c in at.caption)
    assert at.button(key="sens_go").label == "Recompute sensitivity"  # the curves are there: the label says so
    assert any("costs more than any one of them alone" in w.value for w in at.warning)
    spec = _sensitivity_spec(at)
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles[0].startswith("conv1 + layer1.0.conv2 + layer1.1.conv2 +")  # the whole group, not its first conv
    assert len(titles) == len(struct.groups)
    unpruned = [t for t in spec["data"] if "unpruned" in t.get("hovertemplate", "")]
    assert len(unpruned) == len(struct.groups) and unpruned[0]["y"] == [90.0, 90.0]  # the ratio-0 accuracy
    at.button(key="preset_apply").click()
    at.run()
    assert not at.exception
    plan = at.session_state[PLAN]
    assert plan["conv1"] == min(plan.values())  # the one sensitive group is pruned least
    assert estimate(struct, plan).macs_reduction >= 0.3
    at.number_input(key="round_to_input").set_value(16).run()  # another rounding: other curves, computed anew
    assert not any(b.label == "Recompute sensitivity" for b in at.button)
    at.button(key="sens_go").click()
    at.run()
    assert calls[-1][3] == 16 and any("rounded to multiples of 16" in c.value for c in at.caption)


def test_the_predicted_accuracy_is_the_recalibrated_plan_and_never_stale(default, cifar_data_root, monkeypatch):
    from pages.ui.prediction import prediction_key, predictor
    from prunekit.data import held_out_set, load_arrays
    from prunekit.defaults import PREDICTION
    from prunekit.pruning.predict import predict_accuracy

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    model, struct = default
    first = {"layer3.0.conv1": 0.5}
    at = _plan_page(**{CRITERION: "l1", PLAN: first})
    sel = at.session_state["selection"]
    worker = predictor()  # the server's one worker, shared by every visitor
    assert worker.wait(prediction_key(sel, "l1", first, 1), 600).error is None  # the background worker, done
    at.run()
    assert not at.exception
    l1 = {n: m.weight.detach().abs().sum((1, 2, 3)) for n, m in model.named_modules()
          if isinstance(m, torch.nn.Conv2d)}
    expected = predict_accuracy(model, first, l1, SIZE, train=load_arrays("cifar10", "train", cifar_data_root),
                                held_out=held_out_set("cifar10", PREDICTION.n, cifar_data_root))
    assert _metrics(at)["Predicted accuracy"][0] == f"{expected['accuracy']:.1f}%" and expected["recalibrated"]
    assert any(f"on {PREDICTION.n:,} test images" in c.value for c in at.caption)
    second = {"layer3.0.conv1": 0.5, "layer2.1.conv1": 0.75}
    at.session_state[PLAN] = second
    at.run()
    shown = _metrics(at)["Predicted accuracy"][0]
    done = worker.result(prediction_key(sel, "l1", second, 1))
    # the first plan's number is never shown for the second: either still computing, or the second's own
    assert shown == "computing..." or (done is not None and shown == f"{done.value['accuracy']:.1f}%")
    assert worker.wait(prediction_key(sel, "l1", second, 1), 600).error is None  # ends before the test does


def _sensitivity_spec(at) -> dict:
    """The plotly spec of the page's sensitivity chart (the one with a red line per group)."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(s for s in specs if any(t.get("line", {}).get("color") == "#d62728" for t in s["data"]))


def test_the_last_run_panel_of_a_run_that_stopped_before_its_report_stays_up(runs):
    from prunekit.runs.records import Run

    run = Run.create(runs, name="resnet20", model={"arch": "resnet20"}, before=None, after=None, accuracy=None)
    run.finish("failed", "RuntimeError: out of memory (simulated)")
    at = _plan_page(last_run=run.manifest["id"])
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters after"] == "–" and metrics["FLOPs after"] == "–"


def test_a_model_at_another_input_size_is_told_why_on_the_plan_page_not_that_images_are_missing(runs):
    at = _plan_page(model_source="A torchvision model", torchvision_model="torchvision:resnet18", input_side=64,
                    **{PLAN: {"layer1.0.conv1": 0.5}})
    why = ("torchvision:resnet18@64 expects 64x64 inputs; cifar10 images are 32x32 and are never resized: set Input "
           "size (pixels) in the sidebar to 32.")
    words = " ".join(e.value for e in [*at.caption, *at.info, *at.warning])
    assert f"No prediction: this model does not fit cifar10's images: {why}" in words  # the prediction
    assert "Sensitivity curves evaluate the model on cifar10 test images, and this model does not fit" in words
    assert f"Accuracy is not measured: this model does not fit cifar10's images: {why}" in words  # Prune
    assert "test images here" not in words  # the wrong cause (the images are there)


def test_each_unpruned_accuracy_names_the_images_it_is_measured_on(default, runs, cifar_data_root, monkeypatch):
    from pages.ui.last_run import UNPRUNED_ON
    from pages.ui.prediction import prediction_key, predictor
    from prunekit.defaults import PREDICTION

    monkeypatch.setenv("PRUNEKIT_DATA", str(cifar_data_root))
    model = open_page()  # the Model page: the whole test split, when it was trained
    assert any(c.value == f"Test accuracy: 88.23% on the whole cifar10 test split, measured when the model was "
               f"trained. {UNPRUNED_ON}" for c in model.caption)
    assert f"{HELD_OUT.n:,} drawn by seed {HELD_OUT.seed}" in UNPRUNED_ON and f"first {PREDICTION.n:,}" in UNPRUNED_ON
    plan = {"layer3.0.conv1": 0.5}
    at = _plan_page(**{CRITERION: "l1", PLAN: plan})
    assert predictor().wait(prediction_key(at.session_state["selection"], "l1", plan, 1), 600)
    at.button(key="prune_go").click()
    at.run()
    captions = [c.value for c in at.caption]
    assert any(f"on {PREDICTION.n:,} test images (unpruned: " in c and f"on the same {PREDICTION.n:,})" in c
               for c in captions)  # the prediction's
    assert any(c.startswith(f"Each accuracy is top-1 on the same {HELD_OUT.n:,} test images") and UNPRUNED_ON in c
               for c in captions)  # the run's, with why the three differ


def test_a_pending_prediction_says_how_many_plans_wait_before_it():
    from pages.ui.prediction import _queue_words

    assert _queue_words(None) == _queue_words(0) and _queue_words(0).startswith("Measuring this plan")
    assert "1 plan of other visitors before it" in _queue_words(1)
    assert "3 plans of other visitors before it" in _queue_words(3)
