"""The public API: every exported name is there and documented, each verb's docstring has its arguments and an
example, the older names point at their verb, and the verbs chain on a small model (score -> plan -> prune ->
compare, and a one-point sweep) with results known by hand."""
from __future__ import annotations

import inspect

import pytest
import torch

import prunekit
from tests.conftest import tiny_arrays

VERBS = ("score", "plan", "prune", "finetune", "sweep", "compare")
OLDER = {"score_model": "score", "prune_model": "prune", "prune_run": "prune", "finetune_run": "finetune",
         "create_model": "build_model"}  # a lower-level name and the entry point its docstring names
NO_LATENCY = {"runtimes": (), "latency_batches": ()}  # the runs skip the timing: seconds, not minutes


def own_doc(obj) -> str:
    """The object's own docstring: not inherited, and not the signature a dataclass writes when it has none."""
    doc = obj.__doc__ or ""
    return "" if doc.startswith(f"{getattr(obj, '__name__', '')}(") else doc.strip()


def test_every_exported_name_resolves_once_and_has_a_docstring():
    assert len(prunekit.__all__) == len(set(prunekit.__all__))
    for name in prunekit.__all__:
        obj = getattr(prunekit, name)
        assert own_doc(obj), f"prunekit.{name} has no docstring"


def test_the_verbs_come_first_and_each_documents_its_arguments_with_an_example():
    assert tuple(prunekit.__all__[:len(VERBS)]) == VERBS
    for verb in VERBS:
        doc = own_doc(getattr(prunekit, verb))
        assert "Args:" in doc and "Returns:" in doc, verb
        assert "\n>>> " in inspect.cleandoc(doc), f"prunekit.{verb}'s docstring has no example"


def test_each_older_name_is_exported_and_names_its_entry_point():
    for old, verb in OLDER.items():
        assert old in prunekit.__all__ and verb in prunekit.__all__
        assert f":func:`{verb}`" in own_doc(getattr(prunekit, old)) or \
            f":func:`prunekit.{verb}`" in own_doc(getattr(prunekit, old)), old


def test_the_package_docstring_walks_the_whole_pipeline():
    doc = prunekit.__doc__
    places = [doc.index(f"pk.{verb}(") for verb in VERBS]
    assert places == sorted(places)


@pytest.fixture
def resnet20(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    return prunekit.build_model("resnet20", num_classes=10).eval()


def test_score_plan_prune_compare_on_resnet20(resnet20, tmp_path):
    scores = prunekit.score(resnet20, "l1")
    convs = {name: m for name, m in resnet20.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(scores) == sum(m.out_channels for m in convs.values()) == 16 * 7 + 32 * 6 + 64 * 6
    first = scores[scores["layer"] == "conv1"].sort_values("filter")
    expected = resnet20.conv1.weight.detach().abs().flatten(1).sum(1).double()
    torch.testing.assert_close(torch.tensor(first["score"].to_numpy()), expected)

    plan = prunekit.plan(resnet20, "resnet20", value=0.5, scores=scores)
    # ResNet-20's groups: the stem with stage 1's residual stream, the streams of stages 2 and 3 (their first
    # blocks' conv2 lead), and every block's conv1 alone
    roots = ["conv1", "layer2.0.conv2", "layer3.0.conv2"] + [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert plan.ratios == {root: 0.5 for root in roots} and plan.criterion == "l1"

    run = prunekit.prune(resnet20, plan, scores, data=tiny_arrays(16), root=tmp_path / "runs", **NO_LATENCY)
    pruned, header = prunekit.load_checkpoint(run.path / "model.safetensors")
    assert header["arch"] == "resnet20" and run.status == "done"
    assert pruned.conv1.out_channels == int(16 * (1 - 0.5))
    assert {name: m.out_channels for name, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)} == \
        {name: m.out_channels // 2 for name, m in convs.items()}
    assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

    table = prunekit.compare([run])
    assert len(table) == 1 and table.loc[0, "run"] == run.path.name
    assert table.loc[0, "x"] == run.manifest["after"]["flops"] < run.manifest["before"]["flops"]
    assert table.loc[0, "accuracy"] == run.manifest["accuracy"]["pruned"]["accuracy"]
    assert table.loc[0, "stage"] == "pruned" and bool(table.loc[0, "pareto"])
    assert prunekit.compare(root=tmp_path / "runs").equals(table)


def test_a_hand_written_plan_prunes_only_its_group(resnet20):
    plan = prunekit.plan(resnet20, "resnet20", ratios={"layer1.0.conv1": 0.25})
    assert plan.ratios == {"layer1.0.conv1": 0.25} and plan.criterion == "l1"
    pruned, removed = prunekit.prune_model(resnet20, plan.ratios, _l1_tensors(resnet20), (3, 32, 32))
    assert pruned.layer1[0].conv1.out_channels == int(16 * (1 - 0.25))
    assert pruned.layer1[1].conv1.out_channels == 16 and len(removed["layer1.0.conv1"]) == 4


def test_a_hand_written_plan_is_named_after_its_score_table_as_a_preset_plan_is(resnet20):
    import pandas as pd

    table = pd.DataFrame({"layer": ["conv1"] * 16, "filter": range(16), "score": [1.0] * 16, "criterion": "fpgm"})
    by_hand = prunekit.plan(resnet20, "resnet20", ratios={"layer1.0.conv1": 0.25}, scores=table)
    by_preset = prunekit.plan(resnet20, "resnet20", value=0.25, scores=table)
    assert by_hand.criterion == by_preset.criterion == "fpgm"  # the table's column (it carries no attrs)


def _l1_tensors(model) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().abs().flatten(1).sum(1) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def test_a_sweep_point_is_a_run_that_compare_draws(resnet20, tmp_path):
    spec = prunekit.SweepSpec(criteria=("l1",), targets=(0.5,), runtimes=())
    table = prunekit.sweep(resnet20, "resnet20", spec, held_out=tiny_arrays(16), root=tmp_path / "runs")
    assert len(table) == 1
    assert table.loc[0, "criterion"] == "l1" and table.loc[0, "target"] == 0.5
    assert table.loc[0, "flops"] <= 0.5 * table.loc[0, "flops_before"]   # the target is at least met
    points = prunekit.compare(table)
    assert points["sweep"].tolist() == table["sweep"].tolist() and points["sweep"].notna().all()
