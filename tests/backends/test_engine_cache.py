"""The TensorRT engine cache without a GPU: keys, entries, build-once loading."""

from __future__ import annotations

import json
import re

import pytest

from yolact_batch.backends.engine_cache import (
    CacheEntryError,
    EngineCache,
    cache_fields,
    engine_cache_key,
    load_or_build,
    pack_engine,
    unpack_engine,
)
from yolact_batch.io.storage import model_digest

DIGEST = "sha256:" + "ab" * 32
KEY_ARGS = dict(onnx_digest=DIGEST, trt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3 sm90",
                precision="fp16", profile=(1, 16, 32))  # fmt: skip


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
    assert (
        load_or_build(cache, NAME, FIELDS, runtime.build, runtime.deserialize, clock=clock, sleep=sleep)[1] == "built"
    )
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
