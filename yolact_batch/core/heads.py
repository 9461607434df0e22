"""The typed contract between backends and post-processing.

A backend returns one of two values for a batch of ``B`` images:

* ``RawHeads``: the network's heads, as the reference's ``Yolact.forward`` produces them
  before ``Detect`` (box regressions, softmaxed confidences, tanh'd coefficients,
  ReLU'd NHWC prototypes). Post-processing runs box decode and NMS on the host.
* ``GraphHeads``: what our ``graph`` ONNX contract computes on the device (decode,
  Fast NMS, mask assembly and crop included): fixed-size detections, the first
  ``num_detections[b]`` of each row valid and sorted by descending score.

``PackedDetections`` is one image of ``GraphHeads`` reduced to what post-processing reads
(the kept detections, each mask only inside its crop window): the form that travels from
the model stage to the CPU stages of the job.

Both validate their shapes once, at construction, with messages naming expected and
actual shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RAW_OUTPUTS = ("loc", "conf", "mask", "proto")
GRAPH_OUTPUTS = ("boxes", "scores", "classes", "masks", "num_detections")
MASK_SCORES = "mask_scores"  # the extra graph output of a model with mask re-scoring (YOLACT++)
INPUT_NAME = "images"


def output_names(contract: str, mask_rescoring: bool = False) -> tuple[str, ...]:
    """The outputs a model of ``contract`` has, in order; YOLACT++ graph models add ``mask_scores``."""
    if contract == "raw":
        return RAW_OUTPUTS
    return (*GRAPH_OUTPUTS, MASK_SCORES) if mask_rescoring else GRAPH_OUTPUTS


def _check(name: str, array: np.ndarray, expected: tuple) -> None:
    """Raise ValueError unless ``array.shape`` matches ``expected`` (None = any)."""
    ok = array.ndim == len(expected) and all(e is None or e == a for e, a in zip(expected, array.shape))
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {shown}, got {tuple(array.shape)}")


@dataclass(frozen=True)
class RawHeads:
    """Raw YOLACT heads for a batch.

    Attributes:
        loc: ``float32[B, P, 4]`` box regressions relative to the priors.
        conf: ``float32[B, P, C]`` class probabilities after softmax (class 0 = background).
        mask: ``float32[B, P, M]`` mask coefficients after tanh.
        proto: ``float32[B, Hp, Wp, M]`` prototypes after ReLU, channels last.
    """

    loc: np.ndarray
    conf: np.ndarray
    mask: np.ndarray
    proto: np.ndarray

    def __post_init__(self) -> None:
        b, p = self.loc.shape[:2] if self.loc.ndim == 3 else (None, None)
        _check("loc", self.loc, (b, p, 4))
        _check("conf", self.conf, (b, p, None))
        _check("mask", self.mask, (b, p, None))
        _check("proto", self.proto, (b, None, None, self.mask.shape[2]))

    def __len__(self) -> int:
        return self.loc.shape[0]


@dataclass(frozen=True)
class GraphHeads:
    """Detections computed inside the ``graph`` contract model, for a batch.

    Attributes:
        boxes: ``float32[B, K, 4]`` boxes ``(x1, y1, x2, y2)`` relative to the image
            (0..1, not clamped), as decoded from the priors.
        scores: ``float32[B, K]`` class scores, descending within the valid prefix.
        classes: ``int64[B, K]`` foreground class index (0-based).
        masks: ``float32[B, K, Hp, Wp]`` sigmoid masks at prototype resolution, already
            cropped to their boxes when the model was exported with cropping.
        num_detections: ``int64[B]`` how many leading entries of each row are valid.
        mask_scores: ``float32[B, K]`` YOLACT++ only: ``scores * predicted mask IoU`` (the
            re-scored mask score, the reference's segm score), in the same (box score) order;
            None for models without mask re-scoring.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    num_detections: np.ndarray
    mask_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        b, k = self.scores.shape if self.scores.ndim == 2 else (None, None)
        _check("scores", self.scores, (b, k))
        _check("boxes", self.boxes, (b, k, 4))
        _check("classes", self.classes, (b, k))
        _check("masks", self.masks, (b, k, None, None))
        _check("num_detections", self.num_detections, (b,))
        if self.mask_scores is not None:
            _check("mask_scores", self.mask_scores, (b, k))
        if np.any(self.num_detections < 0) or np.any(self.num_detections > k):
            raise ValueError(f"num_detections must be within [0, {k}], got {self.num_detections.tolist()}")

    def __len__(self) -> int:
        return self.scores.shape[0]


@dataclass(frozen=True)
class PackedDetections:
    """One image's graph-contract detections, reduced to what post-processing reads.

    A dense ``[K, Hp, Wp]`` mask stack is 7.6 MB per image at K=100 and 138x138, mostly
    zeros outside the crop windows; packed, only the kept detections and each mask's
    values inside its window remain.

    Attributes:
        boxes: ``float32[D, 4]`` boxes ``(x1, y1, x2, y2)`` relative to the image.
        scores: ``float32[D]`` scores, descending.
        classes: ``int64[D]`` foreground class index (0-based).
        mask_values: ``float32[N]`` each detection's mask inside its window (row-major),
            concatenated in detection order; the windows follow from ``boxes``
            (``postprocess.mask_windows``).
        proto_size: ``(Hp, Wp)``, the prototype resolution the windows refer to.
        mask_scores: ``float32[D]`` re-scored mask scores (YOLACT++), or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    mask_values: np.ndarray
    proto_size: tuple[int, int]
    mask_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        d = self.scores.shape[0] if self.scores.ndim == 1 else None
        _check("scores", self.scores, (d,))
        _check("boxes", self.boxes, (d, 4))
        _check("classes", self.classes, (d,))
        _check("mask_values", self.mask_values, (None,))
        if self.mask_scores is not None:
            _check("mask_scores", self.mask_scores, (d,))

    def __len__(self) -> int:
        return self.scores.shape[0]
