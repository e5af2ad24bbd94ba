"""The tidy score table, its disk cache, the probe set's identity, and the CLI's score and criteria commands."""
import json

import pandas as pd
import pytest
import torch
from saliency_testkit import SmallNet, random_arrays, single_thread  # noqa: F401

import prunekit.data
from prunekit.models.checkpoints import save_checkpoint
from prunekit.cli import main
from prunekit.criteria import get_criterion, list_criteria
from prunekit.criteria.norms import L1Norm
from prunekit.errors import UserError
from prunekit.models.zoo import build_model
from prunekit.criteria.probe import Probe, ProbeSpec
from prunekit.criteria.scores import COLUMNS, read_scores, score, score_model, weights_hash


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scores"


@pytest.fixture
def l1_calls(monkeypatch):
    calls = []
    original = L1Norm.layer_scores

    def counting(self, model, layer):
        calls.append(layer.name)
        return original(self, model, layer)

    monkeypatch.setattr(L1Norm, "layer_scores", counting)
    return calls


def test_table_columns_and_ranks():
    model = SmallNet()
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[3] = 1.0
        model.conv1.weight[1] = 0.5
    df = score(model, "l1")
    assert list(df.columns) == COLUMNS and len(df) == 6 + 8 + 8
    conv1 = df[df.layer == "conv1"]
    assert conv1["filter"].tolist() == list(range(6)) and set(conv1["criterion"]) == {"l1"}
    assert conv1["rank"].tolist() == [3, 2, 4, 1, 5, 6]  # 1 = highest; ties (zeros) by filter index
    assert df.attrs["criterion"] == "l1" and df.attrs["cached"] is False


def test_the_same_request_is_served_from_the_cache(private_cache, l1_calls):
    model = SmallNet()
    first = score(model, "l1")
    assert len(l1_calls) == 3
    files = sorted(private_cache.iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = score(model, "l1")
    assert len(l1_calls) == 3 and second.attrs["cached"] is True  # not computed again
    assert [f.stat().st_mtime_ns for f in sorted(private_cache.iterdir())] == mtimes
    pd.testing.assert_frame_equal(first, second)  # exact round trip of the floats
    score(model, "l1", cache=False)
    assert len(l1_calls) == 6
    score(model, "l1", ["conv2"])
    assert l1_calls[-1] == "conv2" and len(l1_calls) == 7  # other layers: another request
    with torch.no_grad():
        model.conv3.weight[0, 0, 0, 0] += 1.0
    score(model, "l1")
    assert len(l1_calls) == 10  # other weights: computed again


def test_numeric_layer_names_survive_the_cache():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    first = score(model, "l1")
    second = score(model, "l1")
    assert second.attrs["cached"] and list(second["layer"].unique()) == ["0", "2"]
    pd.testing.assert_frame_equal(first, second)


def test_the_key_covers_parameters_and_the_probe():
    model = SmallNet()
    a = score(model, "random", seed=1)
    assert not score(model, "random", seed=2)["score"].equals(a["score"])
    assert score(model, "random", seed=1).attrs["cached"]
    arrays = random_arrays(8, size=16)
    p1 = Probe.from_arrays(arrays, 8, batch_size=4)
    first = score(model, "hrank", probe=p1)
    assert score(model, "hrank", probe=Probe.from_arrays(arrays, 8, batch_size=4)).attrs["cached"]
    other = score(model, "hrank", probe=Probe.from_arrays(random_arrays(8, size=16, seed=1), 8, batch_size=4))
    assert not other.attrs["cached"] and first.attrs["key"] != other.attrs["key"]


def test_diagnostics_survive_the_cache():
    model = SmallNet()
    x = torch.randn(4, 3, 16, 16)
    probe = [(x, torch.zeros(4, dtype=torch.long))]
    fresh = score(model, "linear_ensembles", probe=probe, samples=5)
    cached = score(model, "linear_ensembles", probe=probe, samples=5)
    assert cached.attrs["cached"] and cached.attrs["info"] == fresh.attrs["info"]
    assert set(cached.attrs["info"]["r2"]) == {"conv1", "conv2", "conv3"}
    assert cached.attrs["params"]["samples"] == 5


def test_a_built_criterion_takes_no_extra_parameters():
    with pytest.raises(ValueError, match="not with a built criterion"):
        score(SmallNet(), get_criterion("l1"), bins=3)


def test_weights_hash_and_probe_keys():
    model = SmallNet()
    h = weights_hash(model)
    assert weights_hash(SmallNet()) == h
    with torch.no_grad():
        model.bn1.running_var[0] += 1e-3
    assert weights_hash(model) != h
    arrays = random_arrays(12)
    assert Probe.from_arrays(arrays, 8, seed=0).key == Probe.from_arrays(arrays, 8, seed=0).key
    assert Probe.from_arrays(arrays, 8, seed=0).key != Probe.from_arrays(arrays, 8, seed=1).key
    batches = [(torch.ones(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))]
    assert Probe(batches).key == Probe([(torch.ones(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))]).key
    assert Probe(batches).key != Probe([(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))]).key
    default = Probe.from_arrays(random_arrays(700))
    assert len(default) == 5 and [len(b.x) for b in default.batches("cpu")] == [128] * 5


def test_cli_criteria_lists_every_criterion(capsys):
    assert main(["criteria"]) == 0
    out = capsys.readouterr().out
    for name in list_criteria():
        assert f"\n{name}  [" in "\n" + out
    assert "--param estimator=pooled" in out and "one of 'gap', 'pooled', 'spatial'" in out


def test_cli_score_writes_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prunekit.criteria.probe, "load_arrays", lambda *a, **k: random_arrays(8))
    ckpt = save_checkpoint(build_model("resnet20"), tmp_path / "r20.safetensors", arch="resnet20", num_classes=10)
    out = tmp_path / "scores.csv"
    argv = ["score", "--model", "resnet20", "--checkpoint", str(ckpt), "--criterion", "sfm_entropy",
            "--param", "bins=8", "--param", "estimator=pooled", "--n", "8", "--batch-size", "4",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["layers"] == 19 and report["cached"] is False
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and len(df) == 16 * 7 + 32 * 6 + 64 * 6
    assert "sfm_entropy" in captured.err  # the progress bar
    assert main(argv) == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"] is True
    boxes = tmp_path / "mapex.csv"
    assert main(["score", "--model", "resnet20", "--checkpoint", str(ckpt), "--criterion", "mapex", "--n", "4",
                 "--device", "cpu", "--out", str(boxes)]) == 0
    assert len(pd.read_csv(boxes)) == len(df)
    assert main(argv[:-2] + ["--param", "bins=1", "--out", str(out)]) == 2
    assert "bins must be an integer in [2, 4096], got 1" in capsys.readouterr().err


def _scores_csv(tmp_path, edit=None, name="scores.csv"):
    """SmallNet's l1 table (conv1: 6 filters, conv2 and conv3: 8) written as a CSV, after ``edit(df)``."""
    df = score(SmallNet(), "l1", cache=False)
    if edit is not None:
        df = edit(df.copy())
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _set(layer, filters, value):
    def edit(df):
        df["score"] = df["score"].astype(object)
        df.loc[(df.layer == layer) & df["filter"].isin(filters), "score"] = value
        return df
    return edit


@pytest.mark.parametrize("value, words", [(float("nan"), "missing or not a finite number"), ("", "missing or not"),
                                          (float("inf"), "not a finite number"), ("high", "not a finite number")])
def test_read_scores_refuses_missing_or_non_finite_scores_naming_file_layer_and_filters(tmp_path, value, words):
    path = _scores_csv(tmp_path, _set("conv2", [3, 5], value))
    with pytest.raises(UserError) as err:
        read_scores(path)
    message = str(err.value)
    assert str(path) in message and "'conv2'" in message and "filters 3, 5" in message and words in message
    assert "conv1" not in message and "score the model again" in message


def test_read_scores_refuses_missing_duplicate_and_unnamed_rows(tmp_path):
    gap = _scores_csv(tmp_path, lambda df: df.drop(df.index[(df.layer == "conv1") & (df["filter"] == 2)]))
    with pytest.raises(UserError, match=r"'conv1' has no row for filter 2 \(it lists 5 filters, numbered 0 to 5\)"):
        read_scores(gap)
    twice = _scores_csv(tmp_path, lambda df: pd.concat([df, df[(df.layer == "conv3") & (df["filter"] == 7)]]))
    with pytest.raises(UserError, match="'conv3' lists filter 7 more than once"):
        read_scores(twice)
    unnamed = _scores_csv(tmp_path, _set_layer(4, float("nan")))
    with pytest.raises(UserError, match=r"scores.csv: line 6 has no layer name"):
        read_scores(unnamed)
    fractional = _scores_csv(tmp_path, lambda df: df.assign(filter=df["filter"] + 0.5))
    with pytest.raises(UserError, match="filter numbers must be whole numbers >= 0"):
        read_scores(fractional)


def _set_layer(row, value):
    def edit(df):
        df["layer"] = df["layer"].astype(object)
        df.loc[row, "layer"] = value
        return df
    return edit


def test_read_scores_checks_the_layers_against_the_model(tmp_path):
    path = _scores_csv(tmp_path)
    scores = read_scores(path, SmallNet())
    assert {k: len(v) for k, v in scores.items()} == {"conv1": 6, "conv2": 8, "conv3": 8}
    other = SmallNet()
    other.conv2 = torch.nn.Conv2d(6, 4, 3, padding=1)  # 4 filters where the file has 8
    with pytest.raises(UserError, match=r"scores.csv: 'conv2' has 8 scores and the model's conv 4 filters"):
        read_scores(path, other)
    renamed = _scores_csv(tmp_path, lambda df: df.assign(layer=df.layer.replace("conv1", "stem")), name="renamed.csv")
    with pytest.raises(UserError, match=r"renamed.csv: 'stem' is not a conv of this model.*scores of another model"):
        read_scores(renamed, SmallNet())
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    score(seq, "l1", cache=False).to_csv(tmp_path / "seq.csv", index=False)
    assert set(read_scores(tmp_path / "seq.csv", seq)) == {"0", "2"}  # numeric layer names stay names


def test_prune_with_a_scores_file_that_has_a_nan_is_refused_before_pruning(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["plan", "--model", "resnet20", "--preset", "uniform", "--ratio", "0.5", "--out", str(plan)]) == 0
    table = score(build_model("resnet20"), "l1", cache=False)
    table.loc[(table.layer == "layer2.0.conv1") & (table["filter"] < 3), "score"] = float("nan")
    table.to_csv(tmp_path / "nan.csv", index=False)
    capsys.readouterr()
    assert main(["prune", "--plan", str(plan), "--scores", str(tmp_path / "nan.csv"), "--n", "0", "--no-latency",
                 "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "nan.csv" in err and "'layer2.0.conv1'" in err and "filters 0, 1, 2" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before a run was made
    half = table[(table.layer != "layer3.0.conv1") | (table["filter"] < 32)].fillna(1.0)  # 32 of its 64 filters
    half.to_csv(tmp_path / "half.csv", index=False)
    assert main(["prune", "--plan", str(plan), "--scores", str(tmp_path / "half.csv"), "--n", "0", "--no-latency",
                 "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "half.csv: 'layer3.0.conv1' has 32 scores and the model's conv 64 filters" in err
    assert not (tmp_path / "runs").exists()


def test_a_model_that_cannot_take_the_probe_falls_back_and_says_to_what(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model = SmallNet().eval()
    unfit = "the model takes 1-channel images, not 3"
    with pytest.raises(UserError, match="1-channel"):
        score_model(model, "sfm_entropy", probe=ProbeSpec("cifar10", 8), unfit=unfit)  # no fallback: refused
    table = score_model(model, "sfm_entropy", probe=ProbeSpec("cifar10", 8), fallback="l2", unfit=unfit)
    assert table.attrs["criterion"] == "l2" and table.attrs["requested"] == "sfm_entropy"
    assert table.attrs["fallback"] == ("sfm_entropy reads cifar10 images, and the model takes 1-channel images, "
                                       "not 3. The filters are ranked by l2 instead.")
    # a data-free criterion is not affected by what the model cannot take
    assert score_model(model, "l1", probe=ProbeSpec("cifar10", 8), fallback="l2", unfit=unfit).attrs["fallback"] is None
