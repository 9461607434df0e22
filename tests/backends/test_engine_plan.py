"""Everything the TensorRT backend decides without a GPU: keys, batch plans, buffers, the cache."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from yolact_batch.backends.engine_plan import (
    CacheEntryError,
    Chunk,
    EngineCache,
    EngineSpec,
    cache_fields,
    check_engine_io,
    contract_tensors,
    engine_cache_key,
    load_or_build,
    mask_copy_ranges,
    model_digest,
    pack_engine,
    pinned_to_fp32,
    pipelined,
    plan_batches,
    plan_buffers,
    precision_plan,
    split_batches,
    unpack_engine,
)
from yolact_batch.configs import get_config
from yolact_batch.metadata import ModelMetadata

DIGEST = "sha256:" + "ab" * 32
KEY_ARGS = dict(onnx_digest=DIGEST, trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3 sm90",
                precision="fp16", profile=(1, 16, 32))  # fmt: skip
BASE = get_config("yolact_base")


# --- cache keys ------------------------------------------------------------------------------


def test_cache_key_is_stable_and_readable():
    key = engine_cache_key(**KEY_ARGS)
    assert key == engine_cache_key(**KEY_ARGS)
    # Pinned: a change here orphans every engine cached by earlier versions (bump BUILD_RECIPE on purpose only).
    assert key == "abababababab_trt10.13.0.35_nvidia-h100-80gb-hbm3-sm90_fp16_b1-16-32_f7463ad7898f41ca.engine"
    assert re.fullmatch(r"[a-z0-9._-]+\.engine", key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onnx_digest", "sha256:" + "ab" * 31 + "ac"),  # differs only past the readable prefix
        ("trt_version", "10.13.0.36"),
        ("gpu_name", "NVIDIA H200 sm90"),
        ("gpu_name", "NVIDIA H100 80GB HBM3 sm89"),
        ("precision", "fp32"),
        ("profile", (1, 8, 32)),
        ("profile", (2, 16, 32)),
        ("profile", (1, 16, 64)),
    ],
)
def test_cache_key_changes_with_each_component(field, value):
    assert engine_cache_key(**{**KEY_ARGS, field: value}) != engine_cache_key(**KEY_ARGS)


def test_cache_key_slugs_long_and_odd_gpu_names():
    key = engine_cache_key(**{**KEY_ARGS, "gpu_name": "NVIDIA  GeForce/RTX:4090 " * 5})
    assert re.fullmatch(r"[a-z0-9._-]+\.engine", key) and len(key) < 160


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("precision", "int8", "precision must be one of"), ("profile", (4, 2, 8), "min <= opt <= max"),
     ("profile", (0, 1, 1), "min <= opt <= max")],
)  # fmt: skip
def test_cache_key_rejects_bad_components(field, value, message):
    with pytest.raises(ValueError, match=message):
        engine_cache_key(**{**KEY_ARGS, field: value})


def test_model_digest_matches_modelref_form():
    assert model_digest(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- specs, batch splitting, profile selection -------------------------------------------------


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


# --- the cache -----------------------------------------------------------------------------------

FIELDS = cache_fields(**KEY_ARGS)
NAME = engine_cache_key(**KEY_ARGS)


@pytest.fixture(params=["path", "file-url", "memory-url"])
def cache(request, tmp_path):
    if request.param == "path":
        yield EngineCache(str(tmp_path / "engines"))
    elif request.param == "file-url":
        yield EngineCache(f"file://{tmp_path}/engines/")
    else:
        import fsspec

        yield EngineCache(f"memory://engines-{tmp_path.name}")
        fsspec.filesystem("memory").rm(f"/engines-{tmp_path.name}", recursive=True)


def test_cache_round_trip(cache):
    assert cache.read(NAME) is None
    cache.write(NAME, b"first")
    cache.write(NAME, b"second")  # replaced
    assert cache.read(NAME) == b"second"
    assert [p.rsplit("/", 1)[-1] for p in cache.fs.ls(cache.root, detail=False)] == [NAME]  # no partial files left
    cache.remove(NAME)
    cache.remove(NAME)  # removing an absent entry is fine
    assert cache.read(NAME) is None


def test_cache_write_is_atomic(cache, monkeypatch):
    final = cache.path(NAME)
    real_pipe = cache.fs.pipe_file

    def pipe_then_check(path, data, **kwargs):
        real_pipe(path, data, **kwargs)
        assert path != final and not cache.fs.exists(final), "the final name must appear only by rename"

    monkeypatch.setattr(cache.fs, "pipe_file", pipe_then_check)
    cache.write(NAME, b"engine")
    assert cache.read(NAME) == b"engine"
    monkeypatch.setattr(cache.fs, "pipe_file", real_pipe)

    def broken_mv(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache.fs, "mv", broken_mv)
    with pytest.raises(OSError, match="disk full"):
        cache.write("other.engine", b"x")
    assert [p.rsplit("/", 1)[-1] for p in cache.fs.ls(cache.root, detail=False)] == [NAME]


def test_pack_unpack_round_trip():
    assert unpack_engine(pack_engine(b"\x00engine\xff", FIELDS), FIELDS) == b"\x00engine\xff"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-3], "truncated or corrupt"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "truncated or corrupt"),
        (lambda b: b"garbage" + b, "bad magic"),
        (lambda b: b[:28] + b"X" + b[29:], "unreadable header"),  # the header's opening brace
        (lambda b: b[:24] + b"\xff\xff\x00\x00" + b[28:], "unreadable header"),  # its length
        (lambda b: b"", "bad magic"),
        (lambda b: b[:24] + (1).to_bytes(4, "little") + b"5" + b"engine bytes", "not an object"),
    ],
)
def test_unpack_rejects_damaged_entries(damage, message):
    with pytest.raises(CacheEntryError, match=message):
        unpack_engine(damage(pack_engine(b"engine bytes", FIELDS)), FIELDS)


def test_unpack_rejects_entries_for_other_fields():
    other = cache_fields(**{**KEY_ARGS, "trt_version": "10.0.1", "gpu_name": "A100"})
    with pytest.raises(CacheEntryError, match="written for other gpu, tensorrt: gpu='A100', tensorrt='10.0.1'"):
        unpack_engine(pack_engine(b"engine", other), FIELDS)


def no_sleep(seconds: float) -> None:
    pass


def quick(cache, runtime):
    """``load_or_build`` with the stub runtime and no real sleeping."""
    return load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, sleep=no_sleep)


class StubRuntime:
    """Stand-ins for ``build_serialized_network`` and ``deserialize_cuda_engine``: bytes in, an object out."""

    def __init__(self, rejects: set[bytes] = frozenset()):
        self.builds = 0
        self.rejects = rejects

    def build(self) -> bytes:
        self.builds += 1
        return b"engine-%d" % self.builds

    def deserialize(self, payload: bytes):
        return None if payload in self.rejects else ("engine", payload)


def test_load_or_build_builds_once_then_loads(cache):
    runtime = StubRuntime()
    assert quick(cache, runtime) == (("engine", b"engine-1"), "built")
    assert quick(cache, runtime) == (("engine", b"engine-1"), "cache")
    assert runtime.builds == 1
    assert unpack_engine(cache.read(NAME), FIELDS) == b"engine-1"
    assert not cache.fs.exists(cache.path(NAME + ".building"))


@pytest.mark.parametrize(
    "entry",
    [
        b"not an engine at all",
        pack_engine(b"engine-0", FIELDS)[:-2],  # truncated upload
        pack_engine(b"engine-0", cache_fields(**{**KEY_ARGS, "precision": "fp32"})),  # other fields under this name
    ],
    ids=["garbage", "truncated", "mismatched"],
)
def test_load_or_build_rebuilds_corrupt_or_mismatched_entries(cache, entry):
    cache.write(NAME, entry)
    runtime = StubRuntime()
    engine, how = quick(cache, runtime)
    assert (engine, how, runtime.builds) == (("engine", b"engine-1"), "rebuilt", 1)
    assert unpack_engine(cache.read(NAME), FIELDS) == b"engine-1"  # the bad entry was replaced


def test_load_or_build_rebuilds_when_the_runtime_rejects_the_cached_engine(cache):
    cache.write(NAME, pack_engine(b"engine-from-an-older-driver", FIELDS))
    runtime = StubRuntime(rejects={b"engine-from-an-older-driver"})
    assert quick(cache, runtime)[1] == "rebuilt"


def test_load_or_build_fails_when_a_fresh_engine_is_rejected(cache):
    runtime = StubRuntime(rejects={b"engine-1"})
    with pytest.raises(RuntimeError, match="could not deserialize the engine it just built"):
        quick(cache, runtime)


def test_unwritable_cache_still_returns_the_built_engine(cache, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only bucket")

    monkeypatch.setattr(cache.fs, "pipe_file", refuse)
    runtime = StubRuntime()
    assert quick(cache, runtime) == (("engine", b"engine-1"), "built")
    assert "read-only bucket" in caplog.text and cache.read(NAME) is None


def test_load_or_build_without_cache_builds_every_time():
    runtime = StubRuntime()
    for expected in (1, 2):
        assert quick(None, runtime)[1] == "built"
        assert runtime.builds == expected


def test_failed_build_leaves_no_entry_and_no_marker(cache):
    def fail():
        raise RuntimeError("builder out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        load_or_build(cache, NAME, FIELDS, fail, StubRuntime().deserialize, sleep=no_sleep)
    assert cache.read(NAME) is None and cache.read(NAME + ".building") is None


class FakeClock:
    def __init__(self, start=1000.0):
        self.now, self.sleeps = start, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_waits_for_another_builder_instead_of_building(cache):
    clock = FakeClock()
    cache.write(NAME + ".building", json.dumps({"host": "other", "started": clock.now - 5}).encode())
    runtime = StubRuntime()

    def sleep(seconds):
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:  # the other process finishes while we poll
            cache.write(NAME, pack_engine(b"engine-from-other", FIELDS))
            cache.remove(NAME + ".building")

    result = load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, poll_s=10, clock=clock, sleep=sleep)
    assert result == (("engine", b"engine-from-other"), "cache")
    assert runtime.builds == 0 and clock.sleeps == [10, 10, 10]


def test_stale_marker_is_ignored(cache):
    clock = FakeClock()
    cache.write(NAME + ".building", json.dumps({"host": "crashed", "started": clock.now - 7200}).encode())
    runtime = StubRuntime()
    result = load_or_build(
        cache, NAME, FIELDS, runtime.build, runtime.deserialize, wait_s=1800, clock=clock, sleep=clock.sleep
    )
    assert result[1] == "built" and clock.sleeps == [2.0] and runtime.builds == 1  # only the claim's settle time
    assert cache.read(NAME + ".building") is None


def test_gives_up_waiting_after_wait_s(cache):
    clock = FakeClock()
    cache.write(NAME + ".building", json.dumps({"host": "slow", "started": clock.now}).encode())
    runtime = StubRuntime()
    result = load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, wait_s=60, poll_s=25, clock=clock,
                           sleep=clock.sleep)  # fmt: skip
    assert result[1] == "built" and clock.sleeps == [25, 25, 25, 2.0] and runtime.builds == 1


def test_builds_when_the_other_builder_failed(cache):
    clock = FakeClock()
    cache.write(NAME + ".building", json.dumps({"host": "other", "started": clock.now}).encode())

    def sleep(seconds):
        clock.sleep(seconds)
        cache.remove(NAME + ".building")  # it gave up without writing an engine

    runtime = StubRuntime()
    assert load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, clock=clock, sleep=sleep)[1] == "built"
    assert runtime.builds == 1


def test_concurrent_starters_let_the_last_claimant_build(cache):
    clock = FakeClock()
    runtime = StubRuntime()

    def sleep(seconds):
        clock.sleep(seconds)
        if len(clock.sleeps) == 1:  # while we settle, another actor writes its marker over ours
            cache.write(NAME + ".building", json.dumps({"host": "b", "started": clock.now, "token": "b"}).encode())
        elif len(clock.sleeps) == 3:  # ... and finishes its build while we poll
            cache.write(NAME, pack_engine(b"engine-from-b", FIELDS))
            cache.remove(NAME + ".building")

    result = load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, clock=clock, sleep=sleep)
    assert result == (("engine", b"engine-from-b"), "cache") and runtime.builds == 0
    assert clock.sleeps == [2.0, 10.0, 10.0]


def test_an_uncontested_claim_builds_after_settling(cache):
    clock = FakeClock()
    runtime = StubRuntime()
    result = load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, settle_s=0.5, clock=clock,
                           sleep=clock.sleep)  # fmt: skip
    assert result[1] == "built" and clock.sleeps == [0.5] and runtime.builds == 1
