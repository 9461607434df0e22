"""Test models for the job: the golden constant-head model, optionally made slow on purpose.

A slow model lets fault tests act "mid-job" without sleeping in production code: a real
convolution over the input costs real CPU time in ONNX Runtime, and the outputs are still
exactly the golden constant heads (the convolution enters them multiplied by zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.onnx_models import constant_heads_model
from yolact_batch.core.heads import INPUT_NAME
from yolact_batch.core.metadata import ModelMetadata


def slow_heads_model(path: Path, heads: dict[str, np.ndarray], metadata: ModelMetadata, channels: int = 16) -> Path:
    """``constant_heads_model`` plus a ``channels``-wide 7x7 convolution over the input that
    adds ``0 * mean(conv)`` to ``loc``: same outputs, about ``channels`` x 7 MMAC per image."""
    constant_heads_model(path, heads, metadata)
    model = onnx.load(str(path))
    graph = model.graph
    loc = next(o for o in graph.output if o.name == "loc")
    producer = next(n for n in graph.node if "loc" in n.output)
    producer.output[0] = "loc_const_tiled"
    rng = np.random.default_rng(0)
    graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((channels, 3, 7, 7)).astype(np.float32), "slow_w"),
            numpy_helper.from_array(np.array(0.0, np.float32), "slow_zero"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Conv", [INPUT_NAME, "slow_w"], ["slow_conv"], pads=[3, 3, 3, 3]),
            helper.make_node("ReduceMean", ["slow_conv"], ["slow_mean"], keepdims=0),
            helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
            helper.make_node("Add", ["loc_const_tiled", "slow_nothing"], [loc.name]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
