"""Import a COCO instances JSON with datumaro (CVAT's import engine) and dump what it read.

usage: datumaro_coco.py INSTANCES.json OUT.npz
Every mask annotation's bool[H, W] goes to OUT.npz under its annotation id; one JSON line
lists the items, the label names and every annotation (type, ids, label, attributes).
"""

import json
import sys

import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset

path, out = sys.argv[1:]
dataset = Dataset.import_from(path, "coco_instances")
labels = [c.name for c in dataset.categories()[AnnotationType.label]]
masks, annotations, items = {}, [], []
for item in dataset:
    items.append({"id": item.id, "image_id": item.attributes.get("id"), "size": list(item.media.size or ())})
    for ann in item.annotations:
        entry = {
            "item": item.id,
            "type": ann.type.name,
            "id": ann.id,
            "label": labels[ann.label],
            "is_crowd": ann.attributes.get("is_crowd"),
            "score": ann.attributes.get("score"),
        }
        if ann.type == AnnotationType.mask:
            masks[str(ann.id)] = ann.image.astype(bool)
        elif ann.type == AnnotationType.polygon:
            entry["points"] = [float(v) for v in ann.points]
        annotations.append(entry)
np.savez_compressed(out, **masks)
print(json.dumps({"labels": labels, "items": items, "annotations": annotations}))
