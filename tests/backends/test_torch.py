"""The torch backend on the CPU: loading (official .pth, our model file), options, errors,
the graph and raw contracts, empty batches and streaming.

Golden parity end to end (``predict --backend torch`` against the golden JSON, ``segment``
against ONNX Runtime) lives in tests/cli; these tests use the small ``yolact_shapes`` layout
with seeded random weights, which runs in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from yolact_batch.backends.torch import TorchBackend, TorchOptions, resolve_device  # noqa: E402
from yolact_batch.core.configs import get_config  # noqa: E402
from yolact_batch.core.heads import GraphHeads, RawHeads  # noqa: E402
from yolact_batch.core.metadata import ModelMetadata  # noqa: E402
from yolact_batch.core.settings import DetectSettings, InferenceRequest  # noqa: E402
from yolact_batch.torchnet.graph import GraphHead  # noqa: E402
from yolact_batch.torchnet.model_file import read_weights, save_model  # noqa: E402
from yolact_batch.torchnet.network import build_network  # noqa: E402
from yolact_batch.training.shapes import SHAPES_CONFIG  # noqa: E402

SIDE = SHAPES_CONFIG.input_size


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network(SHAPES_CONFIG)


@pytest.fixture(scope="module")
def official_bytes(network, tmp_path_factory) -> bytes:
    """The small network saved as an official checkpoint is: a bare state dict."""
    path = tmp_path_factory.mktemp("pth") / "shapes.pth"
    torch.save(network.state_dict(), path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_file(network, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("pt") / "shapes.pt"
    detect = DetectSettings(top_k=50, max_detections=20)
    save_model(path, network, ModelMetadata(config=SHAPES_CONFIG, detect=detect, source="test"))
    return path.read_bytes()


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, SIDE, SIDE)).astype(np.float32)


def reference(network, batch: np.ndarray, detect: DetectSettings) -> tuple:
    """The same computation written out: network forward, then GraphHead, float32, no backend."""
    with torch.no_grad():
        return tuple(t.numpy() for t in GraphHead(SHAPES_CONFIG, detect)(*network(torch.from_numpy(batch))))


def test_official_checkpoint_with_config_equals_network_and_head(network, official_bytes):
    backend = TorchBackend(
        official_bytes, origin="shapes.pth", config=SHAPES_CONFIG, options=TorchOptions(device="cpu")
    )
    batch = images(2)
    heads = backend(batch)
    assert isinstance(heads, GraphHeads) and backend.metadata.contract == "graph"
    assert backend.metadata.detect == DetectSettings() and backend.device == "cpu"
    for got, want in zip(vars(heads).values(), reference(network, batch, DetectSettings())):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_model_file_carries_config_and_detect_settings(network, model_file):
    weights = read_weights(model_file, origin="shapes.pt")
    assert weights.metadata.config == SHAPES_CONFIG and weights.metadata.detect.max_detections == 20
    backend = TorchBackend(model_file, origin="shapes.pt", options=TorchOptions(device="cpu"))
    assert backend.metadata.config == SHAPES_CONFIG
    heads = backend(images(1))
    assert heads.scores.shape == (1, 20)
    np.testing.assert_allclose(heads.scores, reference(network, images(1), weights.metadata.detect)[1], atol=1e-6)


def test_greedy_nms_returns_raw_heads(network, official_bytes):
    backend = TorchBackend(official_bytes, origin="shapes.pth", config=SHAPES_CONFIG,
                           request=InferenceRequest(nms="greedy"), options=TorchOptions(device="cpu"))  # fmt: skip
    heads = backend(images(2))
    assert isinstance(heads, RawHeads) and backend.metadata.contract == "raw"
    with torch.no_grad():
        loc, conf, mask, proto = (t.numpy() for t in network(torch.from_numpy(images(2))))
    np.testing.assert_allclose(heads.conf, conf, atol=1e-6)
    np.testing.assert_allclose(heads.proto, proto, atol=1e-6)


def test_empty_batches_and_stream_keep_order(official_bytes):
    backend = TorchBackend(
        official_bytes, origin="shapes.pth", config=SHAPES_CONFIG, options=TorchOptions(device="cpu")
    )
    batch = images(3)
    empty = backend(batch[:0])
    shapes = [a.shape for a in vars(empty).values() if a is not None]
    assert shapes == [(0, 100, 4), (0, 100), (0, 100), (0, 100, 64, 64), (0,)] and empty.mask_scores is None
    assert empty.classes.dtype == np.int64 and empty.masks.dtype == np.float32
    streamed = list(backend.stream([batch[:1], batch[:0], batch[1:]]))
    assert [len(h) for h in streamed] == [1, 0, 2]
    together = backend(batch)
    np.testing.assert_allclose(np.concatenate([streamed[0].scores, streamed[2].scores]), together.scores, atol=1e-5)


def test_channels_last_on_cpu_is_close(official_bytes):
    plain = TorchBackend(official_bytes, origin="x", config=SHAPES_CONFIG, options=TorchOptions(device="cpu"))
    nhwc = TorchBackend(official_bytes, origin="x", config=SHAPES_CONFIG,
                        options=TorchOptions(device="cpu", channels_last=True))  # fmt: skip
    batch = images(1)
    np.testing.assert_allclose(nhwc(batch).masks, plain(batch).masks, atol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(device="gpu"), "torch device must be one of"),
        (dict(device="cuda:x"), "torch device must be one of"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(compile="jit"), "compile must be one of"),
        (dict(threads=0), "threads must be >= 1"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TorchOptions(**options)


def test_cuda_graphs_on_cpu_refused(official_bytes):
    with pytest.raises(ValueError, match="cuda-graphs.*needs a CUDA device"):
        TorchBackend(
            official_bytes, origin="x", config=SHAPES_CONFIG, options=TorchOptions(device="cpu", compile="cuda-graphs")
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="torch device 'cuda' requested but .*use --device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_custom_checkpoint_without_config_asks_for_its_classes(official_bytes):
    # The shapes model's network is read from the weights; its 3 class names are not in them.
    with pytest.raises(
        ValueError, match=r"shapes\.pth: checkpoint predicts \d+ classes .*yolact-batch export --checkpoint"
    ):
        TorchBackend(official_bytes, origin="shapes.pth", options=TorchOptions(device="cpu"))


def test_wrong_config_names_the_file_and_the_mismatch(official_bytes):
    with pytest.raises(ValueError, match=r"shapes\.pth: weights do not match config 'yolact_resnet50'"):
        TorchBackend(official_bytes, origin="shapes.pth", config=get_config("yolact_resnet50"))


def test_model_file_with_another_config_is_refused(model_file):
    with pytest.raises(ValueError, match=r"shapes\.pt: the model file is config 'yolact_shapes', not 'yolact_base'"):
        TorchBackend(model_file, origin="shapes.pt", config=get_config("yolact_base"))


def test_not_a_checkpoint_names_the_file():
    with pytest.raises(ValueError, match=r"junk\.pth: cannot read it as a PyTorch checkpoint"):
        TorchBackend(b"garbage bytes", origin="junk.pth", config=SHAPES_CONFIG)


def test_graph_contract_refuses_greedy(official_bytes):
    with pytest.raises(ValueError, match="Fast NMS only"):
        TorchBackend(
            official_bytes, origin="x", config=SHAPES_CONFIG, request=InferenceRequest(nms="greedy"), contract="graph"
        )


def test_wrong_input_shape_is_refused(official_bytes):
    backend = TorchBackend(official_bytes, origin="x", config=SHAPES_CONFIG, options=TorchOptions(device="cpu"))
    with pytest.raises(ValueError, match=rf"expected shape \(\*, 3, {SIDE}, {SIDE}\), got \(1, 3, 32, 32\)"):
        backend(np.zeros((1, 3, 32, 32), np.float32))
