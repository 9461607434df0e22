"""The synthetic shapes dataset: deterministic bytes, valid COCO, annotations that match the masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolact_batch.core import rle
from yolact_batch.core.synthetic import (
    SHAPE_CLASSES,
    SceneSettings,
    image_rng,
    make_dataset,
    make_demo_set,
    mask_bbox,
    render_scene,
)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_dataset(root, split="val", num_images=12, seed=7)


def test_same_seed_same_bytes(tmp_path, val_split):
    again = make_dataset(tmp_path, split="val", num_images=12, seed=7)
    assert _files(again.parent) == _files(val_split.parent)


def test_seed_and_split_change_the_images(tmp_path, val_split):
    other_seed = make_dataset(tmp_path / "a", split="val", num_images=2, seed=8)
    other_split = make_dataset(tmp_path / "b", split="train", num_images=2, seed=7)
    first = (val_split.parent / "000000.jpg").read_bytes()
    assert (other_seed.parent / "000000.jpg").read_bytes() != first
    assert (other_split.parent / "000000.jpg").read_bytes() != first


def test_a_short_split_is_a_prefix_of_a_long_one(tmp_path, val_split):
    short = make_dataset(tmp_path, split="val", num_images=3, seed=7)
    for name in ("000000.jpg", "000001.jpg", "000002.jpg"):
        assert (short.parent / name).read_bytes() == (val_split.parent / name).read_bytes()
    long_anns = [a for a in json.loads(val_split.read_text())["annotations"] if a["image_id"] <= 3]
    assert json.loads(short.read_text())["annotations"] == long_anns


def test_pycocotools_reads_it_and_agrees_on_masks_boxes_areas(val_split):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    data = json.loads(val_split.read_text())
    coco = COCO(str(val_split))
    assert [c["id"] for c in data["categories"]] == list(range(1, len(SHAPE_CLASSES) + 1))
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    assert len(data["annotations"]) >= 12
    for ann in data["annotations"]:
        image = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"])
        assert ann["iscrowd"] == 0
        assert ann["area"] == int(mask.sum()) == int(mask_utils.area(ann["segmentation"])) > 0
        np.testing.assert_array_equal(ann["bbox"], mask_utils.toBbox(ann["segmentation"]))
        np.testing.assert_array_equal(mask.astype(bool), rle.decode(ann["segmentation"]))


def test_images_match_their_records(val_split):
    import cv2

    data = json.loads(val_split.read_text())
    for image in data["images"]:
        pixels = cv2.imread(str(val_split.parent / image["file_name"]))
        assert pixels.shape == (image["height"], image["width"], 3)
        assert 192 <= image["height"] <= 384 and 192 <= image["width"] <= 384


@pytest.mark.parametrize("index", range(8))
def test_scene_masks_are_disjoint_and_visible_enough(index):
    settings = SceneSettings()
    scene = render_scene(image_rng(3, "val", index), settings)
    assert scene.masks.shape[0] == len(scene.class_ids) <= settings.max_objects
    assert scene.masks.sum(axis=0).max(initial=0) <= 1  # occluded pixels belong to the shape on top
    assert all(m.sum() >= 16 for m in scene.masks)


def test_every_class_appears_and_overlaps_happen():
    scenes = [render_scene(image_rng(0, "train", i)) for i in range(30)]
    classes = np.concatenate([s.class_ids for s in scenes])
    assert set(classes.tolist()) == set(range(len(SHAPE_CLASSES)))
    boxes_touch = 0
    for s in scenes:
        boxes = [mask_bbox(m) for m in s.masks]
        for i in range(len(boxes)):
            for j in range(i):
                a, b = boxes[i], boxes[j]
                boxes_touch += a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
    assert boxes_touch > 5


def test_mask_bbox_is_coco_xywh():
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    assert mask_bbox(mask) == [2.0, 1.0, 3.0, 2.0]


def test_demo_set_is_the_start_of_the_held_out_split(tmp_path):
    from yolact_batch.core.synthetic import SHAPES_SEED

    demo = make_demo_set(tmp_path / "demo", num_images=2)
    val = make_dataset(tmp_path / "val", split="val", num_images=2, seed=SHAPES_SEED)
    assert _files(demo.parent) == _files(val.parent)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_images"):
        make_dataset(tmp_path, split="val", num_images=-1)
    with pytest.raises(ValueError, match="min_side"):
        SceneSettings(min_side=300, max_side=200)


def test_generator_and_evaluation_need_no_torch_or_runtime():
    import subprocess
    import sys

    from tests.test_core_imports import BLOCKER

    modules = ("core.synthetic", "training.shapes", "training.evaluate")
    code = (
        BLOCKER
        + "".join(f"import yolact_batch.{m}\n" for m in modules)
        + ("assert not any(m.split('.')[0] in {'torch', 'onnxruntime', 'ray'} for m in sys.modules)\n")
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
