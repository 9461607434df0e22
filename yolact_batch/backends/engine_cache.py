"""The TensorRT engine cache: keys, the entry format, and build-once-per-cluster loading.

An engine is only valid for the ONNX model, TensorRT version, GPU model, precision and
profile it was built for; the file name and a header inside each entry record all of them.
The cache is a local directory or any fsspec URL, so one node builds and the others load.
Nothing here imports TensorRT or CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import time
import uuid
from typing import Callable, Mapping, Sequence, TypeVar

from yolact_batch.backends.engine_plan import PRECISIONS
from yolact_batch.io.storage import StorageOptions, filesystem

log = logging.getLogger(__name__)

# Bump when the way engines are built changes (flags, layer pinning), so old cache entries are not reused.
BUILD_RECIPE = 1
_MAGIC = b"YOLACT-BATCH-TRT-ENGINE\n"
T = TypeVar("T")


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")[:limit] or "none"


def engine_cache_key(onnx_digest: str, trt_version: str, gpu_name: str, precision: str, profile: Sequence[int]) -> str:
    """File name of the engine for this ONNX, TensorRT version, GPU model, precision and profile.

    Readable parts first (so a cache listing explains itself), then a hash over every component
    in full (plus ``BUILD_RECIPE``), so any change gives a different file.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    lo, opt, hi = (int(b) for b in profile)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"profile must be (min, opt, max) with 1 <= min <= opt <= max, got {tuple(profile)}")
    fields = cache_fields(onnx_digest, trt_version, gpu_name, precision, (lo, opt, hi))
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    onnx_part = _slug(onnx_digest.split(":")[-1], 12)
    return (
        f"{onnx_part}_trt{_slug(trt_version, 16)}_{_slug(gpu_name)}_{precision}_b{lo}-{opt}-{hi}_{digest[:16]}.engine"
    )


def cache_fields(onnx_digest: str, trt_version: str, gpu_name: str, precision: str, profile: Sequence[int]) -> dict:
    """The key fields as recorded in a cache entry's header (JSON-ready)."""
    return {
        "onnx": onnx_digest,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "precision": precision,
        "profile": [int(b) for b in profile],
        "recipe": BUILD_RECIPE,
    }


class CacheEntryError(ValueError):
    """A cached engine file is truncated, corrupt or was written for other key fields."""


def pack_engine(payload: bytes, fields: Mapping) -> bytes:
    """Engine bytes with a header recording the key fields and the payload's sha256."""
    header = json.dumps(
        {**fields, "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload)}, sort_keys=True
    ).encode()
    return _MAGIC + len(header).to_bytes(4, "little") + header + payload


def unpack_engine(blob: bytes, fields: Mapping) -> bytes:
    """The engine bytes of a packed entry; CacheEntryError unless intact and written for ``fields``."""
    if not blob.startswith(_MAGIC):
        raise CacheEntryError("not a yolact_batch engine file (bad magic)")
    start = len(_MAGIC) + 4
    size = int.from_bytes(blob[len(_MAGIC) : start], "little")
    try:
        header = json.loads(blob[start : start + size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheEntryError(f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise CacheEntryError(f"unreadable header: {type(header).__name__}, not an object")
    payload = blob[start + size :]
    if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header.get(
        "payload_sha256"
    ):
        raise CacheEntryError(
            f"payload is {len(payload)} bytes and does not match its recorded sha256 (truncated or corrupt)"
        )
    mismatched = sorted(k for k, v in fields.items() if header.get(k) != (list(v) if isinstance(v, tuple) else v))
    if mismatched:
        found = ", ".join(f"{k}={header.get(k)!r}" for k in mismatched)
        raise CacheEntryError(f"written for other {', '.join(mismatched)}: {found}")
    return payload


class EngineCache:
    """Serialized engines in a folder: a local path or any fsspec URL (``s3://bucket/engines``).

    Writes are atomic (a uniquely named partial file renamed into place), so concurrent
    readers see either no entry or a whole one.
    """

    def __init__(self, url: str, storage: StorageOptions = StorageOptions()) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url, storage)
        self.root = self.root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def read(self, name: str) -> bytes | None:
        """The file's bytes, None when absent."""
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            return None

    def write(self, name: str, blob: bytes) -> None:
        """Write ``blob`` as ``name`` atomically."""
        self.fs.makedirs(self.root, exist_ok=True)
        partial = self.path(f"{name}.{uuid.uuid4().hex}.partial")
        try:
            self.fs.pipe_file(partial, blob)
            self.fs.mv(partial, self.path(name))
        finally:
            if self.fs.exists(partial):
                self.fs.rm(partial)

    def remove(self, name: str) -> None:
        try:
            self.fs.rm(self.path(name))
        except FileNotFoundError:
            pass


def load_or_build(
    cache: EngineCache | None,
    name: str,
    fields: Mapping,
    build: Callable[[], bytes],
    deserialize: Callable[[bytes], T | None],
    *,
    wait_s: float = 1800.0,
    poll_s: float = 10.0,
    settle_s: float = 2.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, str]:
    """The engine for ``name``, from the cache when usable, else built (and cached).

    Processes that start together (a Ray actor pool) coordinate through a build marker next
    to the entry: each writes its own, waits ``settle_s``, and only the one whose marker is
    still there builds; the others wait for its engine. The marker is advisory: a lost race
    costs a duplicate build, never a wrong engine.

    Args:
        cache: where engines live; None builds every time.
        name: the cache file name (``engine_cache_key(...)``).
        fields: the key fields, recorded in and checked against the file's header.
        build: returns serialized engine bytes (minutes of GPU work).
        deserialize: engine bytes -> engine, or None when the runtime rejects them.
        wait_s: while another process holds a fresh build marker for ``name``, wait up to this
            long for its engine instead of building the same one again.
        poll_s: how often to look for that engine while waiting.
        settle_s: after writing our marker, how long to let concurrent starters write theirs.
        clock, sleep: wall clock and sleep (injected by tests).

    Returns:
        ``(engine, how)`` with ``how`` one of ``"cache"``, ``"built"``, ``"rebuilt"`` (the cached
        entry was corrupt, for other fields, or rejected by the runtime).
    """
    how = "built"
    marker = f"{name}.building"
    if cache is not None:
        engine, how = _try_cache(cache, name, fields, deserialize)
        if engine is None and how == "built":
            waited = _wait_for_other_builder(cache, name, wait_s, poll_s, clock, sleep)
            if waited or (not _claim(cache, marker, settle_s, clock, sleep)
                          and _wait_for_other_builder(cache, name, wait_s, poll_s, clock, sleep)):  # fmt: skip
                engine, how = _try_cache(cache, name, fields, deserialize)
        if engine is not None:
            return engine, how
    try:
        payload = build()
        if cache is not None:
            _best_effort(cache.write, name, pack_engine(payload, fields))
    finally:
        if cache is not None:
            _best_effort(cache.remove, marker)
    engine = deserialize(payload)
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialize the engine it just built for {name}; see its log above")
    return engine, how


def _claim(cache: EngineCache, marker: str, settle_s: float, clock, sleep) -> bool:
    """Write our build marker, let concurrent starters write theirs; True when ours is still the one there."""
    token = uuid.uuid4().hex
    claim = {"host": socket.gethostname(), "started": clock(), "token": token}
    _best_effort(cache.write, marker, json.dumps(claim).encode())
    if settle_s > 0:
        sleep(settle_s)
    try:
        return json.loads(cache.read(marker) or b"{}").get("token", token) == token
    except (ValueError, AttributeError):
        return True


def _best_effort(action: Callable, name: str, *args) -> None:
    """Cache writes must not cost a job the engine it just spent minutes building: warn and go on."""
    try:
        action(name, *args)
    except Exception as exc:  # fsspec backends raise many types (PermissionError, ClientError, ...)
        log.warning("engine cache: %s %s failed (%s: %s); continuing without it", action.__name__, name,
                    type(exc).__name__, exc)  # fmt: skip


def _try_cache(
    cache: EngineCache, name: str, fields: Mapping, deserialize: Callable[[bytes], T | None]
) -> tuple[T | None, str]:
    blob = cache.read(name)
    if blob is None:
        return None, "built"
    try:
        engine = deserialize(unpack_engine(blob, fields))
    except CacheEntryError as exc:
        log.warning("engine cache entry %s is unusable (%s); rebuilding it", cache.path(name), exc)
        return None, "rebuilt"
    if engine is None:
        log.warning("TensorRT rejected the cached engine %s; rebuilding it", cache.path(name))
        return None, "rebuilt"
    return engine, "cache"


def _wait_for_other_builder(cache: EngineCache, name: str, wait_s: float, poll_s: float, clock, sleep) -> bool:
    """Wait while a fresh build marker exists; True when the engine appeared meanwhile."""
    deadline = clock() + wait_s
    while True:
        raw = cache.read(f"{name}.building")
        if raw is None:
            return cache.read(name) is not None
        try:
            started = float(json.loads(raw)["started"])
        except (ValueError, KeyError, TypeError):
            return False
        if clock() - started > wait_s or clock() >= deadline:
            log.warning("build marker for %s is stale or we waited too long; building here", name)
            return False
        if cache.read(name) is not None:
            return True
        sleep(poll_s)
