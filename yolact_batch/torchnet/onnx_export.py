"""Export a YOLACT checkpoint to ONNX, in the ``raw`` or the ``graph`` contract.

The model takes ``images`` (``float32[B, 3, S, S]``, normalised; ``B`` dynamic) and returns the
outputs named in ``yolact_batch.core.heads`` (``RAW_OUTPUTS`` or ``GRAPH_OUTPUTS``). Our
``ModelMetadata`` goes into ``metadata_props`` so runtimes need no sidecar file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.heads import GRAPH_OUTPUTS, INPUT_NAME, RAW_OUTPUTS
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import DetectSettings
from yolact_batch.torchnet.checkpoint import config_for_checkpoint, load_checkpoint
from yolact_batch.torchnet.graph import GraphHead, YolactGraph


def export_onnx(
    checkpoint_path: str | Path,
    config: str | ModelConfig | None,
    output_path: str | Path,
    *,
    contract: str = "graph",
    detect: DetectSettings = DetectSettings(),
    score_threshold: float = 0.0,
    crop_masks: bool = True,
    opset: int = 17,
) -> Path:
    """Write the ONNX model for ``checkpoint_path`` to ``output_path`` and return that path.

    Args:
        checkpoint_path: official-layout ``.pth`` state dict.
        config: a ``ModelConfig`` (used as it is), an official config name (``yolact_base``...:
            checked against the weights) or None (the config the weights determine, official
            defaults for the rest; see ``config_from_weights``).
        output_path: where to write the ``.onnx`` file (replaced atomically).
        contract: ``"raw"`` (loc, conf, mask, proto out) or ``"graph"`` (detections out).
        detect: NMS settings baked into a ``graph`` model (``method`` must be ``"fast"``);
            recorded as the host defaults for a ``raw`` model.
        score_threshold: ``graph`` only: valid detections score strictly above this.
        crop_masks: ``graph`` only: zero each mask outside its box.
        opset: ONNX opset version (17 is the tested one).
    """
    import onnx  # optional dependency (the "export" extra)

    if contract not in ("graph", "raw"):
        raise ValueError(f"contract must be 'raw' or 'graph', got {contract!r}")
    if not isinstance(config, ModelConfig):
        config = config_for_checkpoint(checkpoint_path, config_name=config).config
    checkpoint_path = Path(checkpoint_path)
    output_path = Path(output_path)
    if contract == "graph":
        head = GraphHead(config, detect, score_threshold=score_threshold, crop=crop_masks)  # validates settings
        output_names = GRAPH_OUTPUTS
    else:
        score_threshold, crop_masks = 0.0, True
        output_names = RAW_OUTPUTS

    network = load_checkpoint(checkpoint_path, config)
    module = YolactGraph(network, head).eval() if contract == "graph" else network
    metadata = ModelMetadata(
        config=config,
        contract=contract,
        detect=detect,
        score_threshold=score_threshold,
        crop_masks=crop_masks,
        source=f"{checkpoint_path.name} sha256:{_sha256(checkpoint_path)[:16]}",
    )

    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(output_path.name + ".partial")
    dummy = torch.zeros(1, 3, config.input_size, config.input_size)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(
                module,
                (dummy,),
                str(partial),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *output_names)},
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(str(partial))
        for key, value in metadata.to_onnx_props().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "yolact_batch"
        _declare_output_shapes(model, _output_shapes(config, contract, detect))
        onnx.checker.check_model(model)
        onnx.save(model, str(partial))
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return output_path


def _output_shapes(config: ModelConfig, contract: str, detect: DetectSettings) -> dict[str, tuple]:
    """Output shapes with every axis but the batch one static (the tracer leaves some symbolic)."""
    side, m = config.proto_size, config.num_prototypes
    if contract == "raw":
        p = config.priors.num_priors
        return {"loc": (p, 4), "conf": (p, config.num_classes), "mask": (p, m), "proto": (side, side, m)}
    k = detect.max_detections
    return {"boxes": (k, 4), "scores": (k,), "classes": (k,), "masks": (k, side, side), "num_detections": ()}


def _declare_output_shapes(model, shapes: dict[str, tuple]) -> None:
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        dims.add().dim_param = "batch"
        for size in shapes[output.name]:
            dims.add().dim_value = size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
