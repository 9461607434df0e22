"""A custom-trained checkpoint made from the golden one: fewer classes, the dbolya layout kept."""

from __future__ import annotations

# Our classes: (COCO id in the golden checkpoint, our id, our name). Ids ascend with the order
# kept, since a COCO JSON's categories are taken in id order.
KEPT = ((1, 5, "walker"), (3, 17, "vehicle"), (47, 99, "mug"))


def keep_classes(state: dict, coco_ids: list[int], all_coco_ids: tuple[int, ...]) -> dict:
    """A copy of an 81-class dbolya state dict that predicts only ``coco_ids`` (plus background).

    The conf layer's output channels are laid out ``[anchor][class]``: keep background and the
    kept classes of every anchor. The training-only semantic head has one channel per class.
    """
    fg = [all_coco_ids.index(c) for c in coco_ids]
    conf = state["prediction_layers.0.conf_layer.weight"]
    anchors = state["prediction_layers.0.bbox_layer.weight"].shape[0] // 4
    per = conf.shape[0] // anchors
    rows = [a * per + c for a in range(anchors) for c in [0, *(f + 1 for f in fg)]]
    out = dict(state)
    for key in ("prediction_layers.0.conf_layer.weight", "prediction_layers.0.conf_layer.bias"):
        out[key] = state[key][rows].clone()
    for key in ("semantic_seg_conv.weight", "semantic_seg_conv.bias"):
        out[key] = state[key][fg].clone()
    return out
