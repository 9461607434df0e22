"""End to end against a real Label Studio 1.23.2 server (SQLite, 127.0.0.1, stopped by PID):
the generated labeling config creates the project, the exported task files import, and the
predictions read back through the API decode to our masks; the rewritten local image
references are served by the server itself."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from tests.io.consumers import run_script
from tests.io.labelstudio_server import EMAIL, PASSWORD, label_studio
from tests.io.prelabel_data import MODEL, real_rows, shape_rows
from yolact_batch.core import rle
from yolact_batch.io.labelstudio import LabelStudioOptions, export_labelstudio, model_version
from yolact_batch.io.prelabel import PrelabelSettings
from yolact_batch.io.results_io import write_rows

USES_CONSUMERS = ("label-studio",)  # built in the background from collection on (tests/io/conftest.py)

pytestmark = pytest.mark.slow


def test_project_from_our_config_imports_our_tasks(tmp_path):
    images = tmp_path / "served" / "images"
    images.mkdir(parents=True)
    rows = real_rows() + shape_rows(tmp_path / "shapes")
    for row in rows:  # the images Label Studio will serve, under its local-files document root
        if row["status"] == "ok":
            shutil.copy(row["image_uri"], images / row["image_uri"].rsplit("/", 1)[-1])
    write_rows(rows, str(tmp_path / "out"))
    folders = {r["image_uri"].rsplit("/", 1)[0] + "/" for r in rows}  # the COCO folder and the shapes folder
    prefixes = tuple((folder, "/data/local-files/?d=images/") for folder in sorted(folders))
    settings = PrelabelSettings(score_threshold=0.3, rename=(("disc", "circle"),))
    brush = export_labelstudio(str(tmp_path / "out"), str(tmp_path / "brush"), settings=settings,
                               options=LabelStudioOptions(image_prefixes=prefixes, tasks_per_file=4))  # fmt: skip
    polygon = export_labelstudio(str(tmp_path / "out"), str(tmp_path / "polygon"), settings=settings,
                                 options=LabelStudioOptions(regions="polygon"))  # fmt: skip
    results, token = {}, []
    with label_studio(tmp_path, files_root=tmp_path / "served") as url:
        for name, report in (("brush", brush), ("polygon", polygon)):
            results[name] = run_script(
                "label-studio", "ls_server_roundtrip.py", "--url", url, "--email", EMAIL, "--password", PASSWORD,
                *token, "--config", tmp_path / name / "labeling_config.xml", "--out", tmp_path / f"{name}.npz",
                "--local-storage", images, *report.files[:-1],
            )  # fmt: skip
            token = ["--token", results[name]["token"]]
    ok = [r for r in rows if r["status"] == "ok"]
    for got in results.values():
        assert got["errors"] == [] and got["task_number"] == len(ok) == sum(i["tasks"] for i in got["imported"])
        assert sum(i["predictions"] for i in got["imported"]) == len(ok)
        assert {"circle", "ring", "person"} <= set(got["labels"]) and "disc" not in got["labels"]
        for task in got["tasks"]:
            (prediction,) = task["predictions"]
            assert prediction["model_version"] == model_version(MODEL)
    by_uri = {t["data"]["image_uri"]: t for t in results["brush"]["tasks"]}
    masks = np.load(tmp_path / "brush.npz")
    regions = 0
    for row in ok:
        task = by_uri[row["image_uri"]]
        served = task["image"]  # every image was rewritten to /data/local-files/ and fetched back
        assert (
            served["status"] == 200
            and served["sha256"] == hashlib.sha256(open(row["image_uri"], "rb").read()).hexdigest()
        )
        kept = [i for i in row["instances"] if i["score"] > 0.3 and i["area"] > 0]
        got = task["predictions"][0]["regions"]
        assert [r["label"] for r in got] == [[settings.label(i["category"])] for i in kept]
        assert [r["score"] for r in got] == pytest.approx([i["score"] for i in kept], abs=1e-6)
        for region, inst in zip(got, kept):
            assert np.array_equal(masks[f"{row['image_uri']}/{region['id']}"], rle.decode(inst["segmentation"]))
            regions += 1
    assert regions == brush.exported > 10
    shapes = next(t for t in results["polygon"]["tasks"] if t["data"]["image_uri"].endswith("shapes.png"))
    assert [r["label"] for r in shapes["predictions"][0]["regions"]] == [["ring"], ["circle"], ["circle"]]
