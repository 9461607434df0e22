"""The torch backend on a device: golden parity in fp32, fp16 / bf16 within stated bounds of fp32,
streaming and CUDA graphs equal to single calls.

``gpu``-marked: on a machine without a CUDA GPU every test skips, with the reason. The device is
``cuda`` unless ``YOLACT_BATCH_TEST_DEVICE`` says otherwise; ``benchmarks/gpu_check.sh --runtime
cpu`` sets it to ``cpu`` (and ``YOLACT_BATCH_TEST_IMAGES=1``) to run this file's plumbing on the
CPU. With ``YOLACT_BATCH_GPU_REPORT=FILE`` the measured differences are written to FILE as JSON
(``gpu_check.sh`` puts them in its summary).

Low-precision bounds. No GPU was available when they were written, so they rest on a CPU
emulation: the golden checkpoints in this backend on the CPU, network in float16 / bfloat16,
softmax and head in float32, against the golden float32 arrays, yolact_resnet50, 4 images:

    max |x - fp32|   loc     conf    mask    proto    top-10 box IoU  found of 100  score diff
    fp16             9.0e-3  5.8e-3  1.3e-2  3.7e-2   >= 0.998        >= 99         <= 3.3e-3
    bf16             6.5e-2  5.4e-2  1.2e-1  3.3e-1   >= 0.987        >= 94         <= 3.1e-2

(found: a same-class detection with box IoU >= 0.9). The bounds below are about 4x those
differences: cuDNN picks other kernels and accumulation orders than the CPU, and the GPU run is
compared with GPU fp32 rather than with the golden arrays.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import GOLDEN, GOLDEN_IDS, golden_case, golden_image_bytes, require
from tests.matching import assert_same_detections

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

from yolact_batch.backends.torch import TorchBackend, TorchOptions  # noqa: E402
from yolact_batch.core.boxes import box_iou  # noqa: E402
from yolact_batch.core.coco import instances  # noqa: E402
from yolact_batch.core.configs import get_config  # noqa: E402
from yolact_batch.core.postprocess import Postprocessor  # noqa: E402
from yolact_batch.core.preprocess import decode_image, preprocess  # noqa: E402
from yolact_batch.core.settings import InferenceSettings  # noqa: E402

DEVICE = os.environ.get("YOLACT_BATCH_TEST_DEVICE", "cuda")
NUM_IMAGES = int(os.environ.get("YOLACT_BATCH_TEST_IMAGES", "0")) or None  # None: every golden image
REPORT = os.environ.get("YOLACT_BATCH_GPU_REPORT")
CONFIGS = tuple(GOLDEN_IDS) if NUM_IMAGES is None else ("yolact_resnet50",)

BOUNDS = {  # see the module docstring
    "fp16": dict(raw={"loc": 0.04, "conf": 0.025, "mask": 0.05, "proto": 0.15}, top10_iou=0.95, found=95, score=0.015),
    "bf16": dict(raw={"loc": 0.25, "conf": 0.2, "mask": 0.5, "proto": 1.3}, top10_iou=0.95, found=85, score=0.12),
}
FP32_RAW_ATOL = 1e-4  # the golden README's bound for a re-implementation (about 5x ORT vs torch)
_measured: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def device_or_skip():
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
        pytest.skip(f"needs a CUDA GPU visible to torch (torch {torch.__version__}: {build})")
    yield
    if REPORT and _measured:
        name = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu"
        with open(REPORT, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "results": _measured}, f)


@pytest.fixture(scope="module")
def backend(golden_checkpoint):
    """``backend(config, precision="fp32", contract="graph", compile="off") -> TorchBackend``, cached."""
    made: dict[tuple, TorchBackend] = {}

    def make(name: str, precision: str = "fp32", contract: str = "graph", compile: str = "off") -> TorchBackend:
        key = (name, precision, contract, compile)
        if key not in made:
            path = golden_checkpoint(name)
            options = TorchOptions(device=DEVICE, precision=precision, compile=compile)
            made[key] = TorchBackend(path.read_bytes(), origin=str(path), config=get_config(name),
                                     contract=contract, options=options)  # fmt: skip
        return made[key]

    yield make
    for b in made.values():
        b.close()


def golden_images(name: str) -> tuple[list[int], list[np.ndarray]]:
    ids = list(GOLDEN_IDS[name][:NUM_IMAGES])
    return ids, [decode_image(golden_image_bytes(i)) for i in ids]


def batch_of(name: str, images: list[np.ndarray]) -> np.ndarray:
    config = get_config(name)
    return np.stack([preprocess(im, config) for im in images])


@pytest.mark.parametrize("name", CONFIGS)
def test_fp32_matches_golden_json(backend, name):
    ids, images = golden_images(name)
    model = backend(name)
    heads = model(batch_of(name, images))
    post = Postprocessor(model.metadata.config, "graph", InferenceSettings(detect=model.metadata.detect))
    found = post(heads, [im.shape[:2] for im in images])
    for image_id, dets in zip(ids, found):
        assert_same_detections(instances(dets), golden_case(name, image_id)[1])
    _measured.append({"check": "fp32_vs_golden_json", "config": name, "images": len(ids), "passed": True})


@pytest.mark.parametrize("name", CONFIGS)
def test_fp32_raw_heads_match_golden_arrays(backend, name):
    ids, images = golden_images(name)
    have = [i for i in ids if (GOLDEN / name / f"{i}.npz").is_file()]
    if not have:
        pytest.skip(f"no golden .npz for {name} here (a GPU bundle carries only some)")
    require(GOLDEN / name)
    heads = backend(name, contract="raw")(batch_of(name, [images[ids.index(i)] for i in have]))
    worst = {}
    for b, image_id in enumerate(have):
        gold = golden_case(name, image_id)[0]
        for key in ("loc", "conf", "mask", "proto"):
            worst[key] = max(worst.get(key, 0.0), float(np.abs(getattr(heads, key)[b : b + 1] - gold[key]).max()))
    _measured.append({"check": "fp32_raw_vs_golden_npz", "config": name, "images": len(have), "max_abs": worst})
    assert max(worst.values()) <= FP32_RAW_ATOL, worst


def _compare(low, ref) -> dict:
    """Detections of ``low`` against ``ref`` (GraphHeads of the same images): the numbers BOUNDS limit."""
    top10, found, score, mask_iou = 1.0, 100, 0.0, 1.0
    for b in range(len(ref)):
        n, m = int(ref.num_detections[b]), int(low.num_detections[b])
        same = ref.classes[b, :n, None] == low.classes[b, None, :m]
        iou = np.where(same, box_iou(ref.boxes[b, :n], low.boxes[b, :m]), 0.0)
        index, best = iou.argmax(1), iou.max(1)
        hit = best >= 0.9
        top10, found = min(top10, float(best[:10].min())), min(found, int(hit.sum()))
        score = max(score, float(np.abs(low.scores[b, index[hit]] - ref.scores[b, :n][hit]).max()))
        a, w = low.masks[b, index[:10]] > 0.5, ref.masks[b, :10] > 0.5
        inter, union = (a & w).sum((1, 2)), (a | w).sum((1, 2))
        mask_iou = min(mask_iou, float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).min()))
    return dict(top10_iou=top10, found=found, score=score, top10_mask_iou=mask_iou)


@pytest.mark.parametrize("precision", ("fp16", "bf16"))
@pytest.mark.parametrize("name", CONFIGS)
def test_low_precision_within_bounds_of_fp32(backend, name, precision):
    _, images = golden_images(name)
    batch = batch_of(name, images)
    raw = {key: float(np.abs(getattr(backend(name, precision, "raw")(batch), key) - getattr(ref, key)).max())
           for ref in [backend(name, contract="raw")(batch)] for key in ("loc", "conf", "mask", "proto")}  # fmt: skip
    detections = _compare(backend(name, precision)(batch), backend(name)(batch))
    _measured.append({"check": f"{precision}_vs_fp32", "config": name, "images": len(images), "raw_max_abs": raw,
                      **detections})  # fmt: skip
    bounds = BOUNDS[precision]
    for key, atol in bounds["raw"].items():
        assert raw[key] <= atol, f"{name} {precision} {key}: max |diff| {raw[key]:.3g} > {atol}"
    assert detections["top10_iou"] >= bounds["top10_iou"], detections
    assert detections["found"] >= bounds["found"], detections
    assert detections["score"] <= bounds["score"], detections


EXACT = dict(top10_iou=0.999, found=100, score=1e-5)  # the same program on the same device: rank swaps only


def _assert_same(got, want) -> None:
    numbers = _compare(got, want)
    assert numbers["top10_iou"] >= EXACT["top10_iou"] and numbers["found"] >= EXACT["found"], numbers
    assert numbers["score"] <= EXACT["score"], numbers


def test_stream_equals_single_calls(backend):
    name = CONFIGS[0]
    _, images = golden_images(name)
    batch = batch_of(name, images)
    model = backend(name)
    parts = [batch[:1], batch[:0], batch[1:], batch]
    streamed = list(model.stream(parts))
    assert [len(h) for h in streamed] == [len(p) for p in parts]
    for part, got in zip(parts, streamed):
        if len(part):
            _assert_same(got, model(part))


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="CUDA graphs exist only on CUDA devices")
def test_cuda_graphs_equal_eager(backend):
    name = CONFIGS[0]
    _, images = golden_images(name)
    batch = batch_of(name, images)
    eager, graphs = backend(name), backend(name, compile="cuda-graphs")
    want = eager(batch)
    for _ in range(2):  # the first call captures, the second replays
        _assert_same(graphs(batch), want)
    _assert_same(graphs(batch[:1]), eager(batch[:1]))  # another batch size: another graph
