"""Awkward inputs on a real Ray cluster: a folder holding a FIFO, dangling links, hidden and
AppleDouble files, a name that is not UTF-8, odd digits, date-like names, formats OpenCV reads
beyond the usual suffixes, a JPEG with data after its end, a TGA, tar and Parquet files, a
symlinked folder, and the job's own output folder inside it. The job finishes in under a
minute, commits every image, and reports every entry it did not read by kind."""

import os
import time

import cv2
import numpy as np
import pytest

from tests.job.conftest import jpeg_images, read_rows, run_segment, success

GOOD = jpeg_images(3)
PIXELS = (np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)
MOTION_PHOTO = next(iter(GOOD.values())) + b"\0\0MotionPhoto_Data" + bytes(range(256)) * 64
STAGES = [
    "--batch-size",
    "4",
    "--commit-size",
    "8",
    "--actors",
    "1",
    "--cpus-per-actor",
    "0.5",
    "--stall-timeout",
    "120",
]
NOT_READ = {
    "dangling link": ["dangling.jpg"],
    "hidden": [".DS_Store", "._000000000001.jpg"],
    "inside the output": ["results/"],
    "name not UTF-8": ["caf\\xe9.jpg"],
    "not an image suffix (--image-suffixes widens the list)": ["notes.txt", "old.tga"],
    "special file": ["fifo.jpg"],
    "tar shard (read shards with --input-format tar)": ["shard.tar"],
}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, ray_cluster, model_path):
    root = tmp_path_factory.mktemp("awkward")
    folder = root / "in[2024]"  # a folder whose path has glob characters
    (folder / "sub").mkdir(parents=True)
    for name, blob in GOOD.items():
        (folder / name).write_bytes(blob)
    (folder / "motion.jpg").write_bytes(MOTION_PHOTO)
    (folder / "².jpg").write_bytes(cv2.imencode(".jpg", PIXELS)[1].tobytes())
    for name in ("2023.01.05.jpg", "2023.01.06.jpg"):
        (folder / "sub" / name).write_bytes(cv2.imencode(".jpg", PIXELS)[1].tobytes())
    (folder / "frame.ppm").write_bytes(cv2.imencode(".ppm", PIXELS)[1].tobytes())
    (folder / "photo.jfif").write_bytes(cv2.imencode(".jpg", PIXELS)[1].tobytes())
    (folder / "anim.gif").write_bytes(_gif())
    (folder / "old.tga").write_bytes(b"\0\0\2" + bytes(15) + bytes(12))
    (folder / "notes.txt").write_text("not an image")
    (folder / "shard.tar").write_bytes(bytes(1024))
    (folder / "._000000000001.jpg").write_bytes(b"\0\5\x16\7")
    (folder / ".DS_Store").write_bytes(b"x")
    os.mkfifo(folder / "fifo.jpg")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"x")
    (root / "shared").mkdir()
    (root / "shared" / "linked.png").write_bytes(cv2.imencode(".png", PIXELS)[1].tobytes())
    os.symlink(root / "shared", folder / "linked")
    out = folder / "results"  # the output inside the input
    args = ["--input", folder, "--model", model_path, "--output", out, "--address", ray_cluster.address, *STAGES]
    start = time.monotonic()
    first = run_segment(*args, timeout=120)
    elapsed = time.monotonic() - start
    (out / "overlays").mkdir()
    (out / "overlays" / "000000000001.png").write_bytes(cv2.imencode(".png", PIXELS)[1].tobytes())
    again = run_segment(*args, timeout=120)
    return folder, out, first, elapsed, again, {r["image_uri"][len(str(folder)) + 1 :]: r for r in read_rows(out)}


def _gif() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(PIXELS).save(buffer, "GIF")
    return buffer.getvalue()


READ = sorted(
    [
        *GOOD,
        "motion.jpg",
        "².jpg",
        "sub/2023.01.05.jpg",
        "sub/2023.01.06.jpg",
        "frame.ppm",
        "photo.jfif",
        "anim.gif",
        "linked/linked.png",
    ]
)


def test_a_fifo_and_every_odd_entry_leave_the_job_finishing_within_a_minute(awkward):
    folder, out, first, elapsed, _, rows = awkward
    assert elapsed < 60, f"the job took {elapsed:.0f}s"
    assert sorted(rows) == READ
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items() if r["error"]}


def test_every_entry_not_read_is_reported_by_kind_in_the_log_and_success(awkward):
    folder, out, first, _, _, _ = awkward
    not_read = success(out)["not_read"]
    assert {k: v["examples"] for k, v in not_read.items()} == NOT_READ
    assert {k: v["count"] for k, v in not_read.items()} == {k: len(v) for k, v in NOT_READ.items()}
    assert "segment: 8 input entries not read: 1 dangling link (dangling.jpg), 2 hidden" in first.stderr
    assert "input entries not read: 1 dangling link" in first.stderr.splitlines()[-1]  # the summary line


def test_ids_only_from_coco_names_and_a_jpeg_with_trailing_data_is_decoded(awkward):
    rows = awkward[-1]
    assert {k: r["image_id"] for k, r in rows.items() if r["image_id"] is not None} == {n: int(n[:12]) for n in GOOD}
    assert rows["motion.jpg"]["status"] == "ok" and rows["motion.jpg"]["instances"]


def test_the_job_never_reads_its_own_output(awkward):
    folder, out, _, _, again, rows = awkward
    assert f"all {len(READ)} images already committed" in again.stderr
    assert success(out)["images"] == len(READ) and not any(k.startswith("results/") for k in rows)


def test_predict_reads_what_segment_reads(awkward, model_path, tmp_path):
    from yolact_batch.cli.main import main

    folder, out, *_ = awkward
    preds = tmp_path / "preds.jsonl"
    import json

    assert main(["predict", "--model", str(model_path), str(folder), "--output", str(preds)]) == 0
    uris = sorted(json.loads(line)["image_uri"][len(str(folder)) + 1 :] for line in preds.read_text().splitlines())
    assert uris == sorted([*READ, "results/overlays/000000000001.png"])  # predict has no output folder to leave out
