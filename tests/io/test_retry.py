"""One retry policy for every storage call, against a real S3 server behind a proxy that
drops and refuses connections: an outage inside the window is invisible, a longer one
raises ``StorageUnavailable`` (never an image's error), an object's own fault is not retried."""

import time

import pyarrow as pa
import pytest

from yolact_batch.io.commit import OutputStore, Superseded
from yolact_batch.io.reads import fetch
from yolact_batch.io.schema import ModelRef, error_row, rows_to_table
from yolact_batch.io.sources import list_inputs
from yolact_batch.io.storage import FIRST_BACKOFF_S, StorageOptions, StorageUnavailable, retry

IMAGES = {f"{i:012d}.jpg": bytes([i]) * 2000 for i in range(1, 7)}


def put_images(server):
    fs = server.filesystem()
    fs.mkdir("data")
    for name, blob in IMAGES.items():
        fs.pipe(f"data/images/{name}", blob)
    fs.pipe("data/images/missing-later.jpg", b"x")
    return fs


def test_retry_gives_up_after_the_window_and_not_before():
    calls = []

    def failing():
        calls.append(time.monotonic())
        raise ConnectionError("refused")

    with pytest.raises(
        StorageUnavailable,
        match=r"reading x: storage unavailable for 1.5 s \(\d+ attempts; last: "
        r"ConnectionError: refused\); nothing was recorded",
    ):
        retry(failing, "reading x", 1.5)
    assert 1.5 <= calls[-1] - calls[0] < 1.5 + FIRST_BACKOFF_S
    assert [round(b - a, 1) for a, b in zip(calls, calls[1:])][:2] == [0.5, 1.0]  # backoff doubles
    calls.clear()
    with pytest.raises(FileNotFoundError):
        retry(lambda: calls.append(1) or open("/nonexistent/x"), "reading x", 30)
    assert calls == [1]  # an object's own fault: no retry


def test_an_outage_shorter_than_the_window_leaves_no_error(s3):
    server, proxy = s3
    put_images(server)
    storage = StorageOptions(endpoint_url=proxy.endpoint, retry_window_s=20)
    items = list_inputs("s3://data/images/", storage=storage).items
    proxy.outage_after("GET /data/images/", 2, 4)  # begins on the second image's GET
    start = time.monotonic()
    data, errors = fetch(items, storage, threads=2)
    assert proxy.outages and time.monotonic() - start >= 3.5, "the outage did not happen during the reads"
    assert errors == [None] * items.num_rows
    assert dict(zip(items["image_uri"].to_pylist(), data)) == {
        **{f"s3://data/images/{n}": b for n, b in IMAGES.items()},
        "s3://data/images/missing-later.jpg": b"x",
    }


def test_an_outage_longer_than_the_window_raises_and_records_no_error(s3):
    server, proxy = s3
    fs = put_images(server)
    storage = StorageOptions(endpoint_url=proxy.endpoint, retry_window_s=2)
    items = list_inputs("s3://data/images/", storage=storage).items
    fs.rm("data/images/missing-later.jpg")  # the object's own fault: an error row, at once
    data, errors = fetch(items.slice(items.num_rows - 1), storage)
    assert "not found" in errors[0]
    proxy.outage(30)
    start = time.monotonic()
    # Reads run in threads: whichever image's read gives up first is named (during the outage the
    # deleted one cannot be told from the others either).
    with pytest.raises(StorageUnavailable, match=r"reading s3://data/images/[\w.-]+\.jpg: storage unavailable for 2 s"):
        fetch(items, storage)
    assert 2 <= time.monotonic() - start < 10  # botocore adds no retries of its own


def test_commits_and_the_manifest_ride_out_an_outage_and_fencing_still_applies(s3):
    server, proxy = s3
    server.filesystem().mkdir("out")
    store = OutputStore("s3://out/job", StorageOptions(endpoint_url=proxy.endpoint, retry_window_s=20))
    store.write_json("_job.json", {"run_id": "r1"})
    ref = ModelRef(name="m", digest="sha256:0")
    rows = rows_to_table([error_row(image_uri="s3://data/a.jpg", image_id=None, error="x", model=ref)])
    proxy.outage(3)
    assert store.commit(rows, "r1")["rows"] == 1
    assert store.committed()["image_uri"].to_pylist() == ["s3://data/a.jpg"]
    with pytest.raises(Superseded):  # not retried for the window
        start = time.monotonic()
        store.commit(rows, "r0")
    assert time.monotonic() - start < 2
    assert isinstance(rows, pa.Table)
