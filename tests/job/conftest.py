"""Fixtures of the job tests: a model, real JPEGs, a real S3 server and a real Ray cluster.

Every job runs as a subprocess with a timeout (``run_segment``), so a stuck pipeline fails
the test instead of hanging it; servers and clusters are stopped by the PIDs they got.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.dataset as pads
import pytest

from tests.conftest import COCO_SUBSET, GOLDEN, REPO, golden_case
from tests.job.models import slow_heads_model
from tests.onnx_models import constant_heads_model
from yolact_batch.core.configs import get_config
from yolact_batch.core.heads import GRAPH_OUTPUTS
from yolact_batch.core.masks import assemble_masks, crop_windows
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.core.postprocess import detect
from yolact_batch.core.priors import make_priors

CFG = get_config("yolact_resnet50")
# Fake credentials: s3fs/botocore read them from the environment, as they would real ones.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Ray 2.60 enables token auth by default; the test cluster and its clients agree to disable it.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
JOB_TIMEOUT = 150


def job_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    return {**env, **AWS_ENV, **RAY_ENV, "PYTHONUNBUFFERED": "1", **extra}


def model_heads() -> dict[str, np.ndarray]:
    """Golden raw heads when the shared data is there, else fixed random heads of the same shapes."""
    if GOLDEN.exists():
        return golden_case("yolact_resnet50", 184324)[0]
    rng = np.random.default_rng(7)
    priors, classes, coeffs = 19248, 81, 32
    conf = rng.random((1, priors, classes), np.float32) ** 8
    return {
        "loc": rng.normal(0, 0.5, (1, priors, 4)).astype(np.float32),
        "conf": (conf / conf.sum(-1, keepdims=True)).astype(np.float32),
        "mask": np.tanh(rng.normal(0, 1, (1, priors, coeffs))).astype(np.float32),
        "proto": np.maximum(rng.normal(0, 1, (1, 138, 138, coeffs)), 0).astype(np.float32),
    }


@pytest.fixture(scope="package")
def model_path(tmp_path_factory) -> Path:
    """A real (tiny, fast) ONNX model whose heads are constant: raw contract, yolact_resnet50."""
    return constant_heads_model(tmp_path_factory.mktemp("model") / "raw.onnx", model_heads(), ModelMetadata(CFG, "raw"))


def graph_heads(raw: dict[str, np.ndarray], k: int = 100) -> dict[str, np.ndarray]:
    """What a ``graph`` contract model outputs for these raw heads: Detect, then each mask
    assembled and cropped, padded to ``k`` detections."""
    priors = make_priors(CFG.priors)
    boxes, classes, scores, prior_idx = detect(raw["loc"][0], raw["conf"][0], priors)
    masks = assemble_masks(raw["proto"][0], raw["mask"][0][prior_idx])
    for mask, (r0, r1, c0, c1) in zip(masks, crop_windows(boxes, *masks.shape[1:])):
        outside = np.ones(mask.shape, bool)
        outside[r0:r1, c0:c1] = False
        mask[outside] = 0
    n = len(scores)
    padded = {
        "boxes": np.zeros((k, 4), np.float32),
        "scores": np.zeros(k, np.float32),
        "classes": np.zeros(k, np.int64),
        "masks": np.zeros((k, *masks.shape[1:]), np.float32),
    }
    for name, value in zip(padded, (boxes, scores, classes, masks)):
        padded[name][:n] = value
    return {**{name: value[None] for name, value in padded.items()}, "num_detections": np.array([n], np.int64)}


@pytest.fixture(scope="package")
def graph_model_path(tmp_path_factory) -> Path:
    """The same network outputs as ``model_path`` behind the ``graph`` contract."""
    path = tmp_path_factory.mktemp("model") / "graph.onnx"
    return constant_heads_model(path, graph_heads(model_heads()), ModelMetadata(CFG, "graph"), names=GRAPH_OUTPUTS)


@pytest.fixture(scope="package")
def slow_model_path(tmp_path_factory) -> Path:
    """The same heads behind a real convolution: about 0.1 s per image on one thread."""
    path = tmp_path_factory.mktemp("model") / "slow.onnx"
    return slow_heads_model(path, model_heads(), ModelMetadata(CFG, "raw"), channels=32)


def jpeg_images(count: int) -> dict[str, bytes]:
    """``count`` real JPEGs by file name: COCO val2017 when the shared subset is there, else made here."""
    folder = COCO_SUBSET / "val2017"
    if folder.exists():
        files = sorted(folder.glob("*.jpg"))[:count]
        if len(files) == count:
            return {f.name: f.read_bytes() for f in files}
    rng = np.random.default_rng(3)
    images = {}
    for i in range(count):
        h, w = int(rng.integers(200, 480)), int(rng.integers(200, 640))
        image = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(5):
            x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            cv2.rectangle(
                image,
                (x, y),
                (x + int(rng.integers(10, 120)), y + int(rng.integers(10, 120))),
                rng.integers(0, 255, 3).tolist(),
                -1,
            )
        images[f"{900000000 + i:012d}.jpg"] = cv2.imencode(".jpg", image)[1].tobytes()
    return images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_stages(actors: int) -> list[str]:
    """``segment`` stage options that give a few images many commit units and read blocks, on
    ``actors`` model actors of half a CPU each, with one ONNX Runtime thread."""
    return [
        "--batch-size", "2", "--commit-size", "2", "--actors", str(actors), "--cpus-per-actor", "0.5",
        "--intra-op-threads", "1", "--read-block", "2", "--stall-timeout", "120",
    ]  # fmt: skip


def segment_cmd(*args: str, script: bool = False) -> list[str]:
    entry = [str(REPO / "jobs" / "segment.py")] if script else ["-m", "yolact_batch.cli", "segment"]
    return [sys.executable, *entry, *map(str, args)]


def run_segment(
    *args: str, timeout: float = JOB_TIMEOUT, script: bool = False, cwd: Path = REPO, check: bool = True
) -> subprocess.CompletedProcess:
    """Run one job to the end in its own process; fail (not hang) past ``timeout``."""
    result = subprocess.run(
        segment_cmd(*args, script=script), capture_output=True, text=True, timeout=timeout, env=job_env(), cwd=cwd
    )
    if check and result.returncode != 0:
        raise AssertionError(f"segment exited {result.returncode}:\n{result.stderr[-6000:]}")
    return result


def start_segment(*args: str, log: Path, script: bool = False) -> subprocess.Popen:
    """Start a job in the background (its output goes to ``log``)."""
    return subprocess.Popen(
        segment_cmd(*args, script=script),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=job_env(),
        cwd=REPO,
        start_new_session=True,
    )


def read_rows(output: str | Path, filesystem=None) -> list[dict]:
    """Every committed row, read the way a user would (pyarrow.dataset over OUTPUT/predictions)."""
    base = str(output).rstrip("/") + "/predictions"
    return pads.dataset(base, format="parquet", filesystem=filesystem).to_table().to_pylist()


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def success(output: Path) -> dict:
    return json.loads((output / "_SUCCESS").read_text())


# --- the S3 server ---------------------------------------------------------------------


@dataclass
class S3Server:
    """``tests/job/s3_server.py`` (moto + snapshot) on 127.0.0.1, started and stopped by PID."""

    state: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.state.parent / f"s3_server.{self.restarts}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.job.s3_server", "--port", str(self.port), "--state", str(self.state)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=job_env(),
        )
        wait_for(self._up, 30, f"the S3 server on port {self.port}", every=0.05)

    def _up(self) -> bool:
        assert self.process.poll() is None, "the S3 server exited at start"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=AWS_ENV["AWS_ACCESS_KEY_ID"],
            secret=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            client_kwargs={"endpoint_url": self.endpoint},
            skip_instance_cache=True,
        )


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """A fresh server; this process gets the fake credentials too (for in-process reads)."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    server = S3Server(tmp_path / "s3-state")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the Ray cluster -------------------------------------------------------------------


@dataclass
class RayCluster:
    """A head and two worker nodes on this machine (``ray.cluster_utils.Cluster``)."""

    cluster: object

    @property
    def address(self) -> str:
        return self.cluster.address

    def raylet_pids(self) -> set[int]:
        return {n.all_processes["raylet"][0].process.pid for n in self.cluster.list_all_nodes()}

    def worker_pids(self, title: str) -> list[int]:
        """PIDs of this cluster's worker processes whose title contains ``title``."""
        raylets, found = self.raylet_pids(), []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if title in cmdline and ppid in raylets:
                found.append(int(entry.name))
        return found


@pytest.fixture(scope="package")
def ray_cluster():
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in {**AWS_ENV, **RAY_ENV}}
    os.environ.update({**AWS_ENV, **RAY_ENV})  # inherited by the nodes' processes, hence their workers
    try:
        node = dict(object_store_memory=400 * 1024**2, include_dashboard=False)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, **node))
        for _ in range(2):
            cluster.add_node(num_cpus=2, **node)
        cluster.wait_for_nodes()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield RayCluster(cluster)
    finally:
        cluster.shutdown()
