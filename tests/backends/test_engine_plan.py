"""What the TensorRT backend decides without a GPU: batch plans, buffers, precision."""

from __future__ import annotations

import numpy as np
import pytest

from yolact_batch.backends.engine_plan import (
    Chunk,
    EngineSpec,
    check_engine_io,
    contract_tensors,
    mask_copy_ranges,
    pinned_to_fp32,
    pipelined,
    plan_batches,
    plan_buffers,
    precision_plan,
    split_batches,
)
from yolact_batch.core.configs import get_config
from yolact_batch.core.metadata import ModelMetadata

BASE = get_config("yolact_base")


@pytest.mark.parametrize(
    "kwargs",
    [dict(precision="int8"), dict(min_batch=0), dict(min_batch=4, opt_batch=2), dict(opt_batch=64, max_batch=32),
     dict(workspace_bytes=0)],
)  # fmt: skip
def test_engine_spec_validates(kwargs):
    with pytest.raises(ValueError, match="EngineSpec"):
        EngineSpec(**kwargs)


def test_engine_spec_profile_shapes():
    spec = EngineSpec(min_batch=1, opt_batch=8, max_batch=32)
    assert spec.profile == (1, 8, 32)
    assert spec.input_shapes(550) == ((1, 3, 550, 550), (8, 3, 550, 550), (32, 3, 550, 550))


@pytest.mark.parametrize(
    ("n", "max_batch", "expected"),
    [
        (0, 4, []),
        (1, 4, [(0, 1)]),
        (4, 4, [(0, 4)]),
        (5, 4, [(0, 4), (4, 5)]),
        (9, 4, [(0, 4), (4, 8), (8, 9)]),
        (3, 1, [(0, 1), (1, 2), (2, 3)]),
    ],
)
def test_split_batches(n, max_batch, expected):
    assert split_batches(n, max_batch) == expected


@pytest.mark.parametrize(("n", "max_batch"), [(-1, 4), (3, 0)])
def test_split_batches_rejects(n, max_batch):
    with pytest.raises(ValueError, match="must be >="):
        split_batches(n, max_batch)


SPEC_MIN2 = EngineSpec(min_batch=2, opt_batch=4, max_batch=4)


@pytest.mark.parametrize(
    ("n", "spec", "expected"),
    [
        (0, SPEC_MIN2, []),
        (1, SPEC_MIN2, [Chunk(0, 1, 2)]),  # below the profile's min: padded
        (2, SPEC_MIN2, [Chunk(0, 2, 2)]),
        (4, SPEC_MIN2, [Chunk(0, 4, 4)]),  # exactly max
        (5, SPEC_MIN2, [Chunk(0, 4, 4), Chunk(4, 5, 2)]),  # max + 1: a padded tail
        (1, EngineSpec(), [Chunk(0, 1, 1)]),
        (33, EngineSpec(), [Chunk(0, 32, 32), Chunk(32, 33, 1)]),
    ],
)
def test_plan_batches(n, spec, expected):
    assert plan_batches(n, spec) == expected


@pytest.mark.parametrize("n", range(0, 12))
def test_plan_batches_cover_every_image_within_the_profile(n):
    chunks = plan_batches(n, SPEC_MIN2)
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(n))
    assert all(c.stop - c.start <= c.run_batch for c in chunks)
    assert all(SPEC_MIN2.min_batch <= c.run_batch <= SPEC_MIN2.max_batch for c in chunks)


# --- pipelining ------------------------------------------------------------------------------


def _traced(items, depth):
    events, busy = [], set()

    def submit(item, slot):
        assert slot not in busy, f"slot {slot} reused while in flight"
        busy.add(slot)
        events.append(f"s{item}")
        return item, slot

    def finish(job):
        item, slot = job
        busy.remove(slot)
        events.append(f"f{item}")
        return item * 10

    return list(pipelined(items, submit, finish, depth)), events


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (1, ["s0", "f0", "s1", "f1", "s2", "f2", "s3", "f3"]),
        (2, ["s0", "s1", "f0", "s2", "f1", "s3", "f2", "f3"]),
        (3, ["s0", "s1", "s2", "f0", "s3", "f1", "f2", "f3"]),
        (8, ["s0", "s1", "s2", "s3", "f0", "f1", "f2", "f3"]),
    ],
)
def test_pipelined_keeps_depth_in_flight_and_order(depth, expected):
    results, events = _traced(range(4), depth)
    assert results == [0, 10, 20, 30]
    assert events == expected


def test_pipelined_waits_for_queued_work_when_closed_early_or_failing():
    events = []
    gen = pipelined(range(5), lambda i, s: events.append(f"s{i}") or i, lambda j: events.append(f"f{j}") or j, 2)
    assert next(gen) == 0
    gen.close()  # item 1 is still in flight
    assert events == ["s0", "s1", "f0", "f1"]

    def submit(i, slot):
        if i == 2:
            raise ValueError("bad batch")
        return i

    done = []
    with pytest.raises(ValueError, match="bad batch"):
        list(pipelined(range(4), submit, done.append, 2))
    assert done == [0, 1]


def test_pipelined_edges():
    assert _traced([], 2) == ([], [])
    with pytest.raises(ValueError, match="depth"):
        list(pipelined([1], lambda i, s: i, lambda j: j, 0))


# --- tensors and buffers -----------------------------------------------------------------------


def _engine_shapes(metadata):
    tensors = contract_tensors(metadata)
    return {n: (-1, *t.shape) for n, t in tensors.items()}, {n: t.dtype for n, t in tensors.items()}


def test_buffer_sizes_yolact_base_raw():
    shapes, dtypes = _engine_shapes(ModelMetadata(BASE, contract="raw"))
    per_image = {
        "images": 3 * 550 * 550 * 4,  # 3,630,000
        "loc": 19248 * 4 * 4,  # 19,248 priors = (69² + 35² + 18² + 9² + 5²) * 3
        "conf": 19248 * 81 * 4,
        "mask": 19248 * 32 * 4,
        "proto": 138 * 138 * 32 * 4,
    }
    assert plan_buffers(shapes, dtypes, 32) == {k: 32 * v for k, v in per_image.items()}
    assert sum(per_image.values()) - per_image["images"] == 11_445_696  # D2H bytes per image, raw


def test_buffer_sizes_yolact_base_graph():
    shapes, dtypes = _engine_shapes(ModelMetadata(BASE, contract="graph"))
    assert list(shapes) == ["images", "boxes", "scores", "classes", "masks", "num_detections"]
    per_image = {
        "images": 3_630_000,
        "boxes": 100 * 4 * 4,
        "scores": 100 * 4,
        "classes": 100 * 8,  # int64
        "masks": 100 * 138 * 138 * 4,  # 7,617,600: at most this crosses PCIe per image
        "num_detections": 8,
    }
    assert plan_buffers(shapes, dtypes, 8) == {k: 8 * v for k, v in per_image.items()}


def test_contract_tensors_third_party_input_name():
    tensors = contract_tensors(ModelMetadata(BASE, contract="raw"), input_name="input.1")
    assert list(tensors)[0] == "input.1" and tensors["input.1"].is_input


@pytest.mark.parametrize(
    ("shapes", "dtypes", "max_batch", "message"),
    [
        ({"x": (-1, 3, -1)}, {"x": np.float32}, 4, "dynamic non-batch"),
        ({"x": (1, 3)}, {"x": np.float32}, 4, "fixed batch of 1"),
        ({"x": ()}, {"x": np.float32}, 4, "no batch axis"),
        ({"x": (-1, 3)}, {}, 4, "no dtype"),
        ({"x": (-1, 3)}, {"x": np.float32}, 0, "max_batch"),
    ],
)
def test_plan_buffers_rejects(shapes, dtypes, max_batch, message):
    with pytest.raises(ValueError, match=message):
        plan_buffers(shapes, dtypes, max_batch)


def test_plan_buffers_accepts_none_and_matching_fixed_batch():
    assert plan_buffers({"x": (None, 2), "y": (4, 3)}, {"x": np.float16, "y": np.int64}, 4) == {"x": 16, "y": 96}


def test_check_engine_io():
    expected = contract_tensors(ModelMetadata(BASE, contract="graph"))
    found = {n: (t.is_input, (-1, *t.shape)) for n, t in expected.items()}
    check_engine_io(found, expected, "m.onnx")
    with pytest.raises(ValueError, match="m.onnx: engine I/O tensors"):
        check_engine_io({k: v for k, v in found.items() if k != "masks"}, expected, "m.onnx")
    with pytest.raises(ValueError, match="'masks' is an output of shape \\(-1, 100, 69, 69\\)"):
        check_engine_io({**found, "masks": (False, (-1, 100, 69, 69))}, expected, "m.onnx")
    with pytest.raises(ValueError, match="'boxes' is an input"):
        check_engine_io({**found, "boxes": (True, (-1, 100, 4))}, expected, "m.onnx")


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([], []),
        ([0, 0], []),
        ([3], [(0, 30)]),
        ([3, 0, 5], [(0, 30), (2000, 50)]),
        ([100, 100, 7], [(0, 2070)]),  # full rows are contiguous with the next image: one copy
        ([100, 0, 100], [(0, 1000), (2000, 1000)]),
        ([2, 100], [(0, 20), (1000, 1000)]),
    ],
)
def test_mask_copy_ranges(counts, expected):
    assert mask_copy_ranges(counts, k=100, mask_bytes=10) == expected


def test_mask_copy_ranges_reject_out_of_range_counts():
    with pytest.raises(ValueError, match=r"num_detections\[1\] = 101"):
        mask_copy_ranges([1, 101], k=100, mask_bytes=10)


# --- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "contract", "has_flag", "model_fp16", "expected"),
    [
        ("fp32", "graph", True, False, ((), ("TF32",), False)),
        ("fp32", "raw", False, False, ((), ("TF32",), False)),  # TensorRT 11
        ("fp16", "graph", True, False, (("FP16", "PREFER_PRECISION_CONSTRAINTS"), ("TF32",), True)),
        ("fp16", "raw", True, False, (("FP16", "PREFER_PRECISION_CONSTRAINTS"), ("TF32",), False)),
        ("fp16", "graph", False, True, ((), ("TF32",), False)),  # TensorRT 11, AutoCast ONNX: strongly typed
    ],
)
def test_precision_plan(precision, contract, has_flag, model_fp16, expected):
    assert tuple(precision_plan(precision, contract, has_fp16_flag=has_flag, model_has_fp16=model_fp16)) == expected


def test_precision_plan_fp16_without_flag_or_fp16_model_explains_autocast():
    with pytest.raises(ValueError, match="AutoCast.*or build with precision 'fp32'"):
        precision_plan("fp16", "graph", has_fp16_flag=False, model_has_fp16=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        precision_plan("bf16", "graph", has_fp16_flag=True, model_has_fp16=False)


@pytest.mark.parametrize(
    ("name", "pinned"),
    [("/network/backbone/layers.0/conv1/Conv", False), ("/network/Softmax", False), ("/head/TopK", True),
     ("/head/Exp_1", True), ("Constant_344", True), ("(Unnamed Layer* 12) [Constant]", True)],
)  # fmt: skip
def test_pinned_to_fp32(name, pinned):
    assert pinned_to_fp32(name) is pinned
