"""ONNX export of the golden checkpoints, run in ONNX Runtime against the reference's outputs.

Each golden model is exported once per session per contract (see ``conftest.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from yolact_batch.core.configs import get_config  # noqa: E402
from yolact_batch.core.heads import GRAPH_OUTPUTS, INPUT_NAME, RAW_OUTPUTS, GraphHeads, RawHeads  # noqa: E402
from yolact_batch.core.metadata import ModelMetadata  # noqa: E402
from yolact_batch.core.settings import DetectSettings  # noqa: E402
from yolact_batch.torchnet import export_onnx  # noqa: E402
from yolact_batch.torchnet.graph import GraphHead  # noqa: E402

GOLDEN_IDS = {
    "yolact_resnet50": (184324, 376322, 205401, 165518),
    "yolact_base": (184324, 376322, 165518),
}
CASES = [(name, image_id) for name, ids in GOLDEN_IDS.items() for image_id in ids]
TIE_GAP = 1e-5  # scores closer than this may come out in either order


def assert_same_detections(got: dict, want: dict, atol: float = 1e-5) -> list[int]:
    """Same detections matched by (class, box); positions may differ only between near-tied scores.

    Returns, for each wanted detection, the position of its match in ``got``.
    """
    n = len(want["scores"])
    assert int(got["num_detections"]) == n
    used: set[int] = set()
    position = []
    for i in range(n):
        matches = [
            j for j in range(n)
            if j not in used and got["classes"][j] == want["classes"][i]
            and np.abs(got["boxes"][j] - want["boxes"][i]).max() <= atol
        ]  # fmt: skip
        assert matches, f"detection {i} (class {want['classes'][i]}, score {want['scores'][i]}) not found"
        j = min(matches, key=lambda j: abs(j - i))
        used.add(j)
        assert abs(got["scores"][j] - want["scores"][i]) <= atol, (i, j)
        if j != i:
            assert abs(want["scores"][i] - want["scores"][j]) < TIE_GAP, f"rank {i} moved to {j}"
        position.append(j)
    return position


def _golden_detections(gold: dict) -> dict:
    return {"boxes": gold["det_boxes"], "scores": gold["det_scores"], "classes": gold["det_classes"]}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "image_id"), CASES)
def test_raw_contract_matches_golden_heads(golden_run, golden_arrays, name, image_id):
    out = golden_run(name, "raw", image_id)
    gold = golden_arrays(name, image_id)
    RawHeads(**out)  # the contract's shape checks
    for key in RAW_OUTPUTS:
        assert out[key].dtype == np.float32 and out[key].shape == gold[key].shape, key
        diff = float(np.abs(out[key] - gold[key]).max())
        assert diff <= 1e-4, f"{name}/{image_id} {key}: max |diff| {diff:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "image_id"), CASES)
def test_graph_contract_matches_golden_detections(golden_run, golden_arrays, name, image_id):
    out = golden_run(name, "graph", image_id)
    gold = golden_arrays(name, image_id)
    GraphHeads(**out)
    assert out["num_detections"].tolist() == [100]
    position = assert_same_detections({k: v[0] for k, v in out.items()}, _golden_detections(gold))
    # Masks against sigmoid(golden prototypes @ golden coefficients) on the pixels the crop kept
    # (cropped-away pixels are exactly 0; the crop itself is checked bit-exactly in test_export_graph).
    want = np.moveaxis(1 / (1 + np.exp(-(gold["proto"][0] @ gold["det_masks"].T))), -1, 0)
    masks = out["masks"][0][position]
    assert np.abs(masks - want * (masks > 0)).max() < 1e-4


@pytest.mark.slow
def test_graph_batch_of_two_equals_batch_of_one(exported, onnx_session, golden_run, golden_arrays):
    ids = GOLDEN_IDS["yolact_resnet50"][1:3]
    images = np.concatenate([golden_arrays("yolact_resnet50", i)["input"] for i in ids])
    session = onnx_session(exported("yolact_resnet50", "graph"))
    batch = dict(zip(GRAPH_OUTPUTS, session.run(None, {INPUT_NAME: images})))
    assert batch["masks"].shape == (2, 100, 138, 138)
    for b, image_id in enumerate(ids):
        single = golden_run("yolact_resnet50", "graph", image_id)
        one = {k: v[b] for k, v in batch.items()}
        assert_same_detections(one, {k: single[k][0] for k in ("boxes", "scores", "classes")})
        assert np.abs(one["masks"] - single["masks"][0]).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("contract", ["raw", "graph"])
def test_model_io_and_metadata(exported, golden_checkpoint, contract):
    path = exported("yolact_resnet50", contract)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 550, 550]
    assert tuple(o.name for o in model.graph.output) == (RAW_OUTPUTS if contract == "raw" else GRAPH_OUTPUTS)
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_onnx_props(props, origin=str(path))
    assert meta.config == get_config("yolact_resnet50")
    assert meta.contract == contract and meta.detect == DetectSettings()
    assert meta.source.startswith(f"{golden_checkpoint('yolact_resnet50').name} sha256:")
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    assert path.stat().st_size < 1.02 * weights  # weights stored once
    assert weights < 126e6


def test_greedy_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="Fast NMS only"):
        export_onnx(  # a given ModelConfig: nothing is read before the settings are checked
            tmp_path / "missing.pth",
            get_config("yolact_resnet50"),
            tmp_path / "m.onnx",
            detect=DetectSettings(nms="greedy"),
        )
    with pytest.raises(ValueError, match="contract must be"):
        export_onnx(tmp_path / "missing.pth", "yolact_resnet50", tmp_path / "m.onnx", contract="nms")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("detect", "score_threshold", "crop"),
    [
        (DetectSettings(top_k=200, max_detections=100), 0.0, True),
        (DetectSettings(top_k=50, max_detections=300, cross_class_nms=True, conf_threshold=0.3), 0.6, False),
    ],
)
@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation and constant-folding notices
def test_graph_head_onnx_equals_torch(tmp_path, golden_arrays, detect, score_threshold, crop):
    """The head alone through ONNX Runtime (other settings, padding, cross-class) equals torch."""
    config = get_config("yolact_resnet50")
    head = GraphHead(config, detect, score_threshold=score_threshold, crop=crop).eval()
    golds = [golden_arrays("yolact_resnet50", i) for i in GOLDEN_IDS["yolact_resnet50"][:2]]
    heads = [np.concatenate([g[k] for g in golds]) for k in RAW_OUTPUTS]
    path = tmp_path / "head.onnx"
    with torch.no_grad():
        want = [t.numpy() for t in head(*map(torch.from_numpy, heads))]
        torch.onnx.export(
            head, tuple(torch.from_numpy(h[:1]) for h in heads), str(path), dynamo=False,
            input_names=list(RAW_OUTPUTS), output_names=list(GRAPH_OUTPUTS), opset_version=17,
            dynamic_axes={n: {0: "batch"} for n in (*RAW_OUTPUTS, *GRAPH_OUTPUTS)},
        )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(RAW_OUTPUTS, heads)))
    for name, g, w in zip(GRAPH_OUTPUTS, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6, err_msg=name)
    assert got[-1].tolist() == want[-1].tolist() and 0 < want[-1].min()
