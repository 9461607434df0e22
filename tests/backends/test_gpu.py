"""TensorRT on a real GPU: engine build, cache reuse, golden parity in FP32, FP16 within stated bounds.

Every test here skips, with the reason, unless TensorRT >= 10, cuda-python and a CUDA device
are present (``tensorrt_gpu`` in this folder's conftest). The models are the golden synthetic
checkpoints exported once per session (``exported``); engines go to a session cache folder.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import GOLDEN_IDS, golden_case
from yolact_batch.backends.engine_cache import cache_fields, unpack_engine
from yolact_batch.backends.engine_plan import EngineSpec
from yolact_batch.backends.tensorrt import TensorRTBackend
from yolact_batch.core.boxes import box_iou
from yolact_batch.core.heads import RAW_OUTPUTS
from yolact_batch.core.masks import sigmoid
from yolact_batch.io.storage import model_digest

pytestmark = pytest.mark.gpu
CONFIGS = tuple(GOLDEN_IDS)  # yolact_resnet50, yolact_base
SMALL = dict(min_batch=1, opt_batch=2, max_batch=4)  # every golden config has at most 4 images

# FP16 bounds. No GPU was available when these were written, so they rest on an emulation: the
# golden checkpoints run by our torch twin on CPU with weights and activations in float16
# (``load_checkpoint(...).half()(x.half())``), against float32, on all 7 golden images:
#   max |fp16 - fp32|   loc      conf     mask     proto (values up to ~10.5)
#   yolact_resnet50     9.0e-3   5.9e-3   1.3e-2   3.8e-2
#   yolact_base         8.1e-3   4.5e-3   1.4e-2   3.4e-2
# Detect on those fp16 heads vs the golden detections: the top 10 always found (same class,
# box IoU >= 0.998), >= 98 of 100 found at IoU >= 0.9, found scores within 4.5e-3; the top-10
# masks within 0.025 (max |diff|), binarised IoU >= 0.98. The bounds below are about 4x those:
# TensorRT picks other kernels than torch's CPU half path (and the graph head stays FP32), so
# the emulation guides the numbers but does not measure TensorRT.
FP16_RAW_ATOL = {"loc": 0.04, "conf": 0.02, "mask": 0.05, "proto": 0.15}
FP16_TOP10_MIN_IOU, FP16_MIN_FOUND, FP16_SCORE_ATOL, FP16_MASK_MIN_IOU = 0.95, 95, 0.02, 0.95

# FP32 bounds: the golden README's 1e-4 for ONNX Runtime vs torch (about 5x their measured
# differences), doubled for TensorRT's own FP32 conv algorithms (TF32 is off in FP32 engines).
FP32_ATOL, FP32_RTOL = 2e-4, 1e-4
TIE_GAP = 1e-5  # golden scores closer than this may come out in either order


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="session")
def backend(tensorrt_gpu, exported, engine_cache):
    """``backend(config, contract, precision, **spec) -> TensorRTBackend``, one per arguments per session."""
    made: dict[tuple, TensorRTBackend] = {}

    def make(name: str, contract: str, precision: str = "fp32", **spec) -> TensorRTBackend:
        key = (name, contract, precision, tuple(sorted(spec.items())))
        if key not in made:
            path = exported(name, contract)
            made[key] = TensorRTBackend(
                path.read_bytes(), origin=str(path), spec=EngineSpec(precision=precision, **{**SMALL, **spec}),
                cache=engine_cache,
            )  # fmt: skip
        return made[key]

    yield make
    for b in made.values():
        b.close()


def golden_batch(name: str) -> tuple[np.ndarray, list[dict]]:
    """The preprocessed golden inputs of ``name`` as one batch, and each image's golden arrays."""
    ids = GOLDEN_IDS[name]
    inputs = np.concatenate([golden_case("yolact_resnet50", i)[0]["input"] for i in ids])  # same input for both configs
    return inputs, [golden_case(name, i)[0] for i in ids]


def find(got_boxes, got_classes, want_boxes, want_classes) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted detection, the best same-class match in ``got``: (index, box IoU; 0 when none)."""
    iou = np.where(want_classes[:, None] == got_classes[None, :], box_iou(want_boxes, got_boxes), 0.0)
    return iou.argmax(1), iou.max(1)


# --- engine build and cache ------------------------------------------------------------------


def test_engine_build_then_cache_reuse(tensorrt_gpu, exported, tmp_path):
    import tensorrt

    path = exported("yolact_resnet50", "graph")
    spec = EngineSpec(precision="fp32", min_batch=1, opt_batch=1, max_batch=2)
    args = dict(origin=str(path), spec=spec, cache=str(tmp_path))
    images = golden_batch("yolact_resnet50")[0][:2]
    with TensorRTBackend(path.read_bytes(), **args) as first:
        assert first.engine_source == "built"
        entry = tmp_path / first.engine_file
        assert entry.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [first.engine_file]
        want = first(images)
    with TensorRTBackend(path.read_bytes(), **args) as second:  # loads, does not build
        assert second.engine_source == "cache" and second.engine_file == first.engine_file
        got = second(images)
    for a, b in zip(vars(got).values(), vars(want).values()):
        np.testing.assert_array_equal(a, b)
    entry.write_bytes(entry.read_bytes()[:-100])  # a truncated upload
    with TensorRTBackend(path.read_bytes(), **args) as third:
        assert third.engine_source == "rebuilt"
        fields = cache_fields(model_digest(path.read_bytes()), tensorrt.__version__, third.gpu, "fp32", (1, 1, 2))
    assert unpack_engine(entry.read_bytes(), fields)  # replaced by an intact entry


def test_other_precision_is_another_cache_entry(backend):
    fp32, fp16 = backend("yolact_resnet50", "graph", "fp32"), backend("yolact_resnet50", "graph", "fp16")
    assert fp32.engine_file != fp16.engine_file and "_fp16_" in fp16.engine_file


# --- FP32 parity with the golden reference ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_raw_fp32_matches_golden_heads(backend, name):
    images, golds = golden_batch(name)
    heads = backend(name, "raw")(images)
    for b, gold in enumerate(golds):
        for key in RAW_OUTPUTS:
            got = getattr(heads, key)[b : b + 1]
            np.testing.assert_allclose(
                got, gold[key], atol=FP32_ATOL, rtol=FP32_RTOL, err_msg=f"{name} image {b} {key}"
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_graph_fp32_matches_golden_detections(backend, name):
    images, golds = golden_batch(name)
    heads = backend(name, "graph")(images)
    assert heads.num_detections.tolist() == [100] * len(golds)
    for b, gold in enumerate(golds):
        index, iou = find(heads.boxes[b], heads.classes[b], gold["det_boxes"], gold["det_classes"])
        assert iou.min() > 0.999, f"{name} image {b}: detection {iou.argmin()} not found"
        np.testing.assert_allclose(heads.boxes[b][index], gold["det_boxes"], atol=FP32_ATOL)
        np.testing.assert_allclose(heads.scores[b][index], gold["det_scores"], atol=FP32_ATOL)
        moved = np.flatnonzero(index != np.arange(len(index)))
        gaps = np.abs(gold["det_scores"][moved] - gold["det_scores"][index[moved]])
        assert np.all(gaps < TIE_GAP), f"ranks {moved.tolist()} moved without a near-tie"
        # Masks against sigmoid(golden prototypes @ golden coefficients) where the crop kept them.
        want = np.moveaxis(sigmoid(gold["proto"][0] @ gold["det_masks"].T), -1, 0)
        masks = heads.masks[b][index]
        assert np.abs(masks - want * (masks > 0)).max() < 1e-3


# --- batching on the device: chunks, padding, two slots, empty input -------------------------


@pytest.mark.slow
def test_chunks_padding_and_slots_match_single_images(backend):
    # min 2 / max 3: 4 images run as a chunk of 3 and a chunk of 1 padded to 2, on alternating slots.
    trt = backend("yolact_resnet50", "graph", min_batch=2, opt_batch=2, max_batch=3)
    images, _ = golden_batch("yolact_resnet50")
    together = trt(images)
    for b in range(len(images)):
        alone = trt(images[b : b + 1])
        assert alone.num_detections[0] == together.num_detections[b]
        n = int(alone.num_detections[0])
        np.testing.assert_array_equal(alone.classes[0, :n], together.classes[b, :n])
        for key in ("boxes", "scores", "masks"):
            np.testing.assert_allclose(getattr(alone, key)[0], getattr(together, key)[b], atol=1e-5, err_msg=key)
    streamed = list(trt.stream([images[:3], images[3:], images[:0]]))
    assert [len(h) for h in streamed] == [3, 1, 0]
    np.testing.assert_array_equal(np.concatenate([streamed[0].scores, streamed[1].scores]), together.scores)
    assert len(trt(images[:0])) == 0


# --- FP16 within the bounds stated at the top ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_raw_fp16_within_bounds(backend, name):
    images, golds = golden_batch(name)
    heads = backend(name, "raw", "fp16")(images)
    for b, gold in enumerate(golds):
        for key, atol in FP16_RAW_ATOL.items():
            diff = float(np.abs(getattr(heads, key)[b : b + 1] - gold[key]).max())
            assert diff <= atol, f"{name} image {b} {key}: max |fp16 - golden| {diff:.2e} > {atol}"


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_graph_fp16_detections_close(backend, name):
    images, golds = golden_batch(name)
    heads = backend(name, "graph", "fp16")(images)
    for b, gold in enumerate(golds):
        n = int(heads.num_detections[b])
        index, iou = find(heads.boxes[b, :n], heads.classes[b, :n], gold["det_boxes"], gold["det_classes"])
        assert iou[:10].min() >= FP16_TOP10_MIN_IOU, f"{name} image {b}: top-10 IoUs {np.round(iou[:10], 3)}"
        assert (iou >= 0.9).sum() >= FP16_MIN_FOUND, f"{name} image {b}: {(iou >= 0.9).sum()} of 100 found"
        found = iou >= 0.9
        assert np.abs(heads.scores[b][index[found]] - gold["det_scores"][found]).max() <= FP16_SCORE_ATOL
        want = np.moveaxis(sigmoid(gold["proto"][0] @ gold["det_masks"][:10].T), -1, 0)
        got = heads.masks[b][index[:10]]
        a, w = got > 0.5, (want > 0.5) & (got > 0)  # compare inside the crop the engine applied
        mask_iou = (a & w).sum((1, 2)) / np.maximum((a | w).sum((1, 2)), 1)
        assert mask_iou.min() >= FP16_MASK_MIN_IOU, f"{name} image {b}: top-10 mask IoUs {np.round(mask_iou, 3)}"
