"""Fetching the bytes of work items (``sources.ITEM_SCHEMA``): the I/O stage of the pipeline.

``fetch`` never raises for one image: a missing file, a FIFO, a short tar member or an
unreadable row becomes an error string naming the cause. Storage failures are retried
(``storage.retry``) and, past the window, raise ``StorageUnavailable``: they are never an
image's error. Nothing here imports Ray.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yolact_batch.io.schema import failure_text
from yolact_batch.io.storage import StorageOptions, StorageUnavailable, filesystem, is_local, retry


def fetch(
    items: pa.Table, storage: StorageOptions = StorageOptions(), *, threads: int = 8
) -> tuple[list[bytes | None], list[str | None]]:
    """Bytes of each work item, or the error of the item itself that prevented reading it.

    Returns ``(data, errors)``, aligned with ``items``: exactly one of ``data[i]``,
    ``errors[i]`` is None. Storage failures are retried (``storage.retry``).

    Raises:
        StorageUnavailable: the storage failed for longer than ``storage.retry_window_s``;
            no image is given an error for it.
    """
    rows = items.to_pylist()
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):  # one read per Parquet row group, one per image otherwise
        key = (row["source"], row["offset"]) if row["kind"] == "parquet" else (i,)
        groups.setdefault(key, []).append(i)
    data: list[bytes | None] = [None] * len(rows)
    errors: list[str | None] = [None] * len(rows)
    outages: list[StorageUnavailable] = []

    def work(indices: list[int]) -> None:
        source = rows[indices[0]]["source"]
        try:
            values = retry(lambda: _read(rows, indices, storage), f"reading {source}", storage.retry_window_s)
            for i, value in zip(indices, values):
                data[i] = value
        except StorageUnavailable as exc:
            outages.append(exc)
        except Exception as exc:  # one bad image must not fail its block
            for i in indices:
                errors[i] = _describe(exc, source)

    with ThreadPoolExecutor(max(1, min(threads, len(groups)))) as pool:
        list(pool.map(work, groups.values()))
    if outages:
        raise outages[0]
    return data, errors


class NotAFile(ValueError):
    """A path that names a FIFO, socket or device: reading it could block forever."""


def _read_local(path: str) -> bytes:
    """A local file's bytes; never blocks on a FIFO (opened non-blocking, checked before reading)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(path)
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise NotAFile(f"{path} is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _read(rows: list[dict], indices: list[int], storage: StorageOptions) -> list[bytes]:
    first = rows[indices[0]]
    fs, path = filesystem(first["source"], storage)
    if first["kind"] == "file":
        return [_read_local(path) if is_local(fs) else fs.cat_file(path)]
    if first["kind"] == "range":
        start, size = first["offset"], first["length"]
        blob = fs.cat_file(path, start=start, end=start + size)
        if len(blob) != size:
            raise ValueError(
                f"tar member {first['member']!r}: expected {size} bytes, read {len(blob)} (shard changed?)"
            )
        return [blob]
    column = first["member"]
    with fs.open(path, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_group(first["offset"], columns=[column])
    values = table[column]
    if pa.types.is_struct(values.type):
        values = pc.struct_field(values, "bytes")
    out = []
    for i in indices:
        value = values[rows[i]["length"]].as_py()
        out.append(b"" if value is None else value)
    return out


def _describe(exc: Exception, source: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"read failed: {source} not found (missing from the storage, or deleted after listing)"
    if isinstance(exc, IsADirectoryError):
        return f"read failed: {source} is a directory"
    if isinstance(exc, NotAFile):
        return f"read failed: {exc}"
    if isinstance(exc, PermissionError):
        return f"read failed: {source}: permission denied"
    return failure_text("read", exc)
