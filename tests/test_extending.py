"""Extending prunekit: a criterion, a preset, a model source and a runtime, each defined here and registered with its
decorator, go through score -> plan -> prune -> compare with the package's own functions, no other code edited."""
import pytest
import torch
import torch.nn as nn

import prunekit.criteria.base as criteria_base
import prunekit.models.sources as model_sources
import prunekit.pruning.presets as presets
import prunekit.runs.runtimes as runtimes
from prunekit.criteria.base import LayerwiseCriterion, register_criterion
from prunekit.criteria.scores import score
from prunekit.models.checkpoints import load_checkpoint
from prunekit.models.layers import conv_layers
from prunekit.models.sources import RANDOM_INIT, ModelSource, model_catalog, register_source
from prunekit.models.zoo import build_model, model_info
from prunekit.params import Param
from prunekit.pruning.presets import Preset, get_preset, register_preset
from prunekit.pruning.structure import structure
from prunekit.runs.compare import axes, axis, latency_frame
from prunekit.runs.records import MODEL_FILE, list_runs, prune_run, read_manifest
from prunekit.runs.runtimes import Runtime, register_runtime

SIZE = (3, 8, 8)


@pytest.fixture
def toys():
    """A toy criterion, preset, model source and runtime, registered for the test and unregistered after."""

    @register_criterion
    class Index(LayerwiseCriterion):
        name, unit = "toy_index", "filter index"
        description = "scores filter i as i (a test's criterion)"

        def layer_scores(self, model, layer):
            return torch.arange(layer.module.out_channels, dtype=torch.float32)

    @register_preset
    class FirstGroup(Preset):
        name, label = "toy_first", "First group"
        help = "Prunes the first group only (a test's preset)."
        knob = Param("share", 0.5, "the first group's ratio", low=0.0, high=0.9)
        top = 0.9

        def _prepare(self, ctx):
            return lambda t: {ctx.groups[0].root: t}

    @register_source
    class Toys(ModelSource):
        name, form = "toy", "toy:<name>"

        def catalogue(self):
            return ["net"]

        def default_size(self, spec):
            return SIZE

        def build(self, spec, num_classes, pretrained=False):
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes)), RANDOM_INIT

    @register_runtime
    class Filters(Runtime):
        """'Times' a model as (its conv filters) x (the batch size) ms."""
        name, label, latency_key, prefix = "toy", "Toy runtime", "latency_ms_toy", "latency_toy_"

        def measure(self, model, input_size, batches, repeat):
            filters = sum(layer.module.out_channels for layer in conv_layers(model))
            return {self.latency_key: {str(b): float(filters * b) for b in batches}}

    try:
        yield
    finally:
        criteria_base._REGISTRY.unregister("toy_index")
        presets._REGISTRY.unregister("toy_first")
        model_sources._SOURCES.unregister("toy")
        runtimes._RUNTIMES.unregister("toy")


def test_a_toy_criterion_preset_source_and_runtime_go_from_score_to_compare(toys, tmp_path):
    assert model_catalog("toy") == ["toy:net"] and model_info("toy:net@6").input_size == (3, 6, 6)
    model = build_model("toy:net", num_classes=3).eval()
    table = score(model, "toy_index", cache=False)
    assert table[table["layer"] == "0"]["score"].tolist() == [0.0, 1.0, 2.0, 3.0]

    plan = get_preset("toy_first").make(structure(model, SIZE), "toy:net", value=0.5, criterion="toy_index")
    assert plan.ratios == {"0": 0.5}
    scores = {layer: torch.tensor(group["score"].to_numpy()) for layer, group in table.groupby("layer")}
    run = prune_run(model, plan, scores, arch="toy:net", num_classes=3, input_size=SIZE, root=tmp_path,
                    latency_batches=(1, 64), runtimes=("toy",))

    manifest = read_manifest(run.path)
    assert manifest["report"]["channels"]["0"] == [4, 2]
    pruned, header = load_checkpoint(run.path / MODEL_FILE)  # the arch "toy:net" is built by the toy source
    assert header["arch"] == "toy:net"
    assert torch.equal(pruned[0].weight, model[0].weight[2:])  # the highest-index filters are kept
    # 4 + 6 filters before, 2 + 6 after: the toy runtime's latency is that times the batch
    assert manifest["before"]["latency_ms_toy"] == {"1": 10.0, "64": 640.0}
    assert manifest["after"]["latency_ms_toy"] == {"1": 8.0, "64": 512.0}
    assert manifest["after"]["latency_ms"] == {} and manifest["after"]["onnxruntime"] is None  # not asked for

    frame = latency_frame(manifest)
    toy = frame[frame["runtime"] == "Toy runtime"].set_index("batch")
    assert toy.loc["64", "before"] == 640.0 and toy.loc["64", "speedup"] == pytest.approx(640 / 512)
    assert axis("latency_b1", "toy") == "latency_toy_b1" and axes()["latency_toy_b1"].startswith("Toy runtime")
    row = list_runs(tmp_path).iloc[0]
    assert (row["latency_toy_b1_before"], row["latency_toy_b1"]) == (10.0, 8.0)


def test_unregistered_toys_are_gone(toys):
    assert "toy" in model_sources.source_names() and "toy" in runtimes.runtime_names()
    model_sources._SOURCES.unregister("toy")
    with pytest.raises(KeyError, match="unknown model source 'toy'"):
        model_info("toy:net")
