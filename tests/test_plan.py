"""Plans and presets: hand-known ratios, targets met by the instant estimate, JSON, refusals."""
import json
import math

import pandas as pd
import pytest
import torch

from prunekit.criteria.afie import afie_entropy
from prunekit.errors import UserError
from prunekit.models.zoo import build_model
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset
from prunekit.pruning.selection import removed_filters
from prunekit.pruning.structure import estimate, structure

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def r20():
    model = build_model("resnet20").eval()
    return model, structure(model, SIZE)


def _convs(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_the_published_vgg16_budget_gives_the_published_counts():
    struct = structure(build_model("vgg16_bn").eval(), SIZE)
    plan = get_preset("vgg16_published").make(struct, "vgg16_bn")
    est = estimate(struct, plan.ratios)
    assert round(est.params_before / 1e6, 2) == 14.99 and round(est.macs_before / 1e6, 1) == 313.5
    assert round(est.params / 1e6, 2) == 2.50 and round(est.macs / 1e6, 1) == 104.2
    assert round(est.params_reduction, 3) == 0.833 and round(est.macs_reduction, 3) == 0.667
    assert list(plan.ratios.values()) == [0.3] * 7 + [0.75] * 5  # the 13th conv is not in the plan


def test_the_published_budget_refuses_another_model(r20):
    with pytest.raises(ValueError, match="defined for vgg16_bn"):
        get_preset("vgg16_published").make(r20[1], "resnet20")


def test_json_round_trip_and_another_model_is_refused(r20, tmp_path):
    model, struct = r20
    plan = get_preset("uniform").make(struct, "resnet20", value=0.5, exclude=["layer2.0.conv1"], criterion="fpgm")
    again = Plan.load(plan.save(tmp_path / "plan.json"))
    assert again == plan and again.criterion == "fpgm" and again.excluded == ["layer2.0.conv1"]
    again.check(struct)
    other = structure(build_model("resnet32").eval(), SIZE)
    with pytest.raises(ValueError, match="made for another model"):
        again.check(other)
    with pytest.raises(ValueError, match="must be JSON"):
        Plan.from_json("{not json")
    with pytest.raises(ValueError, match="not a prunekit plan"):
        Plan.from_json(json.dumps({"ratios": {}}))
    for bad in (0.96, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"in \[0, 0.95\]"):
            Plan("resnet20", {"conv1": bad})
    with pytest.raises(ValueError, match="unknown layer"):
        Plan("resnet20", {"nope": 0.5}).check(struct)


def test_uniform_ratio_exclusions_and_unprunable_layers(r20):
    model, struct = r20
    # layer1.0.conv2: a member of the stem's stream
    plan = get_preset("uniform").make(struct, "resnet20", value=0.5, exclude=["layer1.0.conv2"])
    assert "conv1" not in plan.ratios and set(plan.ratios.values()) == {0.5} and len(plan.ratios) == 11
    why = plan.unprunable(struct)
    assert why["layer1.0.conv2"] == "excluded by the user"
    assert why["conv1"] == "coupled with the excluded 'layer1.0.conv2'" and "layer1.2.conv2" in why
    assert why["fc"].startswith("linear layer")
    with pytest.raises(ValueError, match="not a conv"):
        get_preset("uniform").make(struct, "resnet20", value=0.5, exclude=["fc"])
    with pytest.raises(ValueError, match="excluded layer but has ratio"):
        Plan("resnet20", {"conv1": 0.5}, excluded=["conv1"]).check(struct)


@pytest.mark.parametrize("by", ["flops", "params"])
def test_a_uniform_target_is_met_by_the_smallest_ratio(r20, by):
    _, struct = r20
    plan = get_preset("uniform").make(struct, "resnet20", target=0.5, by=by)
    (r,) = set(plan.ratios.values())
    reduction = lambda ratios: getattr(estimate(struct, ratios), "macs_reduction" if by == "flops"
                                       else "params_reduction")
    assert 0.5 <= reduction(plan.ratios) < 0.56
    assert reduction({k: r - 1e-6 for k in plan.ratios}) < 0.5  # one filter less somewhere misses it
    with pytest.raises(ValueError, match="out of reach"):
        get_preset("uniform").make(struct, "resnet20", target=0.999)


def test_global_threshold_on_hand_made_scores(r20):
    model, struct = r20
    scores = {n: torch.arange(c, dtype=torch.float32) for n, c in _convs(model).items()}
    plan = get_preset("threshold").make(struct, "resnet20", scores=scores, value=0.5, criterion="l1")
    assert set(plan.ratios.values()) == {0.5}  # i / (c - 1) < 0.5 for exactly half of every layer
    scores["layer1.0.conv1"] = torch.tensor([0.0] * 15 + [1.0])
    plan = get_preset("threshold").make(struct, "resnet20", scores=scores, value=0.5, criterion="l1")
    assert plan.ratios["layer1.0.conv1"] == 15 / 16  # all but the outlier go; one filter is kept
    # members' normalised scores are averaged: i/15 and (15 - i)/15 average to 0.5 for every filter
    coupled = {"conv1": torch.arange(16.0), "layer1.0.conv2": torch.arange(16.0).flip(0)}
    threshold = get_preset("threshold")
    assert "conv1" not in threshold.make(struct, "resnet20", scores=coupled, value=0.5, criterion="l1").ratios
    assert threshold.make(struct, "resnet20", scores=coupled, value=0.51, criterion="l1").ratios["conv1"] == 15 / 16


def test_removed_filters_preview_is_what_pruning_removes(r20):
    from prunekit.pruning.prune import prune_model

    model, struct = r20
    # hand-known: scores rise with the index, so the lowest indices go; conv1's group ranks by its members' mean
    scores = {n: torch.arange(c, dtype=torch.float32) for n, c in _convs(model).items()}
    preview = removed_filters(struct.groups, {"layer1.0.conv1": 0.25}, scores)
    assert preview == {"layer1.0.conv1": [0, 1, 2, 3]}
    scores = {n: torch.randn(c, generator=torch.Generator().manual_seed(len(n))) for n, c in _convs(model).items()}
    ratios = {"conv1": 0.5, "layer2.1.conv1": 0.3, "layer3.0.conv1": 0.6}
    preview = removed_filters(struct.groups, ratios, scores)
    _, removed = prune_model(model, ratios, scores, SIZE)
    group_of = {m: g.root for g in struct.groups for m in g.members}
    assert {group_of[m] for m in preview} == set(removed)
    assert all(preview[m] == removed[group_of[m]] for m in preview)
    assert "layer1.0.conv2" in preview  # a member of conv1's coupled group goes with it


def test_global_threshold_to_a_target_from_a_score_table(r20):
    from prunekit.criteria.scores import to_frame

    model, struct = r20
    g = torch.Generator().manual_seed(0)
    table = to_frame({n: torch.rand(c, generator=g) for n, c in _convs(model).items()}, "random")
    plan = get_preset("threshold").make(struct, "resnet20", scores=table, target=0.4, by="params")
    assert plan.criterion == "random" and plan.preset["name"] == "threshold"
    assert 0.4 <= estimate(struct, plan.ratios).params_reduction < 0.45


def test_afie_allocation_is_inverse_to_the_group_afie(r20):
    model, struct = r20
    plan = get_preset("afie").make(struct, "resnet20", model=model, target=0.5)
    assert 0.5 <= estimate(struct, plan.ratios).macs_reduction < 0.55
    afie = {g.root: sum(afie_entropy(model.get_submodule(m).weight) for m in g.members) / len(g.members)
            / g.channels for g in struct.groups}
    products = [plan.ratios[r] * afie[r] for r in plan.ratios]  # lambda_min * AFIE_max, the same for all
    assert max(products) == pytest.approx(min(products), rel=1e-9)


def test_sensitivity_prunes_the_least_sensitive_groups_most(r20):
    _, struct = r20
    slopes = {g.root: 10.0 * (i + 1) for i, g in enumerate(struct.groups)}  # accuracy lost per unit ratio
    rows = [{"group": root, "ratio": r, "accuracy": 90 - s * r, "loss": 1 + s * r / 100}
            for root, s in slopes.items() for r in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)]
    table = pd.DataFrame(rows)
    plan = get_preset("sensitivity").make(struct, "resnet20", sensitivity=table, target=0.3)
    assert 0.3 <= estimate(struct, plan.ratios).macs_reduction < 0.33
    inner = {r: v for r, v in plan.ratios.items() if v < 0.9}  # not at the last measured ratio
    assert len(inner) >= 3
    products = [v * slopes[r] for r, v in inner.items()]  # one tolerated drop d = ratio * slope
    assert max(products) == pytest.approx(min(products), rel=1e-6)
    with pytest.raises(ValueError, match="no unpruned row"):
        get_preset("sensitivity").make(struct, "resnet20", sensitivity=table[table.ratio > 0], target=0.3)


def test_max_ratio_keeps_one_filter_and_stays_within_the_plan_limit(r20):
    from prunekit.defaults import MAX_RATIO
    from prunekit.pruning.ratios import kept_channels, max_ratio

    assert max_ratio(16) == 15 / 16 and kept_channels(16, max_ratio(16)) == 1  # 0.95 would keep int(0.8) = 0
    assert max_ratio(64) == MAX_RATIO and kept_channels(64, max_ratio(64)) == 3
    model, struct = r20
    Plan("resnet20", {g.root: max_ratio(g.channels) for g in struct.groups}).check(struct)  # every cap is valid


def _plan_text(**entries):
    return json.dumps({"format": "prunekit-plan/1", "arch": "resnet20", "ratios": {"layer1.0.conv1": 0.5},
                       **entries})


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", "not a prunekit plan: it holds a JSON list, not an object"),
    (json.dumps({"format": "prunekit-plan/1", "arch": "resnet20"}), "'ratios' is missing"),
    (_plan_text(exclude=["conv1"]), "unknown entry 'exclude' (known: arch, ratios, criterion, criterion_params, "
                                    "excluded, signature, preset, round_to)"),
    (_plan_text(ratios=[0.5]), "a plan's ratios must map group roots to numbers, got list"),
    (_plan_text(ratios={"layer1.0.conv1": 1.5}), "ratio of 'layer1.0.conv1' must be a number in [0, 0.95], got 1.5"),
    (_plan_text(ratios={"layer1.0.conv1": math.nan}), "ratio of 'layer1.0.conv1' must be a number in [0, 0.95], "
                                                       "got nan"),
    (_plan_text(ratios={"layer1.0.conv1": -1}), "must be a number in [0, 0.95], got -1"),
    (_plan_text(ratios={"layer1.0.conv1": "0.5"}), "must be a number in [0, 0.95], got '0.5'"),
    (_plan_text(excluded="conv1"), "'excluded' must be a list of conv names, got 'conv1'"),
    (_plan_text(criterion=5), "'criterion' must be a criterion's name, got 5"),
    (_plan_text(criterion="nope"), "unknown criterion 'nope'; known criteria: "),
    (_plan_text(criterion="sfm_entropy", criterion_params={"bins": 1}), "bins must be an integer in [2, 4096], got 1"),
    (_plan_text(criterion_params=[1]), "'criterion_params' must be an object, got [1]"),
    (_plan_text(arch=""), "a plan needs the model's architecture name, got ''"),
    (_plan_text(arch="nope"), "unknown model 'nope'"),
    (_plan_text(preset="uniform"), "'preset' must be an object, got 'uniform'"),
])
def test_a_plan_file_of_the_wrong_shape_is_refused_naming_the_file_and_the_entry(tmp_path, text, words):
    path = tmp_path / "my-plan.json"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        Plan.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and words in message, message


def test_a_plan_file_that_is_not_text_or_not_a_file_is_refused_naming_it(tmp_path):
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match=r"bytes.json: not a prunekit plan: not a text file"):
        Plan.load(tmp_path / "bytes.json")
    with pytest.raises(UserError, match=r"plan file .* not found"):
        Plan.load(tmp_path)  # a directory


def test_a_plan_for_another_architecture_is_refused_before_a_run_is_made(r20, tmp_path):
    from prunekit.runs.records import prune_run

    model, struct = r20
    plan = Plan("resnet32", {"layer1.0.conv1": 0.5})  # hand-made (no signature); resnet20 has this layer too
    scores = {n: torch.rand(c) for n, c in _convs(model).items()}
    with pytest.raises(UserError, match="this plan was made for resnet32, the model is resnet20"):
        prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path / "runs",
                  latency_batches=(), repeat=1)
    assert not (tmp_path / "runs").exists()


def _sensitivity_table(struct):
    slopes = {g.root: 10.0 * (i + 1) for i, g in enumerate(struct.groups)}
    return pd.DataFrame([{"group": root, "ratio": r, "accuracy": 90 - s * r, "loss": 1 + s * r / 100}
                         for root, s in slopes.items() for r in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)])


def test_a_sensitivity_table_with_a_nan_or_a_missing_column_is_refused(r20, tmp_path, capsys):
    """Before, a NaN damage never exceeded the tolerance: the group was pruned to its last measured ratio."""
    from prunekit.cli import main

    _, struct = r20
    table = _sensitivity_table(struct)
    table.loc[(table.group == "layer2.1.conv1") & (table.ratio == 0.5), "accuracy"] = math.nan
    with pytest.raises(UserError, match=r"the sensitivity table's accuracy of 'layer2.1.conv1' is not a finite "
                                        r"number at ratio 0.5"):
        get_preset("sensitivity").make(struct, "resnet20", sensitivity=table, target=0.3)
    with pytest.raises(UserError, match="the sensitivity table has no 'loss' column"):
        get_preset("sensitivity").make(struct, "resnet20", sensitivity=table.drop(columns="loss"), target=0.3,
                                       metric="loss")
    from prunekit.pruning.sensitivity import read_sensitivity

    table.to_csv(tmp_path / "sens.csv", index=False)
    with pytest.raises(UserError, match=r"sens.csv: the sensitivity table's accuracy of 'layer2.1.conv1' is not a "
                                        r"finite number at ratio 0.5"):
        read_sensitivity(tmp_path / "sens.csv")
    assert main(["plan", "--model", "resnet20", "--preset", "sensitivity", "--sensitivity", str(tmp_path / "sens.csv"),
                 "--target", "0.3", "--out", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert "sens.csv" in err and "'layer2.1.conv1'" in err and "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()
    (tmp_path / "bytes.csv").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match=r"bytes.csv: not a readable sensitivity CSV"):
        read_sensitivity(tmp_path / "bytes.csv")


def test_a_save_that_fails_midway_leaves_the_earlier_plan_whole(tmp_path, monkeypatch):
    path = Plan("resnet20", {"conv1": 0.5}).save(tmp_path / "plan.json")
    before = path.read_text()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("prunekit.files.os.fsync", disk_full)  # the new text is written, not yet on disk
    with pytest.raises(OSError, match="No space"):
        Plan("resnet20", {"conv1": 0.25}).save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_sensitivity_curves_computed_with_another_rounding_are_refused_by_the_preset(r20):
    """A table's `kept` says how it rounded: 16 filters at ratio 0.1 keep 14 unrounded, 16 with round_to 16."""
    from prunekit.pruning.ratios import kept_channels

    _, struct = r20
    table = _sensitivity_table(struct)
    width = {g.root: g.channels for g in struct.groups}
    table["kept"] = [width[g] if r == 0 else kept_channels(width[g], r) for g, r in zip(table.group, table.ratio)]
    assert get_preset("sensitivity").make(struct, "resnet20", sensitivity=table, target=0.3).ratios
    with pytest.raises(UserError, match=r"keeps 14 of the 16 filters of 'conv1' at ratio 0.1, where a plan with "
                                        r"round_to 16 keeps 16.*sensitivity --round-to 16"):
        get_preset("sensitivity").make(struct, "resnet20", sensitivity=table, target=0.3, round_to=16)
    assert get_preset("sensitivity").make(struct, "resnet20", sensitivity=table.drop(columns="kept"), target=0.3,
                                          round_to=16).ratios  # a table from before `kept`: not checkable, taken
