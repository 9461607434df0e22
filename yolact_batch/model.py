"""The single-machine Python API: load a model from a path or URL, call it on images.

    model = YolactModel("model.onnx")                  # reference evaluation settings
    model = YolactModel("s3://bucket/m.onnx", score_threshold=0.3)   # pre-labeling preset
    predictions = model([cv2.imread("a.jpg"), open("b.jpg", "rb").read()])
    predictions[0].to_supervision()
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Sequence

import numpy as np

from yolact_batch.configs import ModelConfig
from yolact_batch.detections import Detections
from yolact_batch.metadata import ModelMetadata, load_sidecar
from yolact_batch.postprocess import Postprocessor
from yolact_batch.preprocess import DEFAULT_MAX_PIXELS, decode_image, preprocess, to_bgr
from yolact_batch.schema import ModelRef
from yolact_batch.settings import InferenceSettings, OutputSettings
from yolact_batch.storage import StorageOptions, read_bytes

# Detect settings a graph-contract model has baked in: they cannot change after export.
_BAKED = ("conf_threshold", "iou_threshold", "top_k", "cross_class", "method")


def resolve_classes(classes: Sequence[str | int] | None, config: ModelConfig) -> tuple[int, ...] | None:
    """Class filter given as names, COCO category ids (ints) -> foreground class indices."""
    if classes is None:
        return None
    resolved = []
    for c in classes:
        if isinstance(c, str) and not c.isdigit():
            if c not in config.class_names:
                raise ValueError(f"unknown class name {c!r}; the model's classes are {list(config.class_names)}")
            resolved.append(config.class_names.index(c))
        else:
            if int(c) not in config.category_ids:
                raise ValueError(f"unknown category id {c}; the model's category ids are {list(config.category_ids)}")
            resolved.append(config.category_ids.index(int(c)))
    return tuple(sorted(set(resolved)))


def resolve_settings(metadata: ModelMetadata, *, detect: dict, output: OutputSettings) -> InferenceSettings:
    """Combine the model's defaults with explicit overrides, refusing what the model can't do.

    ``detect`` holds only the DetectSettings fields the caller set. A ``graph`` model ran
    NMS inside the network, so its NMS settings are fixed; it can only be asked for fewer
    detections or a higher score threshold.
    """
    base = metadata.detect
    if metadata.contract == "graph":
        changed = [k for k in _BAKED if k in detect and detect[k] != getattr(base, k)]
        if changed:
            baked = {k: getattr(base, k) for k in changed}
            raise ValueError(
                f"this graph-contract model has NMS settings {baked} built in; to use other values "
                "re-export it with those settings (yolact-batch export ...) or export with --contract raw"
            )
        if detect.get("max_detections", base.max_detections) > base.max_detections:
            raise ValueError(f"this graph-contract model returns at most {base.max_detections} detections per image")
        if output.score_threshold < metadata.score_threshold:
            raise ValueError(
                f"this graph-contract model drops scores <= {metadata.score_threshold}; "
                f"score_threshold {output.score_threshold} cannot bring them back"
            )
    return InferenceSettings(replace(base, **detect), output)


class YolactModel:
    """A YOLACT model ready to run on one machine.

    Args:
        model: path or fsspec URL of an exported ONNX model.
        providers: ONNX Runtime execution providers by short name, in priority order
            (``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        sidecar: path or URL of a JSON/TOML description for an ONNX without our metadata.
        storage: object-storage options for ``model`` and ``sidecar`` URLs.
        batch_size: images per network call.
        intra_op_threads: ONNX Runtime threads (None: its default, all cores).
        score_threshold: keep detections scoring strictly above this (reference: 0;
            pre-labeling: 0.3).
        classes: keep only these classes (names or category ids); None keeps all.
        mask_threshold: mask pixel on when strictly above this (reference: 0.5).
        max_detections: detections per image (reference: 100).
        top_k: candidates per class entering NMS (reference: 200; raw models only).
        conf_threshold: minimum best-class confidence of a prior (reference: 0.05; raw only).
        iou_threshold: NMS IoU threshold (reference: 0.5; raw only).
        cross_class_nms: NMS across classes (reference: False; raw only).
        nms: ``"fast"`` (reference) or ``"greedy"`` (raw only).
        max_pixels: refuse images with more pixels than this (decompression bombs).
    """

    def __init__(
        self,
        model: str,
        *,
        providers: Sequence[str] = ("cpu",),
        sidecar: str | None = None,
        storage: StorageOptions = StorageOptions(),
        batch_size: int = 8,
        intra_op_threads: int | None = None,
        score_threshold: float = 0.0,
        classes: Sequence[str | int] | None = None,
        mask_threshold: float = 0.5,
        max_detections: int | None = None,
        top_k: int | None = None,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
        cross_class_nms: bool | None = None,
        nms: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        from yolact_batch.backends.onnxruntime import OnnxRuntimeBackend

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        blob = read_bytes(model, storage)
        side = load_sidecar(read_bytes(sidecar, storage).decode(), origin=sidecar) if sidecar else None
        self.backend = OnnxRuntimeBackend(
            blob, origin=model, providers=providers, metadata=side, intra_op_threads=intra_op_threads
        )
        self.metadata: ModelMetadata = self.backend.metadata
        self.config: ModelConfig = self.metadata.config
        self.ref = ModelRef(name=self.config.name, digest="sha256:" + hashlib.sha256(blob).hexdigest())
        overrides = {
            "max_detections": max_detections, "top_k": top_k, "conf_threshold": conf_threshold,
            "iou_threshold": iou_threshold, "cross_class": cross_class_nms, "method": nms,
        }
        output = OutputSettings(
            score_threshold=score_threshold,
            classes=resolve_classes(classes, self.config),
            mask_threshold=mask_threshold,
            crop_masks=self.metadata.crop_masks,
        )
        self.settings = resolve_settings(
            self.metadata, detect={k: v for k, v in overrides.items() if v is not None}, output=output
        )
        self.postprocessor = Postprocessor(self.config, self.metadata.contract, self.settings)
        self.batch_size = batch_size
        self.max_pixels = max_pixels

    def load_image(self, image: np.ndarray | bytes) -> np.ndarray:
        """Bytes (any format OpenCV reads) or an array (BGR, gray or BGRA) -> BGR uint8."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), max_pixels=self.max_pixels)
        return to_bgr(np.asarray(image))

    def __call__(self, images: Sequence[np.ndarray | bytes]) -> list[Detections]:
        """Detections for each image, in order. Arrays are BGR (as ``cv2.imread`` gives)."""
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            bgr = [self.load_image(im) for im in images[start : start + self.batch_size]]
            batch = np.stack([preprocess(im, self.config) for im in bgr])
            heads = self.backend(batch)
            results.extend(self.postprocessor(heads, [im.shape[:2] for im in bgr]))
        return results
