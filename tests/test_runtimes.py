"""Latency in PyTorch eager and ONNX Runtime: the exported model is checked equal before it is timed, and an
export that fails or disagrees records no ONNX Runtime latency, only why."""
import pytest
import torch
import torch.nn as nn

from prunekit.runs.runtime_onnx import ATOL, checked_session, mismatch, onnx_bytes, session_outputs
from prunekit.runs.runtimes import runtime_latencies

SIZE = (3, 8, 8)


def _net(seed: int = 0) -> nn.Module:
    """A small CNN (N, 3, 8, 8) -> (N, 4): conv, BN, ReLU, pooling, linear."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(6, 4))
    net[1].running_mean.uniform_(-1, 1)  # statistics that are not the identity, so a BN folded wrong would show
    net[1].running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.fixture(scope="module")
def net():
    return _net()


def test_onnx_runtime_computes_what_the_module_computes(net):
    session, record = checked_session(net, SIZE)
    assert record["error"] is None and record["max_abs_diff"] < ATOL
    assert record["optimization"] == "ORT_ENABLE_ALL" and record["threads"] == torch.get_num_threads()
    x = torch.randn(5, *SIZE)  # another batch size than the one it was exported with
    with torch.no_grad():
        torch.testing.assert_close(session_outputs(session, x), net(x), atol=1e-5, rtol=1e-5)


def test_both_runtimes_are_timed_at_each_batch_size(net):
    out = runtime_latencies(net, SIZE, batches=(1, 3), repeat=2)
    assert set(out["latency_ms"]) == set(out["latency_ms_onnxruntime"]) == {"1", "3"}
    assert all(v > 0 for d in (out["latency_ms"], out["latency_ms_onnxruntime"]) for v in d.values())
    assert out["onnxruntime"]["error"] is None
    eager = runtime_latencies(net, SIZE, batches=(1,), repeat=1, runtimes=("eager",))
    assert eager["latency_ms_onnxruntime"] == {} and eager["onnxruntime"] is None
    assert runtime_latencies(net, SIZE, batches=(), repeat=1)["onnxruntime"] is None  # no timing: no export


def test_an_onnx_model_that_disagrees_is_not_timed_and_says_why(net, monkeypatch):
    other = _net(seed=1)  # the exporter hands back another network's graph
    monkeypatch.setattr("prunekit.runs.runtime_onnx.onnx_bytes", lambda model, x: onnx_bytes(other, x))
    out = runtime_latencies(net, SIZE, batches=(1,), repeat=1)
    assert out["latency_ms_onnxruntime"] == {} and set(out["latency_ms"]) == {"1"}
    assert "differ from the module's" in out["onnxruntime"]["error"] and out["onnxruntime"]["max_abs_diff"] > ATOL


def test_an_export_that_fails_is_not_timed_and_says_why(net, monkeypatch):
    def broken(model, x):
        raise RuntimeError("unsupported operator aten::weird")

    monkeypatch.setattr("prunekit.runs.runtime_onnx.onnx_bytes", broken)
    out = runtime_latencies(net, SIZE, batches=(1,), repeat=1)
    assert out["latency_ms_onnxruntime"] == {}
    assert out["onnxruntime"]["error"] == ("export to ONNX Runtime failed: RuntimeError: unsupported operator "
                                           "aten::weird")


def test_mismatch_by_hand():
    a = torch.tensor([[1.0, 2.0]])
    assert mismatch(a, a) is None and mismatch(a + 5e-5, a) is None  # within 1e-4 x max(1, 2)
    assert mismatch(a + 1e-3, a) == pytest.approx(1e-3, rel=1e-3)
    assert mismatch(a[:, :1], a) == float("inf") and mismatch(a * float("nan"), a) != mismatch(a, a)
