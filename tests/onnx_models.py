"""Small real ONNX models for tests: constant heads, tiled over the input batch.

ONNX Runtime runs them for real (sessions, metadata, shapes, errors), in milliseconds,
which lets the model API and the CLI be tested without a slow network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolact_batch.core.heads import INPUT_NAME, RAW_OUTPUTS
from yolact_batch.core.metadata import ModelMetadata


def constant_heads_model(
    path: Path,
    heads: dict[str, np.ndarray],
    metadata: ModelMetadata | None,
    input_size: int = 550,
    names: tuple[str, ...] = RAW_OUTPUTS,
) -> Path:
    """Write an ONNX model mapping ``images [B,3,S,S]`` to ``heads`` (each ``[1, ...]``) tiled B times."""
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    outputs = []
    for name in names:
        value = heads[name]
        initializers.append(numpy_helper.from_array(value, f"{name}_const"))
        ones = np.ones(value.ndim - 1, np.int64)
        initializers.append(numpy_helper.from_array(ones, f"{name}_ones"))
        nodes.append(helper.make_node("Concat", ["batch", f"{name}_ones"], [f"{name}_reps"], axis=0))
        nodes.append(helper.make_node("Tile", [f"{name}_const", f"{name}_reps"], [name]))
        dtype = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
        outputs.append(helper.make_tensor_value_info(name, dtype, ["B", *value.shape[1:]]))
    graph = helper.make_graph(
        nodes,
        "constant_heads",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["B", 3, input_size, input_size])],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        helper.set_model_props(model, metadata.to_onnx_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
