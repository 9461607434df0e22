"""A second driver on an output a live driver is writing is refused at start, in one line,
and the first driver finishes undisturbed (a real Ray cluster, two real drivers)."""

import os
import signal

from tests.job.conftest import jpeg_images, read_rows, run_segment, small_stages, start_segment, success, wait_for

IMAGES = 16
STAGES = small_stages(actors=1)


def test_a_second_driver_on_a_live_output_is_refused_at_start(ray_cluster, slow_model_path, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, blob in jpeg_images(IMAGES).items():
        (images / name).write_bytes(blob)
    out = tmp_path / "out"
    args = ["--input", images, "--model", slow_model_path, "--output", out, "--address", ray_cluster.address, *STAGES]
    first = start_segment(*args, log=tmp_path / "first.log")
    try:
        wait_for(lambda: (out / "predictions").exists(), 120, "the first driver's first commit")
        second = run_segment(*args, check=False, timeout=60)
        assert first.poll() is None, "the first driver ended before the second started: nothing was tested"
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {out} is being written by run ") and f"(pid {first.pid} on " in last, last
        assert first.wait(timeout=180) == 0, (tmp_path / "first.log").read_text()[-5000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    rows = read_rows(out)
    assert len(rows) == IMAGES and all(r["status"] == "ok" for r in rows)
    assert success(out)["images_ok"] == IMAGES and not (out / "_lease.json").exists()
