"""From heads to ``Detections``: box decode, NMS, masks, integer boxes, RLE.

Two entry points, one per head contract, share the final stage:

* ``postprocess_raw``: reference ``Detect`` (decode + NMS) then ``postprocess`` on the host.
* ``postprocess_graph``: the model already ran decode, NMS and mask assembly; only the
  upsample, threshold and RLE remain (``OutputSettings`` may still tighten the results).
  It is ``pack_graph_heads`` (keep what the settings keep, each mask inside its crop
  window only) then ``postprocess_packed``; the job runs the two halves in different
  stages so that only packed detections cross the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import numpy as np

from yolact_batch.core import nms as nms_ops
from yolact_batch.core.boxes import boxes_to_pixels, decode_boxes
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.detections import Detections
from yolact_batch.core.heads import GraphHeads, PackedDetections, RawHeads
from yolact_batch.core.mask_rle import encode_run_lengths, run_lengths
from yolact_batch.core.masks import crop_windows, full_windows
from yolact_batch.core.priors import make_priors
from yolact_batch.core.settings import DetectSettings, InferenceSettings, OutputSettings

ImageSize = tuple[int, int]  # (height, width)


def detect(
    loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, settings: DetectSettings = DetectSettings()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference's ``Detect`` for one image.

    Args:
        loc: ``float32[P, 4]`` box regressions.
        conf: ``float32[P, C]`` softmax confidences, class 0 = background.
        priors: ``float32[P, 4]`` priors ``(cx, cy, w, h)``.

    Returns:
        ``(boxes, classes, scores, prior_index)``: relative ``float32[D, 4]`` boxes in
        ``(x1, y1, x2, y2)``, ``int64[D]`` foreground classes, ``float32[D]`` scores
        (descending) and ``int64[D]`` the prior each detection came from.
    """
    foreground = conf[:, 1:]
    best = foreground.max(axis=1, initial=-np.inf)
    candidates = np.flatnonzero(best > settings.conf_threshold)

    # NMS reads a few hundred of the thousands of candidates: decode and gather only those
    # (elementwise, so the same bits as decoding all of them).
    def boxes_of(i: np.ndarray) -> np.ndarray:
        return decode_boxes(loc[candidates[i]], priors[candidates[i]])

    def scores_of(i: np.ndarray) -> np.ndarray:
        return foreground[candidates[i]].T

    common = dict(
        iou_threshold=settings.iou_threshold,
        max_detections=settings.max_detections,
        cross_class=settings.cross_class_nms,
    )
    if settings.nms == "greedy":
        nms = partial(nms_ops.greedy_nms_on_demand, score_threshold=settings.conf_threshold, **common)
    else:
        nms = partial(nms_ops.fast_nms_on_demand, top_k=settings.top_k, **common)
    idx, classes, kept_scores = nms(boxes_of, scores_of, best[candidates])
    return boxes_of(idx), classes, kept_scores, candidates[idx]


def _select(scores: np.ndarray, classes: np.ndarray, output: OutputSettings) -> np.ndarray:
    keep = scores > np.float32(output.score_threshold)
    if output.classes is not None:
        keep &= np.isin(classes, output.classes)
    return np.flatnonzero(keep)


def _finish(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    block: Callable[[int, np.ndarray], np.ndarray],
    windows: np.ndarray,
    proto_size: tuple[int, int],
    image_size: ImageSize,
    output: OutputSettings,
    config: ModelConfig,
    logits: bool = False,
    mask_scores: np.ndarray | None = None,
) -> Detections:
    """Integer boxes, masks and RLEs for detections already selected and sorted.

    ``windows`` (``mask_windows``) bound each mask; ``block(i, window)`` returns detection
    ``i``'s mask values inside its window (before the sigmoid with ``logits``).
    ``mask_scores`` (YOLACT++) follow the same filter.
    """
    height, width = image_size
    pixel_boxes = boxes_to_pixels(boxes, width, height)
    # The reference writes only boxes with a positive integer area; so do we, everywhere.
    valid = np.flatnonzero((pixel_boxes[:, 2] - pixel_boxes[:, 0]) * (pixel_boxes[:, 3] - pixel_boxes[:, 1]) > 0)
    blocks = (block(i, windows[i]) for i in valid.tolist())
    counts, lengths = run_lengths(blocks, windows[valid], proto_size, image_size, output.mask_threshold, logits=logits)
    size = [height, width]
    strings, areas = encode_run_lengths(counts, lengths)
    return Detections(
        boxes=pixel_boxes[valid].astype(np.float32),
        scores=scores[valid].astype(np.float32),
        class_ids=classes[valid].astype(np.int64),
        rles=tuple({"size": size, "counts": text} for text in strings),
        image_size=(height, width),
        class_names=config.class_names,
        category_ids=config.category_ids,
        areas=areas,
        mask_scores=None if mask_scores is None else mask_scores[valid].astype(np.float32),
    )


def postprocess_raw(
    heads: RawHeads,
    priors: np.ndarray,
    image_sizes: Sequence[ImageSize],
    config: ModelConfig,
    settings: InferenceSettings = InferenceSettings(),
) -> list[Detections]:
    """Detections for each image of a batch of raw heads (reference ``Detect`` + ``postprocess``)."""
    _check_batch(len(heads), image_sizes)
    results = []
    for b, image_size in enumerate(image_sizes):
        boxes, classes, scores, prior_idx = detect(heads.loc[b], heads.conf[b], priors, settings.detect)
        keep = _select(scores, classes, settings.output)
        coeffs = heads.mask[b][prior_idx[keep]]
        proto = heads.proto[b]

        def block(i, window, proto=proto, coeffs=coeffs):  # logits: the sigmoid runs batched in _finish
            r0, r1, c0, c1 = window
            return proto[r0:r1, c0:c1] @ coeffs[i]

        results.append(
            _finish(
                boxes[keep],
                classes[keep],
                scores[keep],
                block,
                mask_windows(boxes[keep], proto.shape[:2], settings.output.crop_masks),
                proto.shape[:2],
                image_size,
                settings.output,
                config,
                logits=True,
            )
        )
    return results


def mask_windows(boxes: np.ndarray, proto_size: tuple[int, int], crop: bool) -> np.ndarray:
    """``int64[D, 4]`` windows ``(row0, row1, col0, col1)`` outside which each mask is zero:
    the reference's crop (padding 1) of relative ``boxes``, or the whole grid without cropping."""
    hp, wp = proto_size
    return crop_windows(boxes, hp, wp) if crop else full_windows(len(boxes), hp, wp)


def _window_areas(windows: np.ndarray) -> np.ndarray:
    return np.maximum(windows[:, 1] - windows[:, 0], 0) * np.maximum(windows[:, 3] - windows[:, 2], 0)


def pack_graph_heads(
    heads: GraphHeads, output: OutputSettings = OutputSettings(), max_detections: int | None = None
) -> list[PackedDetections]:
    """Per image, the detections ``output`` keeps (at most ``max_detections``, best first),
    each mask reduced to its values inside its window."""
    proto_size = tuple(int(v) for v in heads.masks.shape[2:])
    packed = []
    for b in range(len(heads)):
        n = (
            int(heads.num_detections[b])
            if max_detections is None
            else min(int(heads.num_detections[b]), max_detections)
        )
        keep = _select(heads.scores[b, :n], heads.classes[b, :n], output)
        boxes = heads.boxes[b, keep].astype(np.float32)
        masks = heads.masks[b]
        windows = mask_windows(boxes, proto_size, output.crop_masks).tolist()
        values = [masks[k, r0:r1, c0:c1].ravel() for k, (r0, r1, c0, c1) in zip(keep.tolist(), windows)]
        packed.append(
            PackedDetections(
                boxes=boxes,
                scores=heads.scores[b, keep].astype(np.float32),
                classes=heads.classes[b, keep].astype(np.int64),
                mask_values=np.concatenate(values).astype(np.float32, copy=False)
                if values
                else np.zeros(0, np.float32),
                proto_size=proto_size,
                mask_scores=None if heads.mask_scores is None else heads.mask_scores[b, keep].astype(np.float32),
            )
        )
    return packed


def postprocess_packed(
    packed: Sequence[PackedDetections],
    image_sizes: Sequence[ImageSize],
    config: ModelConfig,
    output: OutputSettings = OutputSettings(),
) -> list[Detections]:
    """Detections for each image from ``pack_graph_heads``'s output (packed with the same
    ``output`` settings: the mask windows are recomputed from the boxes)."""
    _check_batch(len(packed), image_sizes)
    results = []
    for item, image_size in zip(packed, image_sizes):
        windows = mask_windows(item.boxes, item.proto_size, output.crop_masks)
        areas = _window_areas(windows)
        if areas.sum() != item.mask_values.size:
            raise ValueError(
                f"packed masks hold {item.mask_values.size} values but the windows of {len(item)} boxes "
                f"cover {int(areas.sum())}: packed with other crop settings?"
            )
        ends = np.cumsum(areas).tolist()

        def block(i, window, values=item.mask_values, ends=ends):
            r0, r1, c0, c1 = window
            h, w = max(r1 - r0, 0), max(c1 - c0, 0)  # a box off the grid has an empty window
            return values[ends[i] - h * w : ends[i]].reshape(h, w)

        results.append(
            _finish(
                item.boxes,
                item.classes,
                item.scores,
                block,
                windows,
                item.proto_size,
                image_size,
                output,
                config,
                mask_scores=item.mask_scores,
            )
        )
    return results


def postprocess_graph(
    heads: GraphHeads,
    image_sizes: Sequence[ImageSize],
    config: ModelConfig,
    output: OutputSettings = OutputSettings(),
    max_detections: int | None = None,
) -> list[Detections]:
    """Detections for each image of a batch of graph-contract outputs.

    ``max_detections`` keeps only that many of the model's detections (best first).
    """
    _check_batch(len(heads), image_sizes)
    return postprocess_packed(pack_graph_heads(heads, output, max_detections), image_sizes, config, output)


def _check_batch(batch: int, image_sizes: Sequence[ImageSize]) -> None:
    if len(image_sizes) != batch:
        raise ValueError(f"got {len(image_sizes)} image sizes for a batch of {batch} images")


@dataclass(frozen=True)
class Postprocessor:
    """Picklable post-processing for one model: heads + image sizes -> ``Detections``.

    Built from a model's metadata without loading the model, so CPU workers can run it.

    Attributes:
        config: the model configuration.
        contract: ``"raw"`` or ``"graph"`` heads.
        settings: detect settings (used for raw heads; graph heads were already detected,
            only ``max_detections`` can shorten them) and output settings.
    """

    config: ModelConfig
    contract: str
    settings: InferenceSettings = InferenceSettings()
    priors: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "priors", make_priors(self.config.priors) if self.contract == "raw" else None)

    def __call__(
        self, heads: RawHeads | GraphHeads | Sequence[PackedDetections], image_sizes: Sequence[ImageSize]
    ) -> list[Detections]:
        if isinstance(heads, RawHeads):
            return postprocess_raw(heads, self.priors, image_sizes, self.config, self.settings)
        if isinstance(heads, GraphHeads):
            heads = self.pack(heads)
        return postprocess_packed(heads, image_sizes, self.config, self.settings.output)

    def pack(self, heads: GraphHeads) -> list[PackedDetections]:
        """``pack_graph_heads`` with this post-processor's settings."""
        return pack_graph_heads(heads, self.settings.output, max_detections=self.settings.detect.max_detections)
