"""A COCO instances file as training samples: network input, relative boxes, prototype-size masks.

Images go through ``yolact_batch.core.preprocess.preprocess`` (the inference transform, bit for
bit), so the model trains on exactly what it will see at inference.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from yolact_batch.core import rle
from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.preprocess import preprocess
from yolact_batch.training.losses import Targets


class CocoInstances:
    """The images and instance annotations of one COCO ``instances.json``.

    Args:
        json_path: the annotations; ``file_name`` is relative to the json's folder.
        config: the model config (input size, normalisation, prototype size, category ids).
    """

    def __init__(self, json_path: str | Path, config: ModelConfig) -> None:
        self.json_path = Path(json_path)
        self.config = config
        data = json.loads(self.json_path.read_text())
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self._annotations: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0):
                self._annotations[ann["image_id"]].append(ann)
        self._class_of = {cat_id: i for i, cat_id in enumerate(config.category_ids)}

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return self.json_path.parent / self.images[index]["file_name"]

    def sample(self, index: int, *, flip_x: bool = False, flip_y: bool = False) -> tuple[np.ndarray, Targets]:
        """Image ``index`` as ``(float32[3, S, S] network input, targets)``, optionally mirrored."""
        info = self.images[index]
        image = cv2.imread(str(self.image_path(index)), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {self.image_path(index)}")
        height, width = image.shape[:2]
        anns = self._annotations[info["id"]]
        side = self.config.proto_size
        boxes = np.array(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            np.float32,
        ).reshape(-1, 4) / np.array([width, height, width, height], np.float32)
        masks = np.zeros((len(anns), side, side), bool)
        for k, ann in enumerate(anns):
            # INTER_AREA then 0.5: a prototype pixel is on when most of the pixels it covers are.
            full = rle.decode(ann["segmentation"]).astype(np.float32)
            masks[k] = cv2.resize(full, (side, side), interpolation=cv2.INTER_AREA) > 0.5
        if flip_x:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        if flip_y:
            image, masks = image[::-1], masks[:, ::-1]
            boxes = np.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], axis=1)
        labels = np.array([self._class_of[a["category_id"]] for a in anns], np.int64)
        targets = Targets(
            boxes=torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
            labels=torch.from_numpy(labels),
            masks=torch.from_numpy(np.ascontiguousarray(masks, np.float32)),
        )
        return preprocess(np.ascontiguousarray(image), self.config), targets


def batch_order(num_samples: int, *, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The sample indices of each full batch of one epoch (a seeded shuffle; the remainder is dropped)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return [order[i : i + batch_size] for i in range(0, num_samples - batch_size + 1, batch_size)]
