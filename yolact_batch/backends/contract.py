"""The one check of an exported model against the head contract, shared by every backend."""

from __future__ import annotations

from typing import NamedTuple, Sequence

from yolact_batch.core.heads import INPUT_NAME, output_names
from yolact_batch.core.metadata import ModelMetadata


def unloadable(origin: str, exc: BaseException) -> ValueError:
    """The error for model bytes a runtime cannot parse (runtimes raise their own untyped errors)."""
    return ValueError(
        f"{origin}: not a loadable ONNX model ({type(exc).__name__}: {str(exc).strip()[:300]}). "
        "Is the file complete? Re-download or re-export it with `yolact-batch export`."
    )


def check_model_io(
    embedded: ModelMetadata | None,
    sidecar: ModelMetadata | None,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    origin: str,
) -> ModelMetadata:
    """The metadata to run a model with (the file's own, else the sidecar's), with its I/O checked.

    Args:
        embedded: metadata read from the model file, or None when it has none.
        sidecar: metadata given beside the file (used only when the file has none).
        inputs: the model's input names (initializers excluded).
        outputs: the model's output names.
        origin: where the model came from, named in every error.

    Raises:
        ValueError: no metadata at all, or inputs/outputs that do not match the contract.
    """
    metadata = embedded or sidecar
    if metadata is None:
        raise ValueError(
            f"{origin}: the model has no yolact_batch metadata. Pass a sidecar file describing it, "
            'e.g. {"config": "yolact_base", "contract": "raw"} (JSON or TOML).'
        )
    expected = output_names(metadata.contract, metadata.config.mask_rescoring)
    if sorted(outputs) != sorted(expected) or len(inputs) != 1:
        raise ValueError(
            f"{origin}: outputs {list(outputs)} / inputs {list(inputs)} do not match the {metadata.contract!r} "
            f"contract (expected outputs {list(expected)} and one input)"
        )
    if metadata.graph and inputs[0] != INPUT_NAME:
        raise ValueError(f"{origin}: graph-contract models take input {INPUT_NAME!r}, found {inputs[0]!r}")
    return metadata


class OnnxFacts(NamedTuple):
    """What the backend needs to know about an ONNX before building from it."""

    metadata: ModelMetadata
    input_name: str
    has_fp16: bool


def inspect_onnx(model: bytes, *, origin: str, metadata: ModelMetadata | None = None) -> OnnxFacts:
    """Metadata (the file's, else ``metadata``), input name and FP16 use of an ONNX, validated.

    Raises ValueError, naming ``origin``, for unparsable bytes, missing metadata, or I/O that
    does not match the contract (the same rules as the ONNX Runtime backend).
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            f"reading a model for TensorRT needs the 'onnx' package ({exc}): pip install onnx "
            "(the 'tensorrt' extra has it)"
        ) from exc
    try:
        proto = onnx.load_model_from_string(model)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise unloadable(origin, exc) from None
    props = {p.key: p.value for p in proto.metadata_props}
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    found = check_model_io(
        ModelMetadata.from_onnx_props(props, origin=origin), metadata,
        inputs=inputs, outputs=[o.name for o in proto.graph.output], origin=origin,
    )  # fmt: skip
    has_fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    return OnnxFacts(found, inputs[0], has_fp16)
