"""round_to: every pruned group's kept filters rounded to a multiple of N (CPU vector width), through the rule
(prunekit.pruning.ratios.kept_channels), the instant estimate, pruning, plans, presets and the command line; and the fixed
malloc thresholds eager latency is timed under."""
import json
import platform

import pytest
import torch

from prunekit.models import metrics
from prunekit.errors import UserError
from prunekit.models.metrics import steady_allocator
from prunekit.models.zoo import build_model
from prunekit.pruning.plan import Plan
from prunekit.pruning.presets import get_preset
from prunekit.pruning.ratios import kept_channels
from prunekit.pruning.selection import removed_filters
from prunekit.pruning.structure import estimate, structure


@pytest.mark.parametrize("channels, ratio, round_to, kept", [
    (64, 0.3, 16, 48),   # int(64 * 0.7) = 44: 48 is nearer than 32
    (64, 0.5, 16, 32),
    (64, 0.375, 16, 48),  # 40: halfway between 32 and 48, halves up
    (64, 0.7, 16, 16),   # 19 -> 16
    (64, 0.9, 16, 16),   # 6 -> at least 16
    (16, 0.3, 16, 16), (16, 0.5, 16, 16), (16, 0.9375, 16, 16),  # a 16-filter group never shrinks under 16
    (32, 0.3, 16, 16),   # 22 -> 16
    (32, 0.2, 16, 32),   # 25 -> 32
    (16, 0.3, 8, 8),     # 11 -> 8
    (24, 0.05, 16, 24),  # 22: the group's own width (24) is nearer than 16
    (24, 0.25, 16, 16),  # 18 -> 16
    (8, 0.5, 16, 4),     # narrower than round_to: not rounded
    (64, 0.0, 16, 64), (24, 0.0, 16, 24),  # ratio 0 keeps every filter
])
def test_kept_channels_rounded_by_hand(channels, ratio, round_to, kept):
    assert kept_channels(channels, ratio, round_to) == kept


def test_round_to_1_is_the_unrounded_rule_for_a_sweep_of_ratios():
    for channels in (3, 16, 24, 32, 64, 512):
        for i in range(96):
            r = i / 100
            assert kept_channels(channels, r, 1) == kept_channels(channels, r) == int(channels * (1 - r))


def test_kept_channels_never_grows_with_the_ratio():
    for channels in (16, 24, 40, 64):
        for round_to in (4, 8, 16):
            kept = [kept_channels(channels, i / 200, round_to) for i in range(191)]
            assert kept == sorted(kept, reverse=True)


def _scores(model):
    g = torch.Generator().manual_seed(3)
    return {n: torch.rand(m.out_channels, generator=g) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)}


def test_removed_filters_follow_the_rounding():
    model = build_model("resnet20").eval()
    struct = structure(model, (3, 32, 32))
    removed = removed_filters(struct.groups, {"layer3.0.conv1": 0.3}, _scores(model), round_to=16)
    assert len(removed["layer3.0.conv1"]) == 64 - 48


@pytest.fixture(scope="module")
def r20():
    model = build_model("resnet20").eval()
    return model, structure(model, (3, 32, 32))


def test_a_plan_round_trips_with_round_to_and_an_old_file_loads_with_1(r20, tmp_path):
    _, struct = r20
    plan = get_preset("uniform").make(struct, "resnet20", value=0.3, round_to=8)
    assert plan.round_to == 8 and plan.to_dict()["round_to"] == 8
    again = Plan.load(plan.save(tmp_path / "plan.json"))
    assert again == plan and again.round_to == 8
    old = plan.to_dict()
    del old["round_to"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert Plan.load(tmp_path / "old.json").round_to == 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, "x", True, None])
def test_a_bad_round_to_is_refused_naming_the_value(bad, tmp_path):
    with pytest.raises(UserError, match=f"round_to must be a whole number >= 1 .*got {bad!r}"):
        Plan("resnet20", {"conv1": 0.5}, round_to=bad)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"format": "prunekit-plan/1", "arch": "resnet20", "ratios": {}, "round_to": bad}))
    with pytest.raises(UserError, match=f"plan.json: round_to must be .*got {bad!r}"):
        Plan.load(path)


def test_a_uniform_target_is_solved_on_the_rounded_estimate_and_says_what_it_reaches():
    struct = structure(build_model("resnet56").eval(), (3, 32, 32))
    plan = get_preset("uniform").make(struct, "resnet56", target=0.5, round_to=16)
    est = estimate(struct, plan.ratios, 16)
    # widths 16/32/64 take multiples of 16: 16/16/32 removes 49.1% (short of the target), so 16/16/16 it is
    assert sorted({after for _, after in est.channels.values()}) == [16]
    assert est.macs_reduction >= 0.5 and plan.preset["reached"] == round(est.macs_reduction, 4) == 0.5523
    by_ratio = get_preset("uniform").make(struct, "resnet56", value=0.5, round_to=16)
    assert round(estimate(struct, by_ratio.ratios, 16).macs_reduction, 4) == 0.4912  # 16/16/32
    assert "reached" not in get_preset("uniform").make(struct, "resnet56", target=0.5).preset  # unrounded: as before


def test_a_threshold_target_is_met_with_rounding(r20):
    model, struct = r20
    plan = get_preset("threshold").make(struct, "resnet20", target=0.4, scores=_scores(model), criterion="l1",
                                        round_to=8)
    assert estimate(struct, plan.ratios, 8).macs_reduction >= 0.4 and plan.round_to == 8


def test_steady_allocator_sets_the_thresholds_once_and_says_so(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(metrics, "_allocator", None)
    first = steady_allocator(FakeLibc())
    assert first == "glibc mmap threshold 64 MiB, trim threshold 128 MiB"
    assert calls == [(-3, 64 << 20), (-1, 128 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert steady_allocator(FakeLibc()) == first and len(calls) == 2  # idempotent: mallopt is not called again

    class Refusing(FakeLibc):
        def mallopt(self, param, value):
            return 0

    monkeypatch.setattr(metrics, "_allocator", None)
    assert steady_allocator(Refusing()) == "glibc default (mallopt refused the thresholds)"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt's thresholds are glibc's; elsewhere steady_allocator is a no-op")
def test_the_real_glibc_takes_the_thresholds_and_latency_records_them(monkeypatch):
    from prunekit.runs.runtimes import runtime_latencies

    monkeypatch.setattr(metrics, "_allocator", None)
    assert steady_allocator() == "glibc mmap threshold 64 MiB, trim threshold 128 MiB" == steady_allocator()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    out = runtime_latencies(net, (3, 8, 8), batches=(1,), repeat=1, runtimes=("eager",))
    assert out["allocator"] == "glibc mmap threshold 64 MiB, trim threshold 128 MiB"


def test_a_sweep_spec_carries_round_to_and_refuses_a_bad_one():
    from prunekit.runs.sweeps import SweepSpec

    assert SweepSpec(criteria=("l1",), targets=(0.5,), round_to=8).round_to == 8
    assert SweepSpec(criteria=("l1",), targets=(0.5,)).round_to == 1
    with pytest.raises(UserError, match="round_to must be a whole number >= 1 .*got 0"):
        SweepSpec(criteria=("l1",), targets=(0.5,), round_to=0)
