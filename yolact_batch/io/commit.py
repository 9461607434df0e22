"""The commit protocol of the ``segment`` job: one atomic Parquet file per batch of rows.

The commit unit is one Parquet file of up to ``commit_size`` rows, named by a hash of its
sorted ``image_uri``s: a retried task rewrites the same name with the same rows. A file
appears whole or not at all: local files are written under a hidden temporary name then
renamed (``os.replace``); object stores make one PUT (or completed multipart upload)
visible atomically. Each run writes a new run id into ``_job.json`` and a writer commits
only while that id is still current, which fences off writers of a driver that was
killed but not yet cleaned up.

We chose reading the committed ids back over Ray Data's ``CheckpointConfig`` (beta): it
needs no extra filter actor (1 CPU + 1 GiB on a 2-CPU node is a third of the machine),
the committed set is plain Parquet any tool can inspect, and it also covers tar and
Parquet inputs whose rows are not files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yolact_batch.io.schema import ROW_SCHEMA
from yolact_batch.io.sources import retry_io
from yolact_batch.io.storage import StorageOptions, filesystem

COUNTS_KEY = b"yolact_batch.counts"


class Superseded(RuntimeError):
    """A newer run owns the output; this (stale) writer must not commit."""


@dataclass(frozen=True)
class OutputStore:
    """The output directory: job manifest, committed Parquet files, ``_SUCCESS``. Picklable.

    The one definition of the output layout::

        OUTPUT/_job.json                      what produced the predictions + the current run id
        OUTPUT/predictions/part-<h>.parquet   committed rows (``schema.ROW_SCHEMA``)
        OUTPUT/_SUCCESS                       JSON counts, written last by a completed run
    """

    url: str
    storage: StorageOptions = StorageOptions()

    PREDICTIONS = "predictions"
    MANIFEST = "_job.json"
    SUCCESS = "_SUCCESS"
    PART_PREFIX = "part-"

    def _fs(self):
        fs, path = filesystem(self.url, self.storage)
        return fs, path.rstrip("/")

    @property
    def predictions(self) -> str:
        return self.url.rstrip("/") + "/" + self.PREDICTIONS

    def read_manifest(self) -> dict | None:
        fs, root = self._fs()
        try:
            return json.loads(fs.cat_file(f"{root}/{self.MANIFEST}"))
        except FileNotFoundError:
            return None

    def write_manifest(self, data: dict) -> None:
        self.write_json(self.MANIFEST, data)

    def write_success(self, data: dict) -> None:
        """Mark the output complete; ``data`` (JSON) says what it holds."""
        self.write_json(self.SUCCESS, data)

    def clear_success(self) -> None:
        self.remove(self.SUCCESS)

    def write_json(self, name: str, data: dict) -> None:
        fs, root = self._fs()
        blob = json.dumps(data, indent=2, sort_keys=True).encode()
        if _is_local(fs):
            fs.makedirs(root, exist_ok=True)
        self._atomic_write(fs, f"{root}/{name}", blob)

    def remove(self, name: str) -> None:
        fs, root = self._fs()
        try:
            fs.rm_file(f"{root}/{name}")
        except FileNotFoundError:
            pass

    def clear_predictions(self) -> None:
        fs, root = self._fs()
        for path in self._part_files(fs, root, hidden=True):
            fs.rm_file(path)

    def remove_temporaries(self) -> int:
        """Delete temporary files a killed run left behind (local outputs only have them)."""
        fs, root = self._fs()
        stale = [p for p in self._part_files(fs, root, hidden=True) if posixpath.basename(p).startswith(".")]
        for path in stale:
            fs.rm_file(path)
        return len(stale)

    def _part_files(self, fs, root: str, hidden: bool = False) -> list[str]:
        try:  # refresh: s3fs caches listings, and other processes commit files
            names = fs.ls(f"{root}/{self.PREDICTIONS}", detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = [n for n in names if posixpath.basename(n).startswith((self.PART_PREFIX, "." + self.PART_PREFIX))]
        return sorted(n for n in names if hidden or not posixpath.basename(n).startswith("."))

    def committed(self, threads: int = 16) -> pa.Table:
        """One row per committed image: ``image_uri``, ``status``, ``file`` (+ per-file counts)."""
        fs, root = self._fs()
        files = self._part_files(fs, root)

        def load(path: str) -> tuple[pa.Table, dict]:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                table = parquet.read(columns=["image_uri", "status"])
                meta = parquet.schema_arrow.metadata or {}
            counts = json.loads(meta.get(COUNTS_KEY, b"{}"))
            name = posixpath.basename(path)
            return table.append_column("file", pa.array([name] * table.num_rows, pa.string())), counts

        with ThreadPoolExecutor(max(1, min(threads, len(files)))) as pool:
            loaded = list(pool.map(load, files))
        tables = [t for t, _ in loaded] or [
            pa.table(
                {
                    "image_uri": pa.array([], pa.string()),
                    "status": pa.array([], pa.string()),
                    "file": pa.array([], pa.string()),
                }
            )
        ]
        table = pa.concat_tables(tables)
        instances = sum(c.get("instances", 0) for _, c in loaded)
        return table.replace_schema_metadata({"instances": str(instances), "files": str(len(files))})

    def remove_duplicates(self, committed: pa.Table, run_id: str) -> int:
        """Rewrite files holding images an earlier file already holds; returns rows dropped.

        Only a writer of a killed driver that passed the run-id fence just before a new run
        listed the output can cause this. Each affected file is committed again without
        those rows (a new name), then the old file is deleted: a crash in between leaves
        duplicates for the next run to repair, never a lost row.
        """
        seen: set[str] = set()
        drop: dict[str, set[str]] = {}
        for uri, name in zip(committed["image_uri"].to_pylist(), committed["file"].to_pylist()):
            if uri in seen:
                drop.setdefault(name, set()).add(uri)
            seen.add(uri)
        fs, root = self._fs()
        for name, uris in drop.items():
            with fs.open(f"{root}/{self.PREDICTIONS}/{name}", "rb") as handle:
                table = pq.read_table(handle)
            keep = table.filter(pc.invert(pc.is_in(table["image_uri"], value_set=pa.array(sorted(uris)))))
            if keep.num_rows:
                self.commit(keep, run_id)
            fs.rm_file(f"{root}/{self.PREDICTIONS}/{name}")
        return sum(len(u) for u in drop.values())

    def commit(self, rows: pa.Table, run_id: str) -> dict:
        """Write ``rows`` as one Parquet file, atomically, unless a newer run owns the output.

        Returns the file name and its counts. The name depends only on the rows' image URIs.
        """
        rows = rows.cast(ROW_SCHEMA).sort_by("image_uri")
        uris = rows["image_uri"].to_pylist()
        name = self.PART_PREFIX + hashlib.sha256("\n".join(uris).encode()).hexdigest()[:24] + ".parquet"
        counts = {
            "rows": rows.num_rows,
            "ok": int(pc.sum(pc.equal(rows["status"], "ok")).as_py() or 0),
            "instances": int(pc.sum(pc.list_value_length(rows["instances"])).as_py() or 0),
        }
        counts["errors"] = counts["rows"] - counts["ok"]
        buffer = io.BytesIO()
        meta = {COUNTS_KEY: json.dumps(counts).encode()}
        pq.write_table(rows.replace_schema_metadata(meta), buffer, compression="zstd")
        fs, root = self._fs()

        def attempt() -> None:
            current = (self.read_manifest() or {}).get("run_id")
            if current != run_id:
                raise Superseded(f"{self.url}: run {run_id} was superseded by run {current}; not committing {name}")
            if _is_local(fs):
                fs.makedirs(f"{root}/predictions", exist_ok=True)
            self._atomic_write(fs, f"{root}/{self.PREDICTIONS}/{name}", buffer.getvalue())

        retry_io(attempt, attempts=6, permanent=(Superseded, PermissionError, ValueError, TypeError))
        return {"file": name, **counts}

    @staticmethod
    def _atomic_write(fs, path: str, blob: bytes) -> None:
        if _is_local(fs):
            head, tail = posixpath.split(path)
            temp = f"{head}/.{tail}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        else:  # one PUT (or a completed multipart upload) is atomic on object stores
            fs.pipe_file(path, blob)


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")
