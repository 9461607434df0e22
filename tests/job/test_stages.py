"""The pipeline's stages are plain functions and a plain class: chained here without Ray,
they give the rows of the Python API, and one failing image never takes its batch along."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from tests.job.conftest import jpeg_images
from yolact_batch.core.configs import get_config
from yolact_batch.core.heads import GraphHeads
from yolact_batch.core.postprocess import Postprocessor
from yolact_batch.core.settings import InferenceSettings
from yolact_batch.io.schema import ROW_SCHEMA, ModelRef, ok_row
from yolact_batch.job.columns import PACKED
from yolact_batch.job.config import JobConfig, Resources
from yolact_batch.job.pipeline import (
    ModelActor,
    check_capacity,
    commit_stage,
    decode_stage,
    local_cpus,
    postprocess_stage,
    read_block_size,
    read_stage,
)
from yolact_batch.job.plan import prepare
from yolact_batch.model import YolactModel

IMAGES = jpeg_images(3)
REF = ModelRef("yolact_resnet50", "sha256:00")


def make_plan(root, model_path):
    folder = root / "in"
    folder.mkdir(parents=True)
    for name, blob in IMAGES.items():
        (folder / name).write_bytes(blob)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 no end marker")
    return prepare(JobConfig(input=str(folder), output=str(root / "out"), model=str(model_path)))


@pytest.fixture
def plan(tmp_path, model_path):
    return make_plan(tmp_path, model_path)


def run_stages(plan, batch_size=2):
    """read -> decode -> model -> postprocess, as Ray Data calls them, on one block."""
    actor = ModelActor(plan.model, plan.postprocessor)
    decoded = decode_stage(
        read_stage(plan.todo, storage=plan.config.storage),
        config=plan.model_config,
        max_pixels=plan.config.inference.max_pixels,
    )
    tables = []
    for start in range(0, len(decoded["error"]), batch_size):
        heads = actor({k: v[start : start + batch_size] for k, v in decoded.items()})
        assert "input" not in heads  # the 3x550x550 inputs stop at the model stage
        tables.append(postprocess_stage(heads, post=plan.postprocessor, model=plan.ref))
    return pa.concat_tables(tables), heads


@pytest.mark.parametrize("contract", ["raw", "graph"])
def test_stages_give_the_rows_of_the_python_api(contract, tmp_path, model_path, graph_model_path):
    model_path = model_path if contract == "raw" else graph_model_path
    plan = make_plan(tmp_path, model_path)
    table, heads = run_stages(plan)
    assert table.schema == ROW_SCHEMA
    if contract == "graph":  # packed: ragged columns, no dense [K, 138, 138] masks
        assert "masks" not in heads and heads["mask_values"].dtype == object
    rows = {r["image_uri"].rsplit("/", 1)[1]: r for r in table.to_pylist()}
    model = YolactModel(str(model_path))
    for name, blob in IMAGES.items():
        expected = ok_row(model([blob])[0], image_uri="", image_id=int(name[:12]), model=model.ref)
        assert rows[name]["instances"] == expected["instances"] and rows[name]["image_id"] == int(name[:12])
    assert rows["broken.jpg"]["status"] == "error" and "truncated JPEG" in rows["broken.jpg"]["error"]
    result = commit_stage(table, output=plan.output, run_id=plan.run_id)
    assert result.to_pylist()[0]["rows"] == 4 and result.to_pylist()[0]["errors"] == 1


@pytest.mark.parametrize("contract", ["raw", "graph"])
def test_a_batch_of_only_errors_skips_the_network(contract, tmp_path, model_path, graph_model_path):
    plan = make_plan(tmp_path, model_path if contract == "raw" else graph_model_path)
    actor = ModelActor(plan.model, plan.postprocessor)
    batch = {
        "image_uri": np.array(["a", "b"], object),
        "image_id": np.array(["", "7"], object),
        "error": np.array(["read failed: x", "decode failed: y"], object),
        "height": np.zeros(2, np.int32),
        "width": np.zeros(2, np.int32),
        "input": np.zeros((2, 3, 550, 550), np.float32),
    }
    heads = actor(batch)
    if contract == "raw":
        assert heads["conf"].shape == (2, 19248, 81) and not heads["conf"].any()
    else:
        assert [len(v) for v in heads["scores"]] == [0, 0] and [len(v) for v in heads["mask_values"]] == [0, 0]
    rows = postprocess_stage(heads, post=plan.postprocessor, model=plan.ref).to_pylist()
    assert [(r["status"], r["error"], r["image_id"]) for r in rows] == [
        ("error", "read failed: x", None),
        ("error", "decode failed: y", 7),
    ]


def test_an_image_whose_postprocessing_fails_does_not_take_its_batch_along():
    config = get_config("yolact_resnet50")
    post = Postprocessor(config, "graph", InferenceSettings())
    k, rng = 5, np.random.default_rng(0)
    boxes = np.tile(np.array([0.1, 0.1, 0.6, 0.7], np.float32), (3, k, 1))
    classes = np.zeros((3, k), np.int64)
    classes[1, 0] = 500  # a model output naming a class the model does not have, in image 1 only
    heads = GraphHeads(
        boxes=boxes,
        scores=np.full((3, k), 0.9, np.float32),
        classes=classes,
        masks=rng.random((3, k, 138, 138), np.float32),
        num_detections=np.full(3, k, np.int64),
    )
    packed = post.pack(heads)
    batch = {
        "image_uri": np.array(["a", "b", "c"], object),
        "image_id": np.array(["1", "2", "3"], object),
        "error": np.array(["", "", ""], object),
        "height": np.full(3, 40, np.int32),
        "width": np.full(3, 50, np.int32),
        "proto_size": np.full((3, 2), 138, np.int32),
        # Equal shapes: Ray Data hands these columns over as dense arrays, not ragged ones.
        **{name: np.stack([getattr(p, name) for p in packed]) for name in PACKED},
    }
    rows = postprocess_stage(batch, post=post, model=REF).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error"].startswith("postprocess failed: ValueError") and "class_ids" in rows[1]["error"]
    assert len(rows[0]["instances"]) == len(rows[2]["instances"]) == k


def test_stage_sizes():
    r = Resources(actors=(1, 2), read_block=16)
    assert read_block_size(10_000, r) == 16 and read_block_size(24, r) == 3 and read_block_size(1, r) == 1
    check_capacity(Resources(actors=(2, 2), cpus_per_actor=1), {"CPU": 4.0})
    with pytest.raises(RuntimeError, match="the cluster has 2 CPUs; 2 model actors x 1 CPU .* would stall"):
        check_capacity(Resources(actors=(2, 2), cpus_per_actor=1), {"CPU": 2.0})
    with pytest.raises(RuntimeError, match="the cluster has 0 GPUs"):
        check_capacity(Resources(gpus_per_actor=1), {"CPU": 8.0})
    assert local_cpus(Resources(actors=(1, 3), cpus_per_actor=0.5)) >= 3
    check_capacity(Resources(actors=(2, 2), actor_memory_gb=3), {"CPU": 8.0, "memory": 6.0 * 2**30})
    with pytest.raises(RuntimeError, match=r"6.0 GiB of memory .* 2 model actors x 4 GiB do not fit"):
        check_capacity(Resources(actors=(2, 2), actor_memory_gb=4), {"CPU": 8.0, "memory": 6.0 * 2**30})
    with pytest.raises(ValueError, match="actor-memory must be > 0 GiB, got 0"):
        Resources(actor_memory_gb=0)


PACK_CALLS: list[int] = []


@dataclass(frozen=True)
class FlakyPostprocessor(Postprocessor):
    """Fails to pack any batch of more than one image, and the second single image."""

    def pack(self, heads):
        PACK_CALLS.append(len(heads))
        if len(heads) > 1 or len(PACK_CALLS) == 3:
            raise ValueError("boom")
        return super().pack(heads)


def test_an_image_whose_packing_fails_becomes_an_error_row_alone(tmp_path, graph_model_path):
    plan = make_plan(tmp_path, graph_model_path)
    PACK_CALLS.clear()
    actor = ModelActor(plan.model, FlakyPostprocessor(plan.model_config, "graph"))
    batch = {
        "image_uri": np.array(["a", "b", "c"], object),
        "image_id": np.array(["", "", ""], object),
        "error": np.array(["", "", ""], object),
        "height": np.full(3, 40, np.int32),
        "width": np.full(3, 50, np.int32),
        "input": np.zeros((3, 3, 550, 550), np.float32),
    }
    out = actor(batch)
    assert PACK_CALLS == [3, 1, 1, 1] and list(batch["error"]) == ["", "", ""]  # the input is not modified
    assert list(out["error"]) == ["", "postprocess failed: ValueError: boom", ""]
    assert [len(v) for v in out["scores"]] == [100, 0, 100]
    rows = postprocess_stage(out, post=plan.postprocessor, model=REF).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "error", "ok"] and len(rows[0]["instances"]) > 0
