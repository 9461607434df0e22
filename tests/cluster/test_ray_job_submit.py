"""`ray job submit` end to end on a real multi-node Ray cluster: `ray start --head` and worker
nodes as separate processes on this machine, the images, the model and the output on the local
S3 server. The job reads and writes S3 the way it would on KubeRay or `ray up`, and one test
loses a worker node (all of its processes SIGKILLed) while the job is running."""

from __future__ import annotations

import json

import pyarrow.dataset as pads
import pytest

from tests.cluster.ray_nodes import LocalCluster
from tests.conftest import REPO
from tests.job.conftest import CFG, S3Server, job_env, jpeg_images, model_heads, wait_for
from tests.job.models import slow_heads_model
from tests.onnx_models import constant_heads_model
from yolact_batch.core.metadata import ModelMetadata

JOB_TIMEOUT = 150
# Small batches and commits: many commit units, so a node can be lost between two of them.
STAGES = [
    "--batch-size",
    "2",
    "--commit-size",
    "2",
    "--read-block",
    "2",
    "--intra-op-threads",
    "1",
    "--cpus-per-actor",
    "0.5",
    "--decode-cpus",
    "0.5",
    "--stall-timeout",
    "120",
]

# The GCS declares a lost node dead after 5 failed health checks 1 s apart (Ray's default: 3 s apart).
FAST_NODE_LOSS = {"RAY_health_check_period_ms": "1000"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, bytes]:
    """The constant-head model (milliseconds per image) and the same heads behind a convolution."""
    folder = tmp_path_factory.mktemp("models")
    heads, meta = model_heads(), ModelMetadata(CFG, "raw")
    return {
        "fast.onnx": constant_heads_model(folder / "fast.onnx", heads, meta).read_bytes(),
        "slow.onnx": slow_heads_model(folder / "slow.onnx", heads, meta, channels=32).read_bytes(),
    }


@pytest.fixture
def s3(tmp_path, models, monkeypatch):
    """A fresh S3 server holding ``data/models/*.onnx``; this process gets the fake credentials."""
    for key, value in job_env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    server = S3Server(tmp_path / "s3-state")
    server.start()
    try:
        fs = server.filesystem()
        fs.mkdir("data")
        for name, blob in models.items():
            fs.pipe(f"data/models/{name}", blob)
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path):
    """A head with no CPUs (it runs the job's driver only); each test adds its worker nodes."""
    with LocalCluster(tmp_path / "ray", env=job_env(**FAST_NODE_LOSS)) as cluster:
        cluster.start_head(num_cpus=0)
        yield cluster
    assert not cluster.processes(), "processes of the cluster survived its stop"


def put_images(server: S3Server, count: int) -> list[str]:
    fs = server.filesystem()
    images = jpeg_images(count)
    for name, blob in images.items():
        fs.pipe(f"data/images/{name}", blob)
    return [f"s3://data/images/{name}" for name in sorted(images)]


def segment(server: S3Server, model: str, *stages: str) -> list[str]:
    """The entrypoint, as a user types it after `ray job submit --working-dir . --`."""
    return [
        "python",
        "jobs/segment.py",
        "--input",
        "s3://data/images/",
        "--model",
        f"s3://data/models/{model}",
        "--output",
        "s3://data/out",
        "--endpoint-url",
        server.endpoint,
        *STAGES,
        *stages,
    ]


def committed_files(server: S3Server) -> list[str]:
    try:
        names = server.filesystem().ls("data/out/predictions", refresh=True)
    except FileNotFoundError:
        return []
    return [n for n in names if n.rsplit("/", 1)[1].startswith("part-")]


def assert_exactly_once(server: S3Server, uris: list[str]) -> dict:
    """One ok row per image, read by a reader that never listed the bucket; returns ``_SUCCESS``."""
    fs = server.filesystem()
    rows = pads.dataset("data/out/predictions", format="parquet", filesystem=fs).to_table().to_pylist()
    assert sorted(r["image_uri"] for r in rows) == uris  # none lost, none twice
    assert all(r["status"] == "ok" and r["instances"] for r in rows), [r["error"] for r in rows if r["error"]]
    counts = json.loads(fs.cat_file("data/out/_SUCCESS"))
    assert counts["images"] == counts["images_ok"] == len(uris) == len(rows)
    return counts


def test_ray_job_submit_reads_and_writes_s3(cluster, s3):
    cluster.add_workers(1, num_cpus=2)
    uris = put_images(s3, 24)
    job = cluster.submit(segment(s3, "fast.onnx", "--actors", "1"), working_dir=REPO)
    status = cluster.wait_job(job, timeout=JOB_TIMEOUT)
    logs = cluster.job_logs(job)
    assert status == "SUCCEEDED", logs[-5000:]
    counts = assert_exactly_once(s3, uris)
    assert counts["processed"] == 24 and counts["skipped"] == 0
    assert "segment: 24 images (24 ok, 0 errors)" in logs  # the driver's summary, from the job's log
    assert "testing-secret-key" not in logs  # credentials come from the nodes' environment, never logged


def test_a_worker_node_lost_mid_job_still_gives_one_row_per_image(cluster, s3):
    workers = cluster.add_workers(2, num_cpus=2)
    uris = put_images(s3, 32)
    job = cluster.submit(segment(s3, "slow.onnx", "--actors", "2"), working_dir=REPO)

    def busy_worker():  # a worker node that runs a model actor once commits are being made
        holders = [w for w in workers if w.pids("ModelActor")]
        return holders[0] if holders and committed_files(s3) else None

    victim = wait_for(busy_worker, 120, "a first commit and a model actor on a worker node", every=0.1)
    actors, before = victim.pids("ModelActor"), len(committed_files(s3))
    assert cluster.job_status(job) == "RUNNING" and before < len(uris) // 2, "the job ended before the kill"
    killed = victim.kill()  # the whole node at once: raylet, agents, workers (the model actor among them)

    status = cluster.wait_job(job, timeout=JOB_TIMEOUT)
    logs = cluster.job_logs(job)
    assert status == "SUCCEEDED", logs[-5000:]
    assert killed >= 4 and actors and not victim.survivors()  # raylet, agents, model actor: all gone
    assert "has been marked dead" in logs  # the job saw the loss (Ray retried its tasks, restarted its actor)
    assert all(w.process.poll() is None for w in workers if w is not victim)
    wait_for(lambda: cluster.alive_nodes() == 2, 60, "the dashboard to count the lost node dead")
    counts = assert_exactly_once(s3, uris)
    assert counts["processed"] == len(uris)
