"""Object storage end to end: a real S3 HTTP server on 127.0.0.1 holds the images, the model
and the output; the job runs on the Ray cluster; the server restarts in the middle."""

import json
import os
import signal

import pyarrow.dataset as pads

from tests.job.conftest import jpeg_images, small_stages, start_segment, wait_for

IMAGES = 24


def test_s3_in_s3_out_survives_a_server_restart_mid_job(ray_cluster, s3_server, slow_model_path, tmp_path):
    fs = s3_server.filesystem()
    fs.mkdir("data")  # no region: the server's default
    names = sorted(jpeg_images(IMAGES))
    for name, blob in jpeg_images(IMAGES).items():
        fs.pipe(f"data/images/{name}", blob)
    fs.pipe("data/models/slow.onnx", slow_model_path.read_bytes())

    def committed() -> list[str]:
        try:
            return [p for p in fs.ls("data/out/predictions", refresh=True) if p.rsplit("/", 1)[1].startswith("part-")]
        except FileNotFoundError:
            return []

    log = tmp_path / "job.log"
    job = start_segment(
        "--input",
        "s3://data/images/",
        "--model",
        "s3://data/models/slow.onnx",
        "--output",
        "s3://data/out",
        "--endpoint-url",
        s3_server.endpoint,
        "--address",
        ray_cluster.address,
        *small_stages(actors=2),
        log=log,
    )
    try:
        wait_for(committed, 120, "a first commit in the bucket")
        assert job.poll() is None and len(committed()) < IMAGES // 2, "the job ended before the restart"
        s3_server.restart()  # SIGTERM, then a new process on the same port with the same data
        assert job.wait(timeout=180) == 0, log.read_text()[-5000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert s3_server.restarts == 1
    text = log.read_text()
    assert "testing-secret-key" not in text and "testing-key-id" not in text  # credentials are never logged

    fs = s3_server.filesystem()  # a reader that never listed the bucket before
    rows = pads.dataset("data/out/predictions", format="parquet", filesystem=fs).to_table().to_pylist()
    uris = sorted(r["image_uri"] for r in rows)
    assert uris == [f"s3://data/images/{n}" for n in names]  # each image once: none lost, none twice
    assert all(r["status"] == "ok" and r["instances"] for r in rows), [r["error"] for r in rows if r["error"]]
    assert {r["image_id"] for r in rows} == {int(n[:12]) for n in names}
    counts = json.loads(fs.cat_file("data/out/_SUCCESS"))
    assert counts["images"] == counts["images_ok"] == IMAGES and counts["instances"] == sum(
        len(r["instances"]) for r in rows
    )
    assert json.loads(fs.cat_file("data/out/_job.json"))["model"]["digest"] == rows[0]["model"]["digest"]
