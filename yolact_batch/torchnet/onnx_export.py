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

from yolact_batch.core.configs import ModelConfig, get_config
from yolact_batch.core.heads import INPUT_NAME, MASK_SCORES, output_names
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.settings import DetectSettings
from yolact_batch.torchnet.checkpoint import config_for_checkpoint, load_checkpoint
from yolact_batch.torchnet.deform_conv import DCN, DEFORM_CONV_OPSET, register_onnx_symbolic
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
    opset: int | None = None,
    deform_conv: str = "onnx",
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
        opset: ONNX opset version; None: 17, or 19 for YOLACT++ (its deformable convs are ONNX
            ``DeformConv`` nodes, which need opset 19, ONNX Runtime >= 1.30, TensorRT >= 10.1).
        deform_conv: YOLACT++ only: ``"onnx"`` writes each deformable conv as one ONNX
            ``DeformConv`` node; ``"decomposed"`` as the equivalent gathers and matmuls in standard
            ops (opset 17; any ONNX Runtime; slower, see ``benchmarks/bench_plus.py``).

    YOLACT++ exports the graph contract only: its mask re-scoring net runs on each detection's
    cropped prototype-resolution mask, which the raw contract's heads do not carry.
    """
    import onnx  # optional dependency (the "export" extra)

    if isinstance(config, str):  # a named config's settings are checked before the checkpoint is read
        _check_settings(get_config(config), contract, detect, deform_conv, opset)
    elif config is None and contract not in ("graph", "raw"):
        raise ValueError(f"contract must be 'raw' or 'graph', got {contract!r}")
    if not isinstance(config, ModelConfig):
        config = config_for_checkpoint(checkpoint_path, config_name=config).config
    opset = _check_settings(config, contract, detect, deform_conv, opset)
    checkpoint_path = Path(checkpoint_path)
    output_path = Path(output_path)
    if contract == "raw":
        score_threshold, crop_masks = 0.0, True
    names = output_names(contract, config.mask_rescoring)
    network = load_checkpoint(checkpoint_path, config)
    for layer in network.modules():
        if isinstance(layer, DCN):
            layer.decompose = deform_conv == "decomposed"
    if contract == "graph":
        head = GraphHead(
            config, detect, score_threshold=score_threshold, crop=crop_masks, maskiou_net=network.maskiou_net
        )
        module = YolactGraph(network, head).eval()
    else:
        module = network
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
        register_onnx_symbolic()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(
                module,
                (dummy,),
                str(partial),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(names),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *names)},
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


def _check_settings(
    config: ModelConfig, contract: str, detect: DetectSettings, deform_conv: str, opset: int | None
) -> int:
    """Refuse export settings ``config`` cannot have; return the opset to export with."""
    if contract == "graph":
        GraphHead.check_settings(detect)
    elif contract == "raw":
        if config.mask_rescoring:
            raise ValueError(
                f"config {config.name!r} is YOLACT++: its mask re-scoring net runs on each detection's cropped "
                "mask inside the model, which the raw contract cannot carry; export the graph contract "
                "(--contract graph, the default) instead"
            )
    else:
        raise ValueError(f"contract must be 'raw' or 'graph', got {contract!r}")
    if deform_conv not in ("onnx", "decomposed"):
        raise ValueError(f"deform_conv must be 'onnx' or 'decomposed', got {deform_conv!r}")
    return _opset(config, opset, decomposed=deform_conv == "decomposed")


def _opset(config: ModelConfig, opset: int | None, *, decomposed: bool) -> int:
    """The opset to export with: 17 by default, at least 19 (``DeformConv``) for deformable convs."""
    if not any(config.dcn_layers) or decomposed:
        return 17 if opset is None else opset
    if opset is not None and opset < DEFORM_CONV_OPSET:
        raise ValueError(
            f"config {config.name!r} has deformable convs, exported as ONNX DeformConv, which needs opset "
            f">= {DEFORM_CONV_OPSET}; got opset {opset}"
        )
    return DEFORM_CONV_OPSET if opset is None else opset


def _output_shapes(config: ModelConfig, contract: str, detect: DetectSettings) -> dict[str, tuple]:
    """Output shapes with every axis but the batch one static (the tracer leaves some symbolic)."""
    side, m = config.proto_size, config.num_prototypes
    if contract == "raw":
        p = config.priors.num_priors
        return {"loc": (p, 4), "conf": (p, config.num_classes), "mask": (p, m), "proto": (side, side, m)}
    k = detect.max_detections
    shapes = {"boxes": (k, 4), "scores": (k,), "classes": (k,), "masks": (k, side, side), "num_detections": ()}
    if config.mask_rescoring:
        shapes[MASK_SCORES] = (k,)
    return shapes


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
