"""The latency model: tables measured at the widths a plan's rounding keeps (and read as the next wider one in
between), a plan's prediction the sum of its layers' entries plus the unpruned network's remainder, the tables
cached on disk under a key that changes with what they depend on, a latency target solved on it, and a run of a
latency-budgeted plan recording the latency it measured."""
import pytest
import torch
import torch.nn as nn

from prunekit.errors import UserError
from prunekit.models.zoo import build_model
from prunekit.pruning.latency import LatencyModel, grid, layer_widths, measure_latency_model
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset
from prunekit.pruning.ratios import kept_channels
from prunekit.pruning.structure import structure
from prunekit.runs import latency_model as runs_latency
from prunekit.runs.latency_model import budget_timing, latency_budget, latency_model
from prunekit.runs.records import prune_run

SIZE = (3, 32, 32)


class Small(nn.Module):
    """Three convs with BN (16, 16 and 24 filters, the last with stride 2) and a linear head: three groups of one."""

    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c1, self.b1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.b0(self.c0(x)))
        x = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.b2(self.c2(x))).mean((2, 3)))


class FakeTimer:
    """ms = a layer's MACs per image x 1e-6 + 0.01 (each call's overhead); the whole network 0.5 ms more than its
    layers. Records every (module, input shape) it was asked about."""

    def __init__(self):
        self.calls = []

    def __call__(self, module: nn.Module, shape: tuple) -> float:
        self.calls.append((module, shape))
        if isinstance(module, Small):
            return 0.5 + sum(self._layer(m, s) for m, s in _layers_of(module))
        first = module[0] if isinstance(module, nn.Sequential) else module
        return self._layer(first, shape)

    @staticmethod
    def _layer(m: nn.Module, shape: tuple) -> float:
        if isinstance(m, nn.Linear):
            return m.in_features * m.out_features * 1e-6 + 0.01
        h = (shape[1] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        return m.in_channels * m.out_channels * 9 * h * h * 1e-6 + 0.01


def _layers_of(model: Small):
    return [(model.c0, (3, 32, 32)), (model.c1, (16, 32, 32)), (model.c2, (16, 32, 32)), (model.fc, (24,))]


@pytest.fixture(scope="module")
def small():
    model = Small().eval()
    return model, structure(model, SIZE)


def test_the_grid_is_the_rounding_s_widths_or_every_step():
    assert grid(64, 1, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert grid(24, 16) == [16, 24]
    assert grid(64, 16) == [16, 32, 48, 64]
    assert grid(6, 1, 8) == [6]
    assert grid(6, 16) == [6]  # a group narrower than round_to is not rounded: its full width alone


@pytest.mark.parametrize("round_to", [1, 8])
def test_the_tables_are_measured_at_the_widths_a_plan_keeps_and_read_as_the_next_wider(small, round_to):
    model, struct = small
    timer = FakeTimer()
    lm = measure_latency_model(model, struct, SIZE, timer, runtime="fake", batch=1, round_to=round_to, step=4)
    assert lm.predict(struct, {}) == pytest.approx(lm.before_ms)  # the unpruned network: what was measured
    measured_out = {m[0].out_channels for m, _ in timer.calls if isinstance(m, nn.Sequential)}
    assert measured_out == set(grid(16, round_to, 4)) | set(grid(24, round_to, 4))
    for ratio in (0.1, 0.3, 0.45, 0.6, 0.9):  # every ratio predicts what its kept widths' grid points cost
        ratios = {"c1": ratio, "c2": ratio}
        kept1, kept2 = (kept_channels(c, ratio, round_to) for c in (16, 24))
        up1, up2 = (min(w for w in grid(c, round_to, 4) if w >= k) for c, k in ((16, kept1), (24, kept2)))
        want = 0.5 + FakeTimer._layer(nn.Conv2d(3, 16, 3, padding=1), (3, 32, 32)) \
            + FakeTimer._layer(nn.Conv2d(16, up1, 3, padding=1), (16, 32, 32)) \
            + FakeTimer._layer(nn.Conv2d(up1, up2, 3, stride=2, padding=1), (up1, 32, 32)) \
            + FakeTimer._layer(nn.Linear(up2, 10), (up2,))
        assert layer_widths(struct, ratios, round_to)["c2"] == (kept1, kept2)
        assert lm.predict(struct, ratios) == pytest.approx(want)


def test_a_noisy_table_is_made_monotone(small):
    model, struct = small
    spiky = FakeTimer()

    def timer(module, shape):  # one spike at a narrow width of c1
        ms = spiky(module, shape)
        return ms + 5.0 if isinstance(module, nn.Sequential) and module[0].out_channels == 8 \
            and module[0].in_channels == 16 and module[0].stride == (1, 1) else ms

    lm = measure_latency_model(model, struct, SIZE, timer, runtime="fake", batch=1, step=4)
    table = lm.tables[lm.layers["c1"]]
    for row in table["ms"]:
        assert row == sorted(row)
    assert lm.predict(struct, {"c1": 0.5}) <= lm.predict(struct, {"c1": 0.25})


def test_a_latency_target_is_solved_on_the_model_and_the_plan_records_it(small):
    model, struct = small
    lm = measure_latency_model(model, struct, SIZE, FakeTimer(), runtime="fake", batch=1, step=4)
    plan = get_preset("uniform").make(struct, "resnet20", target=0.3, by="latency", latency=lm)
    assert lm.reduction(struct, plan.ratios) >= 0.3
    assert plan.preset["latency"] == {"runtime": "fake", "batch": 1, "before_ms": round(lm.before_ms, 4),
                                      "predicted_ms": round(lm.predict(struct, plan.ratios), 4)}
    assert plan.preset["reached"] == round(lm.reduction(struct, plan.ratios), 4)
    with pytest.raises(UserError, match="a latency target needs a latency model"):
        get_preset("uniform").make(struct, "resnet20", target=0.3, by="latency")
    with pytest.raises(UserError, match="rounded to multiples of 1, the plan rounds to 8"):
        get_preset("uniform").make(struct, "resnet20", target=0.3, by="latency", latency=lm, round_to=8)
    other = structure(build_model("resnet20"), SIZE)
    with pytest.raises(UserError, match="measured for another model"):
        get_preset("uniform").make(other, "resnet20", target=0.3, by="latency", latency=lm)


def test_the_cache_is_keyed_by_what_the_tables_depend_on(small, monkeypatch, tmp_path):
    model, struct = small
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    timers = []

    def fake_timer(runtime, batch, *options):
        timers.append((runtime, batch))
        return FakeTimer()

    monkeypatch.setattr(runs_latency, "runtime_timer", fake_timer)
    first = latency_model(model, SIZE, runtime="eager", batch=1, struct=struct)
    again = latency_model(model, SIZE, runtime="eager", batch=1, struct=struct)
    assert len(timers) == 1 and not first.meta["cached"] and again.meta["cached"]
    assert again.to_dict() | {"meta": {}} == first.to_dict() | {"meta": {}}
    same_shape = Small().eval()  # other weights, one structure: latency does not depend on the values
    assert latency_model(same_shape, SIZE, runtime="eager", batch=1).meta["cached"] and len(timers) == 1
    keys = {first.meta["key"]}
    for options in ({"runtime": "onnxruntime"}, {"batch": 2}, {"round_to": 8}, {"repeat": 3}):
        made = latency_model(model, SIZE, **{"runtime": "eager", "batch": 1, **options}, struct=struct)
        assert not made.meta["cached"]
        keys.add(made.meta["key"])
    assert len(keys) == 5 and len(timers) == 5
    assert sorted(p.stem for p in (tmp_path / "cache" / "latency").iterdir()) == sorted(keys)
    loaded = LatencyModel.load(tmp_path / "cache" / "latency" / f"{first.meta['key']}.json")
    assert loaded.predict(struct, {"c1": 0.5}) == first.predict(struct, {"c1": 0.5})
    with pytest.raises(UserError, match="unknown runtime"):
        latency_model(model, SIZE, runtime="nope", struct=struct)
    with pytest.raises(UserError, match="batch"):
        latency_model(model, SIZE, runtime="eager", batch=0, struct=struct)


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_a_real_runtime_measures_a_small_model(small, runtime, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model, struct = small
    lm = latency_model(model, SIZE, runtime=runtime, batch=1, struct=struct, round_to=16, repeat=2, rounds=1)
    assert lm.runtime == runtime and lm.before_ms > 0 and lm.meta["measurements"] == (1 + 1 + 2 + 2) + 2  # + whole
    assert 0 < lm.predict(struct, {"c2": 0.5}) <= lm.before_ms + 1e-9


def test_a_run_of_a_latency_budgeted_plan_records_the_latency_it_measured(small, tmp_path):
    model, struct = small
    lm = measure_latency_model(model, struct, SIZE, FakeTimer(), runtime="eager", batch=1, step=4)
    plan = get_preset("uniform").make(struct, "resnet20", target=0.3, by="latency", latency=lm)
    assert budget_timing(plan, (), None) == ((), None)  # timing off stays off
    assert budget_timing(plan, (64,), ("onnxruntime",)) == ((64, 1), ("onnxruntime", "eager"))
    scores = {n: torch.rand(m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    run = prune_run(model, plan, scores, arch="resnet20", num_classes=10, input_size=SIZE, root=tmp_path,
                    latency_batches=(64,), runtimes=("eager",), repeat=2, struct=struct)
    record = run.manifest["latency_budget"]
    after = run.manifest["after"]["latency_ms"]
    assert set(after) == {"64", "1"}
    assert record["measured_ms"] == after["1"] and record["before_ms"] == run.manifest["before"]["latency_ms"]["1"]
    assert record["reached"] == round(1 - after["1"] / record["before_ms"], 4)
    assert record | {"measured_ms": 0, "before_ms": 0, "reached": 0} == {
        "runtime": "eager", "batch": 1, "target": 0.3, "predicted_ms": plan.preset["latency"]["predicted_ms"],
        "measured_ms": 0, "before_ms": 0, "reached": 0}
    assert latency_budget(Plan("resnet20", {"c1": 0.5}), {}, {}) is None  # a plan by FLOPs records nothing


def test_the_command_line_plans_by_latency(monkeypatch, tmp_path, capsys):
    import json

    from prunekit.cli import main
    from prunekit.models.checkpoints import DEFAULT_CHECKPOINT
    from prunekit.models.metrics import count_macs

    def macs_timer(runtime, batch, *options):  # ms: 1 per 10M MACs, plus 0.01 per call
        return lambda module, shape: count_macs(module, shape) * 1e-7 + 0.01

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runs_latency, "runtime_timer", macs_timer)
    out = tmp_path / "plan.json"
    assert main(["plan", "--checkpoint", str(DEFAULT_CHECKPOINT), "--preset", "uniform", "--target", "0.3", "--by",
                 "latency", "--runtime", "eager", "--batch", "1", "--round-to", "8", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["runtime"] == "eager" and summary["batch"] == 1 and summary["latency_reduction"] >= 0.3
    before, predicted = summary["latency_ms"]
    assert predicted <= 0.7 * before + 1e-4
    saved = json.loads(out.read_text())["preset"]
    assert saved["by"] == "latency" and saved["latency"]["predicted_ms"] == predicted
    assert len(list((tmp_path / "cache" / "latency").iterdir())) == 1  # measured once, kept
