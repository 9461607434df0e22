"""Faults on a real Ray cluster (a head and two worker nodes): a model actor's process is
killed, the driver is killed. Either way every image ends up in exactly one row."""

import os
import signal

import pyarrow.parquet as pq
import pytest

from tests.job.conftest import jpeg_images, read_rows, run_segment, small_stages, start_segment, success, wait_for

IMAGES = 32
# Two actors on a CPU cluster, one ONNX Runtime thread each, small batches and commits:
# many commit units, and a model slow enough (~0.2 s per image) to act in the middle.
STAGES = small_stages(actors=2)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, blob in jpeg_images(IMAGES).items():
        (folder / name).write_bytes(blob)
    return folder


def committed_files(out):
    folder = out / "predictions"
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-")) if folder.exists() else []


def committed_rows(out) -> int:
    return sum(pq.read_metadata(p).num_rows for p in committed_files(out))


def assert_exactly_once(out, images):
    rows = read_rows(out)
    uris = [r["image_uri"] for r in rows]
    assert len(uris) == len(set(uris)) == IMAGES, f"{len(uris)} rows for {len(set(uris))} images"
    assert set(uris) == {str(p) for p in images.iterdir()}
    assert all(r["status"] == "ok" and len(r["instances"]) > 0 for r in rows)
    return rows


def test_killing_a_model_actor_process_mid_job(ray_cluster, slow_model_path, images, tmp_path):
    out = tmp_path / "out"
    earlier = set(ray_cluster.worker_pids("ModelActor"))  # an earlier job's actors may still be exiting
    job = start_segment(
        "--input",
        images,
        "--model",
        slow_model_path,
        "--output",
        out,
        "--address",
        ray_cluster.address,
        *STAGES,
        log=tmp_path / "job.log",
    )
    try:
        wait_for(lambda: committed_files(out), 120, "a first commit")
        victims = wait_for(lambda: sorted(set(ray_cluster.worker_pids("ModelActor")) - earlier), 30, "a model actor")
        os.kill(victims[0], signal.SIGKILL)
        assert committed_rows(out) < IMAGES, "the job ended before the kill: nothing was tested"
        assert job.wait(timeout=180) == 0, (tmp_path / "job.log").read_text()[-5000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not os.path.exists(f"/proc/{victims[0]}")
    assert_exactly_once(out, images)
    counts = success(out)
    assert counts["images"] == counts["images_ok"] == counts["processed"] == IMAGES


def test_killing_the_driver_then_rerunning_finishes_without_redoing_commits(
    ray_cluster, slow_model_path, images, tmp_path
):
    out = tmp_path / "out"
    args = ["--input", images, "--model", slow_model_path, "--output", out, "--address", ray_cluster.address, *STAGES]
    job = start_segment(*args, log=tmp_path / "first.log", script=True)  # jobs/segment.py, as `ray job submit` runs it
    try:
        wait_for(lambda: len(committed_files(out)) >= 3, 120, "three commits")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL and not (out / "_SUCCESS").exists()
    before = {p.name: p.stat().st_mtime_ns for p in committed_files(out)}
    done = committed_rows(out)
    assert 0 < done < IMAGES, "the job ended before the kill: nothing was tested"

    rerun = run_segment(*args, script=True)
    after = {p.name: p.stat().st_mtime_ns for p in committed_files(out)}
    assert all(after.get(name) == mtime for name, mtime in before.items()), "a committed file was rewritten"
    rows = assert_exactly_once(out, images)
    counts = success(out)
    assert counts["skipped"] >= done and counts["skipped"] + counts["processed"] == IMAGES
    assert counts["images"] == len(rows) == IMAGES and counts["files"] == len(after)
    assert f"skipped {counts['skipped']} already committed" in rerun.stderr
