"""Decode every brush region of Label Studio task files with label-studio-sdk's own decoder.

usage: ls_brush_decode.py CONFIG.xml OUT.npz TASKS.json [TASKS.json ...]
Writes each decoded mask (the RLE's alpha channel, bool[H, W]) to OUT.npz under
"<file>/<task>/<region id>" and prints one JSON line: region counts, whether all four RGBA
channels agree, and LabelInterface's validation errors of every prediction against CONFIG.
"""

import json
import sys

import numpy as np
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

config, out, *task_files = sys.argv[1:]
interface = LabelInterface(open(config).read())
masks, errors, regions, channels_agree, tasks = {}, [], 0, True, 0
for f, path in enumerate(task_files):
    for t, task in enumerate(json.load(open(path))):
        tasks += 1
        for prediction in task["predictions"]:
            errors += [f"{path} task {t}: {e}" for e in interface.validate_prediction(prediction, return_errors=True)]
            for region in prediction["result"]:
                if region["type"] != "brushlabels":
                    continue
                rgba = decode_rle(region["value"]["rle"]).reshape(
                    region["original_height"], region["original_width"], 4
                )
                channels_agree &= bool((rgba == rgba[:, :, :1]).all() and np.isin(rgba, (0, 255)).all())
                masks[f"{f}/{t}/{region['id']}"] = rgba[:, :, 3] == 255
                regions += 1
np.savez_compressed(out, **masks)
print(json.dumps({"tasks": tasks, "regions": regions, "channels_agree": channels_agree, "errors": errors[:20]}))
