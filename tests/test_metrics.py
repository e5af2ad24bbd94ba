import pytest
import torch
import torch.nn as nn

from prunekit.data import ArraySet
from prunekit.models.metrics import best_device, count_macs, evaluate, held_out_accuracy, layer_table
from prunekit.models.zoo import build_model


def test_macs_of_a_hand_sized_network():
    """conv 3->8 3x3 on 8x8 (pad 1): 8*8 positions * 8 filters * 27 = 13824; linear 8->2 after pooling: 16."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    assert count_macs(model, (3, 8, 8)) == 13824 + 16
    table = layer_table(model, (3, 8, 8))
    assert table["macs"].tolist() == [13824, 16]
    assert table["params"].tolist() == [216, 18]
    assert table["output"].tolist() == ["8x8x8", "2"]


def test_vgg16_macs_match_methods_md():
    """methods.md: 313.5M multiply-adds in the conv and linear layers of the CIFAR VGG-16-BN."""
    assert round(count_macs(build_model("vgg16_bn"), (3, 32, 32)) / 1e6, 1) == 313.5


def test_layer_table_covers_every_conv_and_linear_in_forward_order():
    table = layer_table(build_model("resnet20"), (3, 32, 32))
    assert len(table) == 20 and table["layer"].iloc[0] == "conv1" and table["layer"].iloc[-1] == "fc"
    assert table.loc[table.layer == "conv1", "macs"].item() == 3 * 16 * 9 * 32 * 32
    assert table.loc[table.layer == "layer3.0.conv1", "output"].item() == "64x8x8"


def test_evaluate_counts_correct_predictions():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    result = evaluate(model, [(x[:2], y[:2]), (x[2:], y[2:])])
    assert result["accuracy"] == 75.0 and result["n"] == 4
    assert model.training  # restored


def test_best_device_is_a_real_device():
    assert best_device().type in ("cuda", "mps", "cpu")


def test_held_out_accuracy_is_the_hand_computed_accuracy_and_loss():
    # 7 images: channel c is filled with images[i, c]; the model's logits are the normalised channel means of
    # channels 0 and 1, so it predicts class 0 when channel 0 is brighter
    values = torch.tensor([[200, 10, 0], [10, 200, 0], [90, 80, 0], [80, 90, 0], [255, 0, 0], [0, 255, 0],
                           [128, 127, 0]], dtype=torch.uint8)
    images = values[:, :, None, None].expand(7, 3, 32, 32).contiguous()
    labels = torch.tensor([0, 1, 1, 1, 0, 0, 0])  # predictions 0 1 0 1 0 1 0: 5 of 7 right
    data = ArraySet("hand", images, labels, ["a", "b"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    linear = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
    result = held_out_accuracy(model, data, batch_size=3)  # batches of 3, 3 and 1
    logits = (values[:, :2].float() / 255 - 0.5) / 0.25
    loss = nn.functional.cross_entropy(logits, labels).item()
    assert result["n"] == 7 and result["accuracy"] == pytest.approx(100 * 5 / 7)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
