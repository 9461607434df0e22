"""Storage outages during reads, on a real Ray cluster and a real S3 server behind a proxy
that drops and refuses every connection for a while (``tcp_proxy.OutageProxy``), started
by the reads themselves. An outage shorter than the retry window leaves no trace; a longer
one fails the run without recording any image as bad, and a plain rerun completes every image."""

import json
import os
import signal

import pytest

from tests.job.conftest import jpeg_images, read_rows, start_segment
from tests.job.tcp_proxy import OutageProxy

IMAGES = 12
STAGES = [
    "--batch-size",
    "2",
    "--commit-size",
    "2",
    "--actors",
    "1",
    "--cpus-per-actor",
    "0.5",
    "--read-block",
    "2",
    "--stall-timeout",
    "120",
]


@pytest.fixture
def bucket(s3_server, model_path, tmp_path):
    fs = s3_server.filesystem()
    fs.mkdir("data")
    for name, blob in jpeg_images(IMAGES).items():
        fs.pipe(f"data/images/{name}", blob)
    proxy = OutageProxy(s3_server.port)
    try:
        yield fs, proxy
    finally:
        proxy.close()


def segment(proxy, ray_cluster, model_path, tmp_path, window, log):
    return start_segment(
        "--input",
        "s3://data/images/",
        "--model",
        model_path,
        "--output",
        "s3://data/out",
        "--endpoint-url",
        proxy.endpoint,
        "--io-retry-window",
        str(window),
        "--address",
        ray_cluster.address,
        *STAGES,
        log=tmp_path / log,
    )


def finish(job, log, timeout=240) -> int:
    try:
        return job.wait(timeout=timeout)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)


def rows(fs):
    fs.invalidate_cache()
    return read_rows("data/out", filesystem=fs) if fs.exists("data/out/predictions") else []


def test_an_outage_shorter_than_the_retry_window_leaves_no_error_row(bucket, ray_cluster, model_path, tmp_path):
    fs, proxy = bucket
    proxy.outage_after("GET /data/images/", 3, 10)
    job = segment(proxy, ray_cluster, model_path, tmp_path, 60, "job.log")
    assert finish(job, "job.log") == 0, (tmp_path / "job.log").read_text()[-5000:]
    assert len(proxy.outages) == 1, "the outage never started"
    committed = rows(fs)
    assert len(committed) == IMAGES and all(r["status"] == "ok" for r in committed), [r["error"] for r in committed]
    assert json.loads(fs.cat_file("data/out/_SUCCESS"))["images_ok"] == IMAGES


def test_an_outage_longer_than_the_window_fails_the_run_and_a_rerun_completes_every_image(
    bucket, ray_cluster, model_path, tmp_path
):
    fs, proxy = bucket
    proxy.outage_after("GET /data/images/", 3, 45)
    job = segment(proxy, ray_cluster, model_path, tmp_path, 3, "first.log")
    code = finish(job, "first.log")
    text = (tmp_path / "first.log").read_text()
    assert code != 0 and proxy.down(), f"the run ended ({code}) after the outage: nothing was tested\n{text[-3000:]}"
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: reading s3://data/images/") and "storage unavailable for 3 s" in last, text[-3000:]
    assert "rerun the same command" in last and "Traceback" not in last
    assert all(r["status"] == "ok" for r in rows(fs))  # no image recorded as bad
    assert not fs.exists("data/out/_SUCCESS")
    proxy.outage(0)  # the storage is back
    rerun = segment(proxy, ray_cluster, model_path, tmp_path, 60, "rerun.log")
    assert finish(rerun, "rerun.log") == 0, (tmp_path / "rerun.log").read_text()[-5000:]
    committed = rows(fs)
    assert len(committed) == IMAGES and all(r["status"] == "ok" for r in committed)
    assert json.loads(fs.cat_file("data/out/_SUCCESS"))["images_ok"] == IMAGES
