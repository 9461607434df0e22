"""The configuration of the shipped shapes model (``yolact_batch/models/yolact_shapes.onnx``).

The official layout shrunk to train on a CPU: a 256 px input, a four-stage BasicBlock ResNet
(``resnet_tiny``: 32..256 channels), 64-channel FPN / ProtoNet / head, 16 prototypes; P3..P7
with the yolact_base square priors rescaled to 256 px, and the ResNet mean/std normalisation.
"""

from __future__ import annotations

from yolact_batch.core.configs import ModelConfig, scaled_priors
from yolact_batch.core.synthetic import SHAPE_CLASSES

SHAPES_INPUT_SIZE = 256

SHAPES_CONFIG = ModelConfig(
    name="yolact_shapes",
    backbone="resnet_tiny",
    priors=scaled_priors(SHAPES_INPUT_SIZE),
    class_names=SHAPE_CLASSES,
    num_prototypes=16,
    fpn_channels=64,
)
