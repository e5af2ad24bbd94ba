"""Export: every format reloads and computes what the module computes."""
import pytest
import torch

from prunekit.runs.export import export_model, exported_outputs
from prunekit.models.zoo import build_model
from prunekit.pruning.prune import prune_model


def test_a_pruned_model_exports_to_three_formats_with_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    scores = {n: torch.rand(m.out_channels) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    pruned, _ = prune_model(model, {"conv1": 0.5, "layer2.0.conv1": 0.25, "layer3.0.conv2": 0.5}, scores,
                            (3, 32, 32))
    paths = export_model(pruned, tmp_path, arch="resnet20", num_classes=10, input_size=(3, 32, 32))
    assert {p.name for p in paths.values()} == {"model.safetensors", "model.pt", "model.onnx"}
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's example
    with torch.no_grad():
        expected = pruned(x)
    for fmt, path in paths.items():
        assert (exported_outputs(path, fmt, x) - expected).abs().max().item() < 1e-4, fmt


def test_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="formats must be among"):
        export_model(build_model("resnet20"), tmp_path, arch="resnet20", num_classes=10, input_size=(3, 32, 32),
                     formats=["tflite"])
