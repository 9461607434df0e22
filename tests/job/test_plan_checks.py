"""Errors a user can fix, found before any cluster work, each one line naming the file and
the fix: a file given as the output, a folder as the model, the input inside the output, a
corrupt committed file, and a second driver on an output another live driver is writing."""

import json
import os
import socket
import subprocess
import time

import pytest

from tests.job.conftest import jpeg_images
from yolact_batch.io.commit import STALE_S, CorruptOutput, OutputBusy, OutputStore, _start_time
from yolact_batch.job.config import JobConfig
from yolact_batch.job.plan import prepare


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, blob in jpeg_images(2).items():
        (folder / name).write_bytes(blob)
    return folder


def config(images, model, out, **kw):
    return JobConfig(input=str(images), output=str(out), model=str(model), **kw)


def test_an_output_that_is_a_file_a_model_that_is_a_folder_and_an_input_inside_the_output(tmp_path, images, model_path):
    (tmp_path / "out.txt").write_text("x")
    with pytest.raises(ValueError, match=r"output .*out.txt is a file; --output takes a folder"):
        prepare(config(images, model_path, tmp_path / "out.txt"))
    with pytest.raises(ValueError, match=r"model .*images is a directory; --model takes the .onnx file"):
        prepare(config(images, images, tmp_path / "out"))
    with pytest.raises(ValueError, match=r"input .*images/sub is inside the output .*images; .*outside the input"):
        prepare(config(images / "sub", model_path, images))


def test_a_corrupt_committed_file_is_named_with_the_fix(tmp_path, images, model_path):
    out = tmp_path / "out"
    plan = prepare(config(images, model_path, out))
    plan.lease.release()
    (out / "predictions").mkdir()
    (out / "predictions" / "part-0123.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(
        CorruptOutput,
        match=r"out/predictions/part-0123.parquet: a committed file that cannot be read "
        r".*delete it and rerun",
    ):
        prepare(config(images, model_path, out))


def lease(out, run_id, **record):
    (out / "_lease.json").write_text(json.dumps({"run_id": run_id, "heartbeat": time.time(), **record}))


def test_a_second_driver_is_refused_while_the_first_lives(tmp_path, images, model_path):
    out = tmp_path / "out"
    plan = prepare(config(images, model_path, out))
    plan.lease.release()
    assert not (out / "_lease.json").exists()
    run_id = json.loads((out / "_job.json").read_text())["run_id"]
    other = subprocess.Popen(["sleep", "60"])  # a live process standing in for the first driver
    try:
        lease(out, run_id, host=socket.gethostname(), pid=other.pid, pid_start=_start_time(other.pid))
        with pytest.raises(OutputBusy, match=rf"is being written by run {run_id} \(pid {other.pid} on "):
            prepare(config(images, model_path, out))
    finally:
        other.kill()
        other.wait()
    prepare(config(images, model_path, out)).lease.release()  # that driver is gone: taken over at once


@pytest.mark.parametrize("age, busy", [(5, True), (STALE_S + 5, False)])
def test_a_driver_on_another_host_is_live_while_its_heartbeat_is_fresh(tmp_path, images, model_path, age, busy):
    out = tmp_path / "out"
    prepare(config(images, model_path, out)).lease.release()
    run_id = json.loads((out / "_job.json").read_text())["run_id"]
    (out / "_lease.json").write_text(
        json.dumps({"run_id": run_id, "host": "elsewhere", "pid": 1, "heartbeat": time.time() - age})
    )
    store = OutputStore(str(out))
    if busy:
        with pytest.raises(OutputBusy, match="on elsewhere, heartbeat 5 s ago"):
            store.check_not_busy()
    else:
        store.check_not_busy()


def test_the_lease_beats_while_held_and_goes_with_its_run(tmp_path, images, model_path, monkeypatch):
    monkeypatch.setattr("yolact_batch.io.commit.HEARTBEAT_S", 0.2)
    out = tmp_path / "out"
    plan = prepare(config(images, model_path, out))
    first = json.loads((out / "_lease.json").read_text())
    time.sleep(0.6)
    second = json.loads((out / "_lease.json").read_text())
    assert first["pid"] == os.getpid() and second["heartbeat"] > first["heartbeat"]
    plan.lease.release()
    assert not (out / "_lease.json").exists()
