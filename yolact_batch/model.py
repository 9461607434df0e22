"""The single-machine Python API: load a model from a path or URL, call it on images.

model = YolactModel("model.onnx")                  # reference evaluation settings
model = YolactModel("s3://bucket/m.onnx", score_threshold=0.3)   # pre-labeling preset
predictions = model([cv2.imread("a.jpg"), open("b.jpg", "rb").read()])
predictions[0].to_supervision()
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from yolact_batch.backends.factory import BackendOptions, open_backend
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.detections import Detections
from yolact_batch.core.metadata import ModelMetadata, load_sidecar
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.core.preprocess import decode_image, preprocess, to_bgr
from yolact_batch.core.settings import InferenceRequest
from yolact_batch.io.schema import ModelRef
from yolact_batch.io.storage import StorageOptions, model_digest, read_bytes


class YolactModel:
    """A YOLACT model ready to run on one machine.

    Args:
        model: path or fsspec URL of an exported model.
        request: the detection settings (``InferenceRequest``; its fields' docs list them).
            The defaults reproduce the reference evaluation.
        backend: how to run it (runtime, providers, threads, images per network call);
            see ``BackendOptions``.
        sidecar: path or URL of a JSON/TOML description for an ONNX without our metadata.
        storage: object-storage options for ``model`` and ``sidecar`` URLs.
        **settings: ``InferenceRequest`` fields, a shortcut for ``request``
            (``YolactModel("m.onnx", score_threshold=0.3)``).
    """

    def __init__(
        self,
        model: str,
        *,
        request: InferenceRequest | None = None,
        backend: BackendOptions = BackendOptions(),
        sidecar: str | None = None,
        storage: StorageOptions = StorageOptions(),
        **settings,
    ) -> None:
        if request is not None and settings:
            raise TypeError(f"pass either request= or setting keywords, not both (got {sorted(settings)})")
        self.request = request if request is not None else InferenceRequest(**settings)
        blob = read_bytes(model, storage)
        side = load_sidecar(read_bytes(sidecar, storage).decode(), origin=sidecar) if sidecar else None
        self.backend = open_backend(
            blob, origin=model, options=backend, metadata=side, storage=storage, request=self.request
        )
        self.metadata: ModelMetadata = self.backend.metadata
        self.config: ModelConfig = self.metadata.config
        self.ref = ModelRef(name=self.config.name, digest=model_digest(blob))
        self.settings = self.metadata.resolve(self.request)
        self.postprocessor = Postprocessor(self.config, self.metadata.contract, self.settings)
        self.batch_size = backend.batch_size
        self.max_pixels = self.request.max_pixels

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
