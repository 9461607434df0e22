"""Post-processing at reference eval settings: 100 detections on a 640x480 image, one core.

Input: the golden yolact_resnet50 raw heads of COCO image 184324 (100 detections, masks
from empty to full-box). Timed in the same run, on one thread:

* ``ours_post_ms``: our mask stage + RLE (crop window only, exact torch-order bilinear,
  box-confined RLE) from the Detect output to finished ``Detections``.
* ``baseline_post_ms``: the straightforward approach: full ``sigmoid(proto @ coeffs.T)``,
  crop, full-size bilinear upsample of every mask, threshold, then per mask
  ``np.asfortranarray`` + ``pycocotools.mask.encode``.
* ``ours_detect_ms``: box decode + Fast NMS (numpy), reported separately.

Prints one JSON line with the ratio baseline / ours.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import interleaved_median_ms, require_shared  # noqa: E402
from pycocotools import mask as coco_mask  # noqa: E402

from yolact_batch.core.configs import get_config  # noqa: E402
from yolact_batch.core.heads import RawHeads  # noqa: E402
from yolact_batch.core.masks import crop_windows, sigmoid  # noqa: E402
from yolact_batch.core.postprocess import Postprocessor, detect  # noqa: E402
from yolact_batch.core.priors import make_priors  # noqa: E402

HEIGHT, WIDTH, REPEATS = 480, 640, 41


def baseline(proto, coeffs, boxes):
    masks = sigmoid(proto @ coeffs.T)  # [Hp, Wp, D]
    hp, wp = masks.shape[:2]
    rows, cols = np.arange(hp)[:, None], np.arange(wp)[None, :]
    out = []
    for d, (r0, r1, c0, c1) in enumerate(crop_windows(boxes, hp, wp)):
        cropped = masks[:, :, d] * ((rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1))
        full = cv2.resize(cropped, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR) > 0.5
        out.append(coco_mask.encode(np.asfortranarray(full.astype(np.uint8))))
    return out


def main() -> None:
    cv2.setNumThreads(1)
    golden = np.load(require_shared("golden/yolact_resnet50") / "184324.npz")
    config = get_config("yolact_resnet50")
    priors = make_priors(config.priors)
    heads = RawHeads(golden["loc"], golden["conf"], golden["mask"], golden["proto"])
    post = Postprocessor(config, "raw")
    boxes, classes, scores, prior_idx = detect(heads.loc[0], heads.conf[0], priors)
    coeffs = heads.mask[0][prior_idx]

    detect_ms, full_ms, base_ms = interleaved_median_ms(
        [
            lambda: detect(heads.loc[0], heads.conf[0], priors),
            lambda: post(heads, [(HEIGHT, WIDTH)]),
            lambda: baseline(heads.proto[0], coeffs, boxes),
        ],
        REPEATS,
    )
    ours_ms = full_ms - detect_ms
    dets = post(heads, [(HEIGHT, WIDTH)])[0]
    print(
        json.dumps(
            {
                "bench": "postprocess",
                "image": [HEIGHT, WIDTH],
                "detections": len(dets),
                "threads": 1,
                "ours_detect_ms": round(detect_ms, 2),
                "ours_post_ms": round(ours_ms, 2),
                "ours_detect_plus_post_ms": round(full_ms, 2),
                "baseline_post_ms": round(base_ms, 2),
                "ratio_baseline_over_ours_post": round(base_ms / ours_ms, 1),
                "target_post_ms": 15.0,
            }
        )
    )


if __name__ == "__main__":
    main()
