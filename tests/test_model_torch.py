"""``YolactModel`` and the job's resources with ``backend="torch"``: the head is built with the
settings asked for (no re-export), the driver checks on the CPU, the device follows the GPUs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.backends.factory import BackendOptions  # noqa: E402
from yolact_batch.core.detections import Detections  # noqa: E402
from yolact_batch.core.metadata import ModelMetadata  # noqa: E402
from yolact_batch.job.config import Resources  # noqa: E402
from yolact_batch.model import YolactModel  # noqa: E402
from yolact_batch.torchnet.model_file import save_model  # noqa: E402
from yolact_batch.torchnet.network import build_network  # noqa: E402
from yolact_batch.training.shapes import SHAPES_CONFIG  # noqa: E402

TORCH_CPU = BackendOptions(backend="torch", device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torch_model") / "shapes.pt"
    save_model(path, build_network(SHAPES_CONFIG), ModelMetadata(config=SHAPES_CONFIG, source="test"))
    return str(path)


def photos(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (120 + 10 * i, 160, 3), dtype=np.uint8) for i in range(count)]


def test_torch_model_file_runs_through_the_api(model_file):
    model = YolactModel(model_file, backend=TORCH_CPU, score_threshold=0.05)
    results = model(photos(3))  # two batches: 2 + 1
    assert len(results) == 3 and all(isinstance(r, Detections) for r in results)
    assert [r.image_size for r in results] == [(120, 160), (130, 160), (140, 160)]
    assert model.metadata.contract == "graph" and model.config == SHAPES_CONFIG
    assert all((r.scores > 0.05).all() for r in results)


def test_nms_settings_build_the_torch_head(model_file):
    # An exported graph model refuses these (its NMS is built in); torch builds the head with them.
    model = YolactModel(model_file, backend=TORCH_CPU, iou_threshold=0.3, top_k=50, max_detections=10)
    assert model.metadata.detect.iou_threshold == 0.3 and model.settings.detect.top_k == 50
    assert max(len(r) for r in model(photos(2))) <= 10
    greedy = YolactModel(model_file, backend=TORCH_CPU, nms="greedy")
    assert greedy.metadata.contract == "raw" and greedy.settings.detect.nms == "greedy"
    assert len(greedy(photos(1))) == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(precision="fp8"), "precision must be one of"),
        (dict(device="tpu"), "torch device must be one of"),
        (dict(compile="always"), "compile must be one of"),
    ],
)
def test_bad_torch_options_are_refused_when_built(fields, message):
    with pytest.raises(ValueError, match=message):
        BackendOptions(backend="torch", **fields)


def test_driver_checks_on_the_cpu():
    gpu = BackendOptions(backend="torch", device="cuda", precision="bf16", compile="cuda-graphs", config="yolact_base")
    on_cpu = gpu.on_cpu()
    assert (on_cpu.backend, on_cpu.device, on_cpu.precision, on_cpu.compile) == ("torch", "cpu", "fp32", "off")
    assert on_cpu.config == "yolact_base"
    assert BackendOptions(backend="tensorrt").on_cpu() == BackendOptions(intra_op_threads=1)


def test_job_device_follows_gpus_per_actor():
    auto = BackendOptions(backend="torch")
    assert Resources(backend=auto, gpus_per_actor=1).backend.device == "cuda"
    assert Resources(backend=auto).backend.device == "cpu"
    with pytest.raises(ValueError, match="--device cuda needs --gpus-per-actor > 0"):
        Resources(backend=BackendOptions(backend="torch", device="cuda"))
