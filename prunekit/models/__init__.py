"""Models: the registry of names and the model sources (registered, torchvision, timm, factory), whether a model
fits a data set (input size, head), safe checkpoints, prunable-layer discovery, DO-Conv and measurements
(accuracy, MACs, latency).

>>> model = build_model("resnet20", num_classes=10)     # input (N, 3, 32, 32) -> logits (N, 10)
>>> conv_layers(model)[0].name                          # 'conv1'
"""
from prunekit.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from prunekit.models.fits import check_model_data
from prunekit.models.heads import replace_head
from prunekit.models.layers import ConvLayer, conv_layers
from prunekit.models.metrics import best_device, count_macs, evaluate
from prunekit.models.source_factory import enable_factory
from prunekit.models.sources import model_catalog
from prunekit.models.zoo import (
                                 BuiltModel,
                                 ModelInfo,
                                 build_model,
                                 count_params,
                                 create_model,
                                 list_models,
                                 model_info,
                                 register_model,
)

__all__ = ["BuiltModel", "CheckpointError", "ConvLayer", "ModelInfo", "best_device", "build_model", "check_model_data",
           "conv_layers", "count_macs", "count_params", "create_model", "enable_factory", "evaluate", "list_models",
           "load_checkpoint", "model_catalog", "model_info", "register_model", "replace_head", "save_checkpoint"]
