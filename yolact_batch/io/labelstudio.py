"""Label Studio pre-labels: tasks with predictions, and the labeling config to create the project.

One task per ok row::

    {"data": {"image": <reference Label Studio opens>, "image_uri": <our row's URI>, "image_id": ...},
     "predictions": [{"model_version": "<model name>@<sha256[:12]>", "score": <mean instance score>,
                      "result": [<one region per instance>]}]}

Regions are brush masks in Label Studio's own RLE (``brushlabels``, ``format: "rle"``,
pixel-exact) or polygons (``polygonlabels``, points in percent of the image, one region per
part of the mask, holes left out), each with its ``score``. Tasks are written as JSON arrays
split into files Label Studio imports comfortably (``tasks-00000.json``, ...), next to
``labeling_config.xml`` naming the ``image`` object and the ``label`` control they refer to.
An image without kept instances still gets a task, with an empty prediction (the model found
nothing there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from yolact_batch.core import brush_rle, rle
from yolact_batch.core.polygons import mask_rings
from yolact_batch.io.prelabel import ExportReport, Prelabeler, PrelabelSettings, scan_classes
from yolact_batch.io.storage import StorageOptions, filesystem

__all__ = ["LabelStudioOptions", "export_labelstudio", "labeling_config", "model_version"]

FROM_NAME, TO_NAME, DATA_KEY = "label", "image", "image"
CONFIG_FILE = "labeling_config.xml"
# References Label Studio opens itself: cloud storage URIs, URLs, its own local-files and upload paths.
OPENABLE = ("s3://", "gs://", "gcs://", "azure-blob://", "http://", "https://", "/data/local-files/", "/data/upload/")
# 20 distinct colours (Sasha Trubetskoy's list) cycled over the labels.
_COLOURS = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe",
    "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080",
)  # fmt: skip


@dataclass(frozen=True)
class LabelStudioOptions:
    """How the tasks are written.

    Attributes:
        regions: ``"brush"`` (pixel-exact masks) or ``"polygon"`` (editable outlines).
        tolerance: polygon simplification, maximum deviation in pixels (``"polygon"`` only).
        image_prefixes: ``(old, new)`` prefix rewrites of ``image_uri``, first match wins;
            when ``new`` holds a query (``/data/local-files/?d=``) the rest is URL-quoted.
            ``s3://`` / ``gs://`` URIs are kept for Label Studio's cloud storage otherwise.
        tasks_per_file: start a new task file after this many tasks.
        max_file_bytes: ... or before a file would grow past this size (one larger task
            still gets a file of its own). Label Studio refuses imports over 200 MB.
    """

    regions: str = "brush"
    tolerance: float = 1.0
    image_prefixes: tuple[tuple[str, str], ...] = ()
    tasks_per_file: int = 5000
    max_file_bytes: int = 50_000_000

    def __post_init__(self) -> None:
        if self.regions not in ("brush", "polygon"):
            raise ValueError(f"regions must be 'brush' or 'polygon', got {self.regions!r}")
        if self.tasks_per_file < 1 or self.max_file_bytes < 1:
            raise ValueError("tasks_per_file and max_file_bytes must be positive")

    def image_reference(self, uri: str) -> str:
        for old, new in self.image_prefixes:
            if uri.startswith(old):
                rest = uri[len(old) :]
                return new + (quote(rest, safe="/") if "?" in new else rest)
        return uri


def model_version(model: dict | None) -> str:
    """``name@sha256-prefix`` of a row's ``model`` struct: what Label Studio shows per prediction."""
    if not model:
        return "yolact_batch"
    digest = (model.get("digest") or "")[:12]
    return f"{model.get('name') or 'model'}@{digest}" if digest else str(model.get("name") or "model")


def labeling_config(labels: Sequence[str], regions: str = "brush") -> str:
    """Label Studio labeling config (XML) for ``labels``, matching the exported tasks."""
    tag = {"brush": "BrushLabels", "polygon": "PolygonLabels"}[regions]
    lines = [
        "<View>",
        f'  <Image name="{TO_NAME}" value="${DATA_KEY}" zoom="true" zoomControl="true"/>',
        f'  <{tag} name="{FROM_NAME}" toName="{TO_NAME}">',
        *(f"    <Label value={quoteattr(n)} background={quoteattr(_COLOURS[i % 20])}/>" for i, n in enumerate(labels)),
        f"  </{tag}>",
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def _region(k: int, inst: dict, width: int, height: int, kind: str, value: dict) -> dict:
    return {
        "id": f"yb{k}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": kind,
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {**value, kind: [inst["label"]]}, "score": round(float(inst["score"]), 6),
    }  # fmt: skip


def _regions(
    instances: list[dict], width: int, height: int, options: LabelStudioOptions, own: dict
) -> tuple[list[dict], list[float]]:
    """(regions, scores of the instances written): one brush region per instance, or one
    polygon region per part of its mask; ``own`` counts what polygons lose."""
    out: list[dict] = []
    scores: list[float] = []
    for inst in instances:
        mask = rle.decode(inst["segmentation"])
        if options.regions == "brush":
            value = {"format": "rle", "rle": brush_rle.encode(mask)}
            out.append(_region(len(out), inst, width, height, "brushlabels", value))
            scores.append(inst["score"])
            continue
        rings = mask_rings(mask, options.tolerance)
        own["holes_left_out"] += len(rings.holes)
        if not rings.outer:
            own["no_polygon"] += 1
            continue
        for ring in rings.outer:  # pixel centres, in percent of the image
            points = ((ring + 0.5) * [100.0 / width, 100.0 / height]).round(4).tolist()
            out.append(_region(len(out), inst, width, height, "polygonlabels", {"points": points, "closed": True}))
        scores.append(inst["score"])
    return out, scores


class _TaskFiles:
    """JSON arrays of tasks, a new file when the current one is full."""

    def __init__(self, folder: str, options: LabelStudioOptions, storage: StorageOptions):
        self.fs, self.folder = filesystem(folder, storage)
        self.fs.makedirs(self.folder, exist_ok=True)
        self.limits, self.paths, self.f, self.count, self.size = options, [], None, 0, 0

    def write(self, task: dict) -> None:
        data = json.dumps(task, separators=(",", ":")).encode()
        full = self.count >= self.limits.tasks_per_file or self.size + len(data) + 2 > self.limits.max_file_bytes
        if self.f is None or (full and self.count):
            self.close()
            self.paths.append(f"{self.folder.rstrip('/')}/tasks-{len(self.paths):05d}.json")
            self.f, self.count, self.size = self.fs.open(self.paths[-1], "wb"), 0, 1
            self.f.write(b"[")
        self.f.write((b",\n" if self.count else b"\n") + data)
        self.count, self.size = self.count + 1, self.size + len(data) + 2

    def close(self) -> None:
        if self.f is not None:
            self.f.write(b"\n]\n")
            self.f.close()
            self.f = None


def export_labelstudio(
    output_uri: str,
    folder: str,
    *,
    settings: PrelabelSettings = PrelabelSettings(),
    options: LabelStudioOptions = LabelStudioOptions(),
    extra_labels: Sequence[str] = (),
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> ExportReport:
    """Write Label Studio tasks with predictions and ``labeling_config.xml`` into ``folder``.

    Args:
        output_uri: our Parquet output (see ``results_io.part_files``).
        folder: where the task files and the labeling config go (local path or URL).
        settings: which instances become pre-labels, and their label names.
        options: region type, image references and task file sizes.
        extra_labels: labels listed in the config even when no instance has them (e.g. the
            model's other classes, or labels only people will draw).
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options.

    An output without ok rows writes no task file (and the config); the report says so.
    """
    pre = Prelabeler(settings, scan_classes(output_uri, storage=storage, allow_incomplete=allow_incomplete))
    writer = _TaskFiles(folder, options, storage)
    own = {"no_polygon": 0, "holes_left_out": 0}
    exported, local = 0, 0
    columns = ["image_uri", "image_id", "width", "height", "model"]
    try:
        for row, kept in pre.rows(output_uri, columns, storage=storage, allow_incomplete=allow_incomplete):
            result, scores = _regions(kept, row["width"], row["height"], options, own)
            exported += len(scores)
            ref = options.image_reference(row["image_uri"])
            local += not ref.startswith(OPENABLE)
            data = {DATA_KEY: ref, "image_uri": row["image_uri"]}
            if row["image_id"] is not None:
                data["image_id"] = row["image_id"]
            score = float(np.mean(scores)) if scores else 0.0
            writer.write({"data": data, "predictions": [
                {"model_version": model_version(row["model"]), "score": round(score, 6), "result": result}
            ]})  # fmt: skip
    finally:
        writer.close()
    fs, path = filesystem(folder, storage)
    config_path = f"{path.rstrip('/')}/{CONFIG_FILE}"
    with fs.open(config_path, "w") as f:
        f.write(labeling_config(pre.labels(extra_labels), options.regions))
    notes = []
    if local:
        notes.append(
            f"{local} image references are local paths Label Studio cannot open: serve them with local file "
            "storage and rewrite them, e.g. --image-prefix /data/images/=/data/local-files/?d=images/"
        )
    if own["holes_left_out"]:
        notes.append(f"{own['holes_left_out']} mask holes left out (Label Studio polygons have none; brush keeps them)")
    own.pop("holes_left_out")
    return pre.report(exported, [*writer.paths, config_path], own, notes)
