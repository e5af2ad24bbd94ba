"""Every criterion against a case whose answer is known by hand, the streamed statistics against a plain
slow reference, invariance to batching, and the whole registry on three real architectures."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from saliency_testkit import SmallNet, identity_tap, probe_batches, random_arrays, single_thread  # noqa: F401

from prunekit.criteria import criterion_class, get_criterion, list_criteria
from prunekit.criteria.afie import afie_entropy, allocate_ratios, conv_macs
from prunekit.criteria.datadriven import chip_scores
from prunekit.criteria.ensembles import fit_additive
from prunekit.criteria.information import capacity, independence
from prunekit.criteria.mapex import box_masks
from prunekit.data import make_box_probe
from prunekit.models.layers import conv_layers
from prunekit.models.zoo import build_model
from prunekit.criteria.probe import Probe

DATA_CRITERIA = [n for n in list_criteria() if criterion_class(n).needs_data]


def run(name, model, probe=None, **params):
    return get_criterion(name, **params).score(model, probe=probe)


def labels(n):
    return torch.arange(n) % 10


def entropy_of(p):
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------------------------- the interface


def test_registry_has_every_criterion_of_the_issue():
    expected = {"sfm_entropy", "mapex", "capacity", "independence", "information", "linear_ensembles", "afie",
                "l1", "l2", "fpgm", "bn_scale", "taylor", "hrank", "chip", "random", "grad_x_activation"}
    assert set(list_criteria()) == expected
    assert list_criteria()[:2] == ["sfm_entropy", "mapex"]  # seed criteria first, by seed number


@pytest.mark.parametrize("name", list_criteria())
def test_metadata_is_complete_and_defaults_are_valid(name):
    cls = criterion_class(name)
    assert cls.name == name and len(cls.description) > 60
    if cls.seed_doc is not None:
        assert "Reconstructed" in cls.description or "reconstructed" in cls.description
    assert not (cls.needs_labels or cls.needs_boxes) or cls.needs_data
    crit = cls()
    assert crit.config == {p.name: p.default for p in cls.params}
    for p in cls.params:
        assert p.validate(p.default) == p.default and p.allowed()


def test_bad_parameters_say_what_is_allowed():
    with pytest.raises(ValueError, match="estimator must be one of 'gap', 'pooled', 'spatial', got 'median'"):
        get_criterion("sfm_entropy", estimator="median")
    with pytest.raises(ValueError, match=r"bins must be an integer in \[2, 4096\], got 1"):
        get_criterion("sfm_entropy", bins=1)
    with pytest.raises(ValueError, match=r"keep must be a number in \(0, 1\), got 1.0"):
        get_criterion("linear_ensembles", keep=1.0)
    with pytest.raises(ValueError, match=r"bins must be an integer .*got 2.5"):
        get_criterion("capacity", bins=2.5)
    with pytest.raises(ValueError, match="sfm_entropy has no parameter bogus; its parameters: estimator, bins, reads"):
        get_criterion("sfm_entropy", bogus=1)
    with pytest.raises(ValueError, match="target must be at most cap"):
        get_criterion("afie", target=0.9, cap=0.5)
    with pytest.raises(KeyError, match="unknown criterion 'nope'; known criteria: sfm_entropy, mapex"):
        get_criterion("nope")
    assert get_criterion("sfm_entropy", bins="16").config["bins"] == 16  # strings, as from the CLI
    assert get_criterion("mapex", expand="false").config["expand"] is False
    assert get_criterion("information", sigma=2).config["sigma"] == 2.0


def test_data_criteria_refuse_a_missing_or_wrong_probe():
    model = identity_tap(2)
    with pytest.raises(ValueError, match="needs a probe set"):
        run("hrank", model)
    with pytest.raises(ValueError, match="empty probe set"):
        run("hrank", model, [])
    with pytest.raises(ValueError, match="box-labelled"):
        run("mapex", model, [(torch.zeros(1, 2, 4, 4), labels(1))])
    with pytest.raises(ValueError, match="re-iterable"):
        run("hrank", model, iter([(torch.zeros(1, 2, 4, 4), labels(1))]))


# ---------------------------------------------------------------------------------------------- SFM entropy


def test_gap_and_pooled_entropies_by_hand():
    # 4 images, 3 channels of constant 2x2 maps: their spatial means per image are the map values
    means = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 3.0]]).T  # (4, 3)
    x = means[:, :, None, None].expand(4, 3, 2, 2).contiguous()
    probe = probe_batches(x, labels(4), [1, 3])
    gap2 = run("sfm_entropy", identity_tap(3), probe, estimator="gap", bins=2)["0"]
    expected = [math.log(2), math.log(2), entropy_of([3, 1])]  # 0,1 | 2,3 share bins pairwise with 2 bins
    assert torch.allclose(gap2, torch.tensor(expected), atol=1e-6)
    gap4 = run("sfm_entropy", identity_tap(3), probe, estimator="gap", bins=4)["0"]
    assert torch.allclose(gap4, torch.tensor([math.log(2), math.log(4), entropy_of([3, 1])]), atol=1e-6)
    pooled = run("sfm_entropy", identity_tap(3), probe, estimator="pooled", bins=4)["0"]
    assert torch.allclose(pooled, gap4, atol=1e-6)  # constant maps: every value repeats its image's mean
    # half 0 / half 2 in every image: the spatial means are all 1 (gap: 0), the values are two (pooled: ln 2)
    half = torch.zeros(4, 1, 2, 2)
    half[:, :, 0] = 2.0
    assert run("sfm_entropy", identity_tap(1), [(half, labels(4))], estimator="gap", bins=4)["0"].item() == 0.0
    assert run("sfm_entropy", identity_tap(1), [(half, labels(4))], estimator="pooled", bins=4)["0"].item() == (
        pytest.approx(math.log(2)))


def test_a_constant_channel_has_zero_entropy_under_gap_and_pooled():
    x = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x[:, 1] = 0.7
    probe = probe_batches(x, labels(12), [5, 7])
    for estimator in ("gap", "pooled"):
        s = run("sfm_entropy", identity_tap(3), probe, estimator=estimator)["0"]
        assert s[1].item() == 0.0 and (s[[0, 2]] > 1.0).all(), estimator


def test_spatial_entropy_has_the_opposite_sense():
    x = torch.zeros(2, 2, 4, 4)
    x[:, 1, 0, 0] = 50.0  # channel 0 flat, channel 1 one hot spot
    crit = get_criterion("sfm_entropy", estimator="spatial")
    s = crit.score(identity_tap(2), probe=[(x, labels(2))])["0"]
    assert s[0].item() == pytest.approx(math.log(16)) and s[1].item() < 1e-18
    assert "opposite sense" in crit.caveat and get_criterion("sfm_entropy").caveat == ""
    assert "poorly reproducible" in get_criterion("sfm_entropy", estimator="gap").caveat


def test_sfm_defaults_are_the_measured_most_reproducible():
    crit = get_criterion("sfm_entropy")
    assert crit.config["estimator"] == "pooled" and crit.reads == "post_add"  # experiments/sfm_reliability.py
    doc = {p.name: p.doc for p in crit.params}
    assert "pooled 0.97, gap 0.54" in doc["estimator"] and "0.70" in doc["reads"]


# ---------------------------------------------------------------------------------------------- Map-EX


def test_box_masks_map_and_grow_boxes_symmetrically():
    box = [torch.tensor([[4.0, 4.0, 12.0, 12.0]])]
    m = box_masks(box, 8, 8, stride=2, grow=0.0)[0]  # [2, 6] in feature coordinates: cells 2..5
    assert m.sum() == 16 and m[2:6, 2:6].all()
    g = box_masks(box, 8, 8, stride=2, grow=1.0)[0]  # [1, 7]: cells 1..6
    assert g.sum() == 36 and g[1:7, 1:7].all()
    two = box_masks([torch.tensor([[0.0, 0.0, 2.0, 2.0], [6.0, 6.0, 8.0, 8.0]]), torch.zeros(0, 4)], 8, 8, 1, 0.0)
    assert two[0].sum() == 8 and two[0, 0, 0] and two[0, 7, 7] and not two[1].any()


def test_mapex_ranks_the_inside_filter_above_the_outside_filter():
    x = torch.zeros(3, 2, 16, 16)
    x[:, 0, 4:12, 4:12] = 1.0  # fires only inside the box
    x[:, 1] = 1.0
    x[:, 1, 4:12, 4:12] = 0.0  # fires only outside
    boxes = [torch.tensor([[4.0, 4.0, 12.0, 12.0]])] * 3
    probe = [(x[:2], labels(2), boxes[:2]), (x[2:], labels(1), boxes[2:])]
    plain = run("mapex", identity_tap(2), probe, expand=False)["0"]
    assert plain[0].item() == pytest.approx(1 / 1e-6) and plain[1].item() == 0.0
    # the 1x1 identity conv has receptive field 1 at stride 1: boxes grow by 0.5, but the ring of cells around
    # the box has fields (one pixel each) that only touch it: the foreground is the box itself, as for Map
    grown = run("mapex", identity_tap(2), probe)["0"]
    assert torch.equal(grown, plain)


def delta_convs(*strides):
    """3x3 convs (padding 1, one channel) with a centre-one kernel, in sequence at the given strides: each passes
    its input through (subsampled at stride 2), so the last conv's map is the input at its total stride."""
    convs = [nn.Conv2d(1, 1, 3, stride=s, padding=1, bias=False) for s in strides]
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
    return nn.Sequential(*convs)


def test_mapex_receptive_field_rule_by_hand_on_a_small_map():
    # one 3x3 conv (stride 1, receptive field 3) on an 8x8 map, the 4x4 box [2, 6): cell u's field is pixels
    # u-1..u+1, which overlaps box pixels 2..5 for u = 1..6, so the foreground is the 6x6 block of cells 1..6
    # (grown box (0.5, 7.5) open: centres 1.5..6.5) and the 28 cells of the outer ring (u or v = 0 or 7, whose
    # fields only touch the box edge) are background. Edges included, every cell counted and the image was skipped.
    model = delta_convs(1)
    layer = conv_layers(model)[0]
    assert (layer.stride, layer.receptive_field) == (1, 3)
    box = [torch.tensor([[2.0, 2.0, 6.0, 6.0]])]
    fg = box_masks(box, 8, 8, layer.stride, layer.receptive_field / 2)[0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:7, 1:7] = True
    assert torch.equal(fg, expected)
    x = torch.ones(1, 1, 8, 8)
    x[0, 0, 1:7, 1:7] = 2.0  # 2 on the 36 foreground cells, 1 on the ring
    s = get_criterion("mapex").score(model, probe=[(x, labels(1), box)])
    assert s["0"].item() == pytest.approx(2.0 / (1.0 + 1e-6)) and s.info["images"] == {"0": 1}
    # plain Map: centres strictly inside [2, 6), cells 2..5 (16); background 20 cells of 2 and 28 of 1
    plain = get_criterion("mapex", expand=False).score(model, probe=[(x, labels(1), box)])["0"].item()
    assert plain == pytest.approx(2.0 / (68 / 48 + 1e-6))


def test_mapex_receptive_field_rule_by_hand_in_deeper_layers():
    # three 3x3 convs at stride 1: the third has receptive field 7 (pixels u-3..u+3). Box [0, 2) (pixels 0, 1):
    # the field reaches them for u - 3 <= 1, cells 0..4, a 5x5 corner (grown box (-3.5, 5.5): centres up to 4.5).
    deep = conv_layers(delta_convs(1, 1, 1))[2]
    assert (deep.stride, deep.receptive_field) == (1, 7)
    corner = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])]
    fg = box_masks(corner, 8, 8, deep.stride, deep.receptive_field / 2)[0]
    assert fg.sum() == 25 and fg[:5, :5].all()
    # 3x3 at stride 1, 3x3 at stride 2, 3x3: the third conv has total stride 2 and field 3 + 2 + 2 * 2 = 9. On
    # a 16x16 image (8x8 map), cell u's field is centred on pixel 2u + 1, [2u - 3.5, 2u + 5.5], and overlaps the
    # box [0, 4) for 2u - 3.5 < 4, cells 0..3: a 4x4 corner (feature box [0, 2] grown by 9/4: (-2.25, 4.25)).
    strided = conv_layers(delta_convs(1, 2, 1))[2]
    assert (strided.stride, strided.receptive_field) == (2, 9)
    fg = box_masks([torch.tensor([[0.0, 0.0, 4.0, 4.0]])], 8, 8, strided.stride, 9 / 4)[0]
    assert fg.sum() == 16 and fg[:4, :4].all()


def test_mapex_skips_images_without_background():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    full = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[0.0, 0.0, 4.0, 8.0]])]
    s = get_criterion("mapex", expand=False).score(identity_tap(1), probe=[(x, labels(2), full)])
    mag = x[1, 0]
    assert s["0"].item() == pytest.approx((mag[:, :4].mean() / (mag[:, 4:].mean() + 1e-6)).item(), rel=1e-5)
    assert s.info["images"] == {"0": 1}
    none_left = get_criterion("mapex", expand=False).score(identity_tap(1), probe=[(x[:1], labels(1), full[:1])])
    assert none_left["0"].item() == 1.0 and none_left.info["images"] == {"0": 0}


# ---------------------------------------------------------------------------------------------- weights


def set_weight(model, weight):
    with torch.no_grad():
        model[0].weight.copy_(weight)
    return model


def conv_of(weight):
    c_out, c_in, k, _ = weight.shape
    return set_weight(nn.Sequential(nn.Conv2d(c_in, c_out, k, bias=False)), weight)


def test_fpgm_of_scaled_copies():
    w = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([1.0, 2.0, -1.0, 3.0])
    s = run("fpgm", conv_of(c[:, None, None, None] * w))["0"]
    expected = w.norm() * (c[:, None] - c[None, :]).abs().sum(1)
    assert torch.allclose(s, expected, rtol=1e-6)
    assert s.argmin() == 0  # the copy nearest the others is the most redundant


def test_independence_of_scaled_copies():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(18, generator=g)
    w -= w.mean()
    v = torch.randn(18, generator=g)
    v -= v.mean()
    v -= (v @ w) / (w @ w) * w  # centred and orthogonal to w: pearson(w, v) = 0
    filters = torch.stack([w, 2 * w, -3 * w, v]).view(4, 2, 3, 3)
    s = run("independence", conv_of(filters))["0"]
    assert torch.allclose(s, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0]), atol=1e-6)


def test_capacity_and_information_by_hand():
    filters = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.2, 0.6, 1.0]]).view(3, 1, 2, 2)
    ic2 = run("capacity", conv_of(filters), bins=2)["0"]
    assert torch.allclose(ic2, torch.tensor([math.log(2), 0.0, math.log(2)]), atol=1e-6)
    ic4 = run("capacity", conv_of(filters), bins=4)["0"]  # 0.2 -> bin 0, 0.6 -> bin 2, 1.0 -> last bin
    assert torch.allclose(ic4, torch.tensor([math.log(2), 0.0, entropy_of([2, 1, 1])]), atol=1e-6)
    info = run("information", conv_of(filters), bins=4, sigma=2.0)["0"]
    ic, ii = capacity(filters, 4).float(), independence(filters).float()
    mm = lambda v: (v - v.min()) / (v.max() - v.min())
    assert torch.allclose(info, mm(ic) + 2 * mm(ii), atol=1e-6)
    # by hand: minmax(IC) = [2/3, 0, 1] (ln 2 / 1.5 ln 2); filter 1 is constant, so uncorrelated with the others
    # and the most independent, while filters 0 and 2 correlate (r = 0.91): minmax(II) = [0, 1, 0]
    assert info.tolist() == pytest.approx([2 / 3, 2.0, 1.0], abs=1e-6)
    ic_only = run("information", conv_of(filters), sigma=0.0)["0"]
    assert ic_only.tolist() == pytest.approx(mm(capacity(filters)).tolist())


def test_norms_bn_scale_and_random():
    w = torch.tensor([[1.0, -2.0, 2.0, 0.0], [3.0, 0.0, 0.0, -4.0]]).view(2, 1, 2, 2)
    assert run("l1", conv_of(w))["0"].tolist() == [5.0, 7.0]
    assert run("l2", conv_of(w))["0"].tolist() == [3.0, 5.0]
    model = SmallNet()
    with torch.no_grad():
        model.bn2.weight.copy_(torch.tensor([-3.0, 1, 2, -0.5, 0, 4, 5, -6]))
    assert run("bn_scale", model)["conv2"].tolist() == [3.0, 1, 2, 0.5, 0, 4, 5, 6]
    with pytest.raises(ValueError, match="0 has none"):
        run("bn_scale", conv_of(w))
    a, b = run("random", model), run("random", model, seed=1)
    assert torch.equal(a["conv2"], run("random", model)["conv2"]) and not torch.equal(a["conv2"], b["conv2"])
    only = get_criterion("random").score(model, ["conv3"])
    assert list(only) == ["conv3"] and torch.equal(only["conv3"], a["conv3"])


# ---------------------------------------------------------------------------------------------- HRank, CHIP


def test_hrank_of_maps_with_known_ranks():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 4, 6, 6)
    for i in range(3):
        u, v, p, q = (torch.randn(6, generator=g) for _ in range(4))
        x[i, 0] = torch.outer(u, v)  # rank 1
        x[i, 2] = torch.randn(6, 6, generator=g)  # full rank 6
        x[i, 3] = torch.outer(u, v) + torch.outer(p, q)  # rank 2; channel 1 stays 0: rank 0
    s = run("hrank", identity_tap(4), probe_batches(x, labels(3), [2, 1]))["0"]
    assert s.tolist() == [1.0, 0.0, 6.0, 2.0]


def test_chip_of_orthogonal_rows():
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])  # orthogonal, norm 2
    rows = torch.kron(h, torch.ones(1, 4))[:3] * torch.tensor([1.0, 2.0, 3.0])[:, None]  # (3, 16), orthogonal
    x = rows.view(1, 3, 4, 4)
    s = run("chip", identity_tap(3), [(x, labels(1))])["0"]  # singular values = row norms = 4, 8, 12
    assert torch.allclose(s, torch.tensor([4.0, 8.0, 12.0]), atol=1e-5)
    # more channels than positions (the A^T A path): two zero rows add nothing
    wide = torch.cat([h * torch.tensor([1.0, 2, 3, 4])[:, None], torch.zeros(2, 4)]).view(1, 6, 2, 2)
    s = run("chip", identity_tap(6), [(wide, labels(1))])["0"]
    assert torch.allclose(s, torch.tensor([2.0, 4, 6, 8, 0, 0]), atol=1e-5)


# ---------------------------------------------------------------------------------------------- AFIE


def test_afie_of_a_matrix_with_known_singular_values():
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(4, 3, generator=g, dtype=torch.float64)).Q
    m = u @ torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)) @ v.T  # (3, 4), singular 3, 2, 1
    weight = m[:, :, None, None].expand(3, 4, 3, 3).float()  # every kernel position holds m: the mean is m
    e = [math.exp(1.0), math.exp(0.5), 1.0]  # softmax of the min-max scaled values 1, 0.5, 0
    k_by_hand = entropy_of(e)
    assert afie_entropy(weight) == pytest.approx(k_by_hand, rel=1e-6)
    scores = get_criterion("afie").score(conv_of(weight))
    assert scores.info["afie"]["0"] == pytest.approx(k_by_hand / 3, rel=1e-6)
    assert torch.equal(scores["0"], run("l1", conv_of(weight))["0"])  # filters inside ranked by L1


def test_afie_of_an_orthogonal_layer_is_ln_n():
    # a 1x1 conv with an orthogonal 16 x 16 weight: 16 equal singular values (equal up to float32 round-off,
    # ~1e-7 apart), so q is uniform and K = ln 16; min-max scaling of the round-off alone gave 2.73
    q = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).Q
    weight = q[:, :, None, None].float()
    assert afie_entropy(weight) == pytest.approx(math.log(16), abs=1e-6)
    assert get_criterion("afie").score(conv_of(weight)).info["entropy"]["0"] == pytest.approx(math.log(16), abs=1e-6)
    assert afie_entropy(3.0 * torch.eye(5)[:, :, None, None]) == pytest.approx(math.log(5), abs=1e-12)


def test_afie_of_two_equal_and_one_smaller_singular_value():
    # diag(1, 1, 0.999): singular values 1, 1, 0.999 -- a real spread of 1e-3, far above round-off, so they are
    # min-max scaled to 1, 1, 0: q = (e, e, 1) / (2e + 1) and K = ln(2e + 1) - 2e / (2e + 1)
    weight = torch.diag(torch.tensor([1.0, 1.0, 0.999]))[:, :, None, None]
    e = math.e
    assert afie_entropy(weight) == pytest.approx(math.log(2 * e + 1) - 2 * e / (2 * e + 1), rel=1e-9)


def test_afie_ratio_allocation():
    r = allocate_ratios({"a": 0.2, "b": 0.1}, 0.3, {"a": 10, "b": 10})  # lambda_b = 2 lambda_a; 30 l / 20 = 0.3
    assert r["a"] == pytest.approx(0.2) and r["b"] == pytest.approx(0.4)
    capped = allocate_ratios({"a": 1.0, "b": 0.01}, 0.5, {"a": 10, "b": 10})
    assert capped["b"] == 0.95 and capped["a"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="target must be in"):
        allocate_ratios({"a": 1.0}, 0.97, {"a": 1})


def test_afie_criterion_meets_the_target_by_filters_and_by_flops():
    model = build_model("resnet20")
    layers = conv_layers(model)
    assert conv_macs(model, layers[:1], 32) == {"conv1": 16 * 3 * 9 * 32 * 32}
    for by in ("filters", "flops"):
        s = get_criterion("afie", target=0.4, by=by).score(model)
        w = {la.name: la.out_channels for la in layers} if by == "filters" else conv_macs(model, layers, 32)
        pruned = sum(s.info["ratio"][k] * w[k] for k in w) / sum(w.values())
        assert pruned == pytest.approx(0.4, abs=1e-9), by
        afie = s.info["afie"]
        top = max(afie, key=afie.get)
        assert s.info["ratio"][top] == min(s.info["ratio"].values())  # highest AFIE, smallest ratio


# ---------------------------------------------------------------------------------------------- ensembles


def test_fit_additive_recovers_planted_coefficients():
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(400, 10, generator=g) < 0.8).float()
    b = torch.randn(10, generator=g, dtype=torch.float64)
    losses = 1.5 + masks.double() @ b + 0.01 * torch.randn(400, generator=g, dtype=torch.float64)
    fit = fit_additive(masks, losses, alpha=1e-3)
    assert torch.allclose(fit.b, b, atol=0.01) and fit.b0 == pytest.approx(1.5, abs=0.02)
    assert fit.r2 > 0.999 and fit.r2_loo == pytest.approx(fit.r2, abs=1e-3)
    # leave-one-out by brute force on a small fit agrees with the hat-matrix shortcut
    small = fit_additive(masks[:30], losses[:30], alpha=0.1)
    loo = []
    for i in range(30):
        keep = torch.arange(30) != i
        f_i = fit_additive(masks[:30][keep], losses[:30][keep], alpha=0.1)
        loo.append(float(losses[i] - f_i.b0 - masks[i].double() @ f_i.b))
    ss_tot = float(((losses[:30] - losses[:30].mean()) ** 2).sum())
    assert small.r2_loo == pytest.approx(1 - sum(e * e for e in loo) / ss_tot, rel=1e-6)
    # fewer samples than filters (the dual form), losses of pure noise: in sample the fit looks perfect,
    # leave-one-out shows that it predicts nothing
    one_off = 1 - torch.eye(6, 10)  # sample i switches filter i off: the fit can interpolate any 6 losses
    noise = torch.randn(6, generator=g, dtype=torch.float64)
    few = fit_additive(one_off, noise, alpha=1e-3)
    assert few.b.shape == (10,) and few.r2 == pytest.approx(1.0, abs=1e-3) and few.r2_loo < 0


class Additive(nn.Module):
    """x -> conv 1x1 (1 -> F, weights a) -> spatial mean -> linear head W: logits linear in each filter's gate."""

    def __init__(self, a, head, bias):
        super().__init__()
        self.conv = nn.Conv2d(1, len(a), 1, bias=False)
        self.head = nn.Linear(len(a), 2)
        with torch.no_grad():
            self.conv.weight.copy_(a.view(-1, 1, 1, 1))
            self.head.weight.copy_(head)
            self.head.bias.copy_(bias)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_linear_ensembles_recover_a_planted_additive_loss():
    a = torch.tensor([1.0, -0.5, 2.0, 0.3, 1.5, -1.0])
    head = torch.tensor([[0.5, 1.0, -0.25, 2.0, 0.0, 0.7], [0.1] * 6])
    model = Additive(a, head, torch.tensor([0.4, 0.0]))
    x, y = torch.ones(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    # nll on logits: loss = -logit_0 = -(0.4 + sum_j head[0, j] a_j m_j), so importance_j = head[0, j] a_j
    s = run("linear_ensembles", model, [(x[:3], y[:3]), (x[3:], y[3:])], loss="nll", samples=64)
    assert torch.allclose(s["conv"], head[0] * a, atol=2e-3)
    assert s.info["r2"]["conv"] > 0.9999 and s.info["r2_loo"]["conv"] > 0.9999 and s.info["samples"]["conv"] == 64
    assert s.info["intercept"]["conv"] == pytest.approx(-0.4, abs=2e-3)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # the gates are gone


def test_linear_ensembles_respect_the_time_budget():
    model = SmallNet()
    x = torch.randn(4, 3, 16, 16)
    s = run("linear_ensembles", model, [(x, labels(4))], budget_s=1e-9, samples=50)
    assert set(s.info["samples"].values()) == {2}  # stopped at the minimum of 2 samples per fit


# ---------------------------------------------------------------------------------------------- streaming


def reference_maps(model, x, post_add=False):
    """Every feature map of SmallNet, read directly from its distinct ReLU modules and, for the residual conv3,
    the BN before the add (or with ``post_add`` the ReLU after it)."""
    maps = {}
    handles = [
        model.act1.register_forward_hook(lambda m, i, o: maps.__setitem__("conv1", o)),
        model.act2.register_forward_hook(lambda m, i, o: maps.__setitem__("conv2", o)),
        (model.act3 if post_add else model.bn3).register_forward_hook(lambda m, i, o: maps.__setitem__("conv3", o)),
    ]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return maps, out


def numpy_entropy(values, bins):
    lo, hi = values.min(), values.max()
    if lo == hi:
        return 0.0
    counts, _ = np.histogram(values, bins=bins, range=(lo, hi))
    return entropy_of(counts)


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return SmallNet(seed=3), x, y


@pytest.mark.parametrize("reads", ["pre_add", "post_add"])
def test_streamed_entropies_equal_a_plain_reference(small, reads):
    model, x, y = small
    probe = probe_batches(x, y, [5, 6, 5])
    with torch.no_grad():
        maps, _ = reference_maps(model, x, post_add=reads == "post_add")
    assert get_criterion("sfm_entropy", reads=reads).reads == reads
    gap = run("sfm_entropy", model, probe, bins=8, estimator="gap", reads=reads)
    pooled = run("sfm_entropy", model, probe, estimator="pooled", bins=8, reads=reads)
    # one batch holds every filter's minimum and maximum: pooled counts exactly; over three batches, each
    # counted in cells over its own range, within the bound of prunekit.criteria.histograms
    pooled_one_batch = run("sfm_entropy", model, probe_batches(x, y, [16]), estimator="pooled", bins=8, reads=reads)
    spatial = run("sfm_entropy", model, probe, estimator="spatial", reads=reads)
    for name, f in maps.items():
        f = f.double().numpy()
        for c in range(f.shape[1]):
            assert gap[name][c].item() == pytest.approx(numpy_entropy(f[:, c].mean((1, 2)), 8), abs=1e-6)
            assert pooled_one_batch[name][c].item() == pytest.approx(numpy_entropy(f[:, c].ravel(), 8), abs=1e-6)
            assert pooled[name][c].item() == pytest.approx(numpy_entropy(f[:, c].ravel(), 8), abs=0.01)
            flat = f[:, c].reshape(len(f), -1)
            p = np.exp(flat - flat.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            h = -(p * np.log(np.where(p > 0, p, 1))).sum(1).mean()
            assert spatial[name][c].item() == pytest.approx(h, rel=1e-5)


def test_streamed_hrank_and_chip_equal_a_plain_reference(small):
    model, x, y = small
    probe = probe_batches(x, y, [7, 9])
    with torch.no_grad():
        maps, _ = reference_maps(model, x, post_add=True)  # HRank and CHIP read conv3 after the add
    hrank, chip = run("hrank", model, probe), run("chip", model, probe)
    for name, f in maps.items():
        f = f.double().numpy()
        ranks = np.array([[np.linalg.matrix_rank(f[i, c]) for c in range(f.shape[1])] for i in range(len(f))])
        assert np.allclose(hrank[name].numpy(), ranks.mean(0)), name
        ci = np.zeros(f.shape[1])
        for i in range(len(f)):
            a = f[i].reshape(f.shape[1], -1)
            full = np.linalg.svd(a, compute_uv=False).sum()
            for j in range(len(a)):
                cut = a.copy()
                cut[j] = 0
                ci[j] += full - np.linalg.svd(cut, compute_uv=False).sum()
        assert np.allclose(chip[name].numpy(), ci / len(f), rtol=1e-5, atol=1e-6), name


def hooked_maps(model, x, hooks):
    """The published codes' way to read feature maps: forward hooks on the model's own activation modules.
    hooks: {module path: [conv name of its 1st call, of its 2nd call, ...]} (a shared ReLU fires once per call).
    Returns {conv name: float64 (B, C, H, W)} after one forward of x."""
    maps = {}

    def keep(names):
        calls = iter(names)
        return lambda module, inputs, output: maps.__setitem__(next(calls), output.detach().double().clone())

    handles = [model.get_submodule(path).register_forward_hook(keep(names)) for path, names in hooks.items()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return maps


def resnet20_hooks(model):
    """CIFAR ResNet-20 (prunekit.models.zoo): the stem's ReLU, then each block's one ReLU module, called after bn1
    (conv1's map) and after the residual add (conv2's map: HRank's and CHIP's relu2)."""
    hooks = {"relu": ["conv1"]}
    for stage in ("layer1", "layer2", "layer3"):
        for j in range(len(model.get_submodule(stage))):
            hooks[f"{stage}.{j}.relu"] = [f"{stage}.{j}.conv1", f"{stage}.{j}.conv2"]
    return hooks


def vgg_hooks(model):
    """VGG-16-BN: each conv's map is the output of the ReLU two modules after it (conv, BN, ReLU)."""
    return {f"features.{i + 2}": [f"features.{i}"] for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)}


def hrank_reference(maps):
    """HRank's rank_generation.py: per image and channel torch's matrix rank of the H x W map, averaged."""
    return {name: torch.tensor([[float(torch.linalg.matrix_rank(f[i, c].float())) for c in range(f.shape[1])]
                                for i in range(len(f))]).mean(0) for name, f in maps.items()}


def chip_reference(maps):
    """CHIP's calculate_ci.py: per image A (C, HW); CI_j = ||A||_* - ||A with row j zeroed||_*, averaged over the
    images (here in float64, without the published code's rounding of the maps to 4 decimals)."""
    out = {}
    for name, f in maps.items():
        a = f.flatten(2)  # (B, C, HW)
        c = a.shape[1]
        cut = a[:, None].repeat(1, c, 1, 1)  # (B, C, C, HW): copy j has row j zeroed
        cut[:, torch.arange(c), torch.arange(c)] = 0
        full = torch.linalg.svdvals(a).sum(-1)  # (B,)
        out[name] = (full[:, None] - torch.linalg.svdvals(cut).sum(-1)).mean(0)
    return out


def reference_case(model_name, images):
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    x = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    hooks = resnet20_hooks(model) if model_name == "resnet20" else vgg_hooks(model)
    return model, x, hooked_maps(model, x, hooks)


@pytest.mark.parametrize("model_name, images", [("resnet20", 16), ("vgg16_bn", 4)])
def test_hrank_and_chip_equal_their_published_code_on_real_models(model_name, images):
    model, x, maps = reference_case(model_name, images)
    assert set(maps) == {layer.name for layer in conv_layers(model)}
    probe = probe_batches(x, labels(images), [images // 2, images - images // 2])
    hrank, chip = run("hrank", model, probe), run("chip", model, probe)
    for name, expected in hrank_reference(maps).items():
        torch.testing.assert_close(hrank[name], expected.float(), rtol=0, atol=1e-5, msg=name)
    for name, expected in chip_reference(maps).items():
        torch.testing.assert_close(chip[name], expected.float(), rtol=1e-4, atol=1e-4, msg=name)


def test_hrank_reads_after_the_add_where_the_bn_output_would_differ():
    model, x, maps = reference_case("resnet20", 4)
    layers = {layer.name: layer for layer in conv_layers(model)}
    residual = [name for name, layer in layers.items() if layer.residual]
    assert len(residual) == 9 and get_criterion("hrank").reads == get_criterion("chip").reads == "post_add"
    bn_maps = hooked_maps(model, x, {layers[name].bn: [name] for name in residual})  # the pre-add BN outputs
    ranks_after, ranks_before = hrank_reference(maps), hrank_reference(bn_maps)
    hrank = run("hrank", model, [(x, labels(4))])
    for name in residual:
        assert torch.equal(hrank[name], ranks_after[name].float()), name
    assert any(not torch.equal(ranks_after[n], ranks_before[n]) for n in residual)  # the two maps do differ


def test_chip_scores_both_gram_paths_equal_svd():
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 5, 3, 3), (2, 12, 2, 2)]:  # C <= HW and C > HW
        f = torch.randn(*shape, generator=g, dtype=torch.float64)
        got = chip_scores(f)
        for i in range(shape[0]):
            a = f[i].flatten(1)
            for j in range(shape[1]):
                cut = a.clone()
                cut[j] = 0
                ref = torch.linalg.svdvals(a).sum() - torch.linalg.svdvals(cut).sum()
                assert got[i, j].item() == pytest.approx(ref.item(), abs=1e-6)


def maps_and_gradients(model, x, y, reduction):
    """SmallNet's feature maps (conv3: the BN output the gate multiplies) and the gradient of the cross-entropy
    (summed or averaged over x) at each, by autograd on the maps themselves."""
    maps, out = reference_maps(model, x)
    for f in maps.values():
        f.retain_grad()
    F.cross_entropy(out, y, reduction=reduction).backward()
    model.zero_grad()
    return {name: (f.detach(), f.grad) for name, f in maps.items()}


def test_taylor_cvpr2019_is_the_squared_batch_sum_averaged_over_batches(small):
    model, x, y = small
    sizes = [10, 6]
    expected = {}
    for xb, yb in probe_batches(x, y, sizes):  # NVlabs/Taylor_pruning, method 22: gate after BN, mean loss
        for name, (f, g) in maps_and_gradients(model, xb, yb, "mean").items():
            expected[name] = expected.get(name, 0) + (f * g).sum((0, 2, 3)).double() ** 2 / len(sizes)
    taylor = run("taylor", model, probe_batches(x, y, sizes))
    assert get_criterion("taylor").config["form"] == "cvpr2019"
    for name, e in expected.items():
        torch.testing.assert_close(taylor[name], e.float(), rtol=1e-4, atol=1e-10, msg=name)
    shuffled = run("taylor", model, probe_batches(x, y, sizes)[::-1])  # the same batches in another order
    rebatched = run("taylor", model, probe_batches(x, y, [8, 8]))
    for name, s in taylor.items():
        torch.testing.assert_close(shuffled[name], s, rtol=1e-4, atol=1e-10)
        assert not torch.allclose(rebatched[name], s, rtol=1e-2), name  # batch sums depend on the batching


def test_taylor_iclr2017_and_grad_x_activation_equal_a_plain_reference(small):
    model, x, y = small
    probe = probe_batches(x, y, [10, 6])
    taylor = run("taylor", model, probe, form="iclr2017")
    for name, (f, g) in maps_and_gradients(model, x, y, "sum").items():  # summed loss: per-image gradients
        expected = (f * g).mean((2, 3)).abs().mean(0)  # |spatial mean of activation x gradient|, image mean
        torch.testing.assert_close(taylor[name], expected, rtol=1e-4, atol=1e-9, msg=name)
    maps, out = reference_maps(model, x)
    for f in maps.values():
        f.retain_grad()
    out.gather(1, y[:, None]).sum().backward()  # each image's true-class logit
    gxa = run("grad_x_activation", model, probe)
    gxa_abs = run("grad_x_activation", model, probe, absolute=True)
    for name, f in maps.items():
        prod = (f * f.grad).detach()  # for ReLU maps equal to BN output x its gradient
        assert torch.allclose(gxa[name], prod.mean((0, 2, 3)), rtol=1e-4, atol=1e-7), name
        assert torch.allclose(gxa_abs[name], prod.abs().mean((0, 2, 3)), rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("name", DATA_CRITERIA)
def test_invariant_to_batch_order_and_batch_size(small, name):
    model, x, y = small
    params = {"samples": 12, "joint": True} if name == "linear_ensembles" else {}
    if name == "taylor":
        params = {"form": "iclr2017"}  # the cvpr2019 form depends on the batching by definition (tested above)
    if criterion_class(name).needs_boxes:
        g = torch.Generator().manual_seed(2)
        corners = torch.randint(0, 8, (16, 2), generator=g).float()
        boxes = [torch.cat([c, c + 8])[None] for c in corners]
        batchings = [[(x[i : i + 16], y[i : i + 16], boxes[i : i + 16]) for i in range(0, 16, 16)],
                     [(x[i : i + 5], y[i : i + 5], boxes[i : i + 5]) for i in range(0, 16, 5)]]
    else:
        batchings = [probe_batches(x, y, [16]), probe_batches(x, y, [5, 6, 5])]
    batchings.append(batchings[1][::-1])
    results = [run(name, model, b, **params) for b in batchings]
    # pooled entropy, counted in one pass in cells over each batch's range, depends on the batching within its
    # bound (a value binned at most 1/32 of a bin away): a few thousandths of a nat here; the same batches in
    # another order give the same counts
    atol = 0.01 if name == "sfm_entropy" else 1e-5
    for other in results[1:]:
        for layer, s in results[0].items():
            assert torch.allclose(s, other[layer], rtol=1e-4, atol=atol), (name, layer)
    if name == "sfm_entropy":
        assert all(torch.equal(results[1][k], results[2][k]) for k in results[1])


# ---------------------------------------------------------------------------------------------- the registry


MODELS = ["resnet20", "vgg16_bn", "resnet18_cifar"]
_built = {}


def built(name):
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = build_model(name).eval()
    return _built[name]


@pytest.fixture(scope="module")
def probes():
    arrays = random_arrays(8)
    return {
        "plain": Probe.from_arrays(arrays, 8, batch_size=4),
        "boxes": Probe.from_boxes(make_box_probe(arrays, 8, canvas=32, scale=(0.5, 0.75)), batch_size=4),
    }


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", list_criteria())
def test_every_criterion_on_real_architectures(name, model_name, probes):
    model = built(model_name)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {"samples": 4, "joint": True} if name == "linear_ensembles" else {}
    crit = get_criterion(name, **params)
    scores = crit.score(model, probe=probes["boxes" if crit.needs_boxes else "plain"])
    layers = conv_layers(model)
    assert list(scores) == [layer.name for layer in layers]
    for layer in layers:
        s = scores[layer.name]
        assert s.shape == (layer.out_channels,) and s.dtype == torch.float32
        assert torch.isfinite(s).all(), layer.name
    assert model.training  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # weights and BN stats untouched
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    model.eval()
