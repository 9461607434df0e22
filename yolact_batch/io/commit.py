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

A live driver holds ``_lease.json`` (run id, host, pid, a heartbeat every 10 s); a second
driver on the same output is refused at start while that driver lives (same host: its
process exists; another host: its heartbeat is under 60 s old). Every storage call here
follows ``storage.retry``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from yolact_batch.io.schema import ROW_SCHEMA
from yolact_batch.io.storage import PERMANENT, StorageOptions, filesystem, is_local, retry

COUNTS_KEY = b"yolact_batch.counts"
HEARTBEAT_S = 10.0
STALE_S = 60.0


class Superseded(RuntimeError):
    """A newer run owns the output; this (stale) writer must not commit."""


class OutputBusy(ValueError):
    """Another live driver is writing the output."""


class CorruptOutput(ValueError):
    """A committed file cannot be read back; names it and the fix."""


@dataclass(frozen=True)
class OutputStore:
    """The output directory: job manifest, committed Parquet files, ``_SUCCESS``. Picklable.

    The one definition of the output layout::

        OUTPUT/_job.json                      what produced the predictions + the current run id
        OUTPUT/predictions/part-<h>.parquet   committed rows (``schema.ROW_SCHEMA``)
        OUTPUT/_SUCCESS                       JSON counts, written last by a completed run
        OUTPUT/_lease.json                    the live driver: run id, host, pid, heartbeat
    """

    url: str
    storage: StorageOptions = StorageOptions()

    PREDICTIONS = "predictions"
    MANIFEST = "_job.json"
    SUCCESS = "_SUCCESS"
    PART_PREFIX = "part-"
    LEASE = "_lease.json"

    def _fs(self):
        fs, path = filesystem(self.url, self.storage)
        return fs, path.rstrip("/")

    @property
    def predictions(self) -> str:
        return self.url.rstrip("/") + "/" + self.PREDICTIONS

    def _retry(self, call, what: str):
        return retry(call, f"{what} {self.url}", self.storage.retry_window_s, permanent=(*PERMANENT, Superseded))

    def read_json(self, name: str) -> dict | None:
        fs, root = self._fs()

        def read() -> dict | None:
            try:
                return json.loads(fs.cat_file(f"{root}/{name}"))
            except FileNotFoundError:
                return None

        return self._retry(read, f"reading {name} of")

    def read_manifest(self) -> dict | None:
        return self.read_json(self.MANIFEST)

    def check_not_busy(self) -> None:
        """Refuse to start while another driver's lease on this output is live."""
        lease = self.read_json(self.LEASE)
        if lease is None or lease.get("run_id") != (self.read_manifest() or {}).get("run_id"):
            return
        age = time.time() - float(lease.get("heartbeat", 0))
        here = lease.get("host") == socket.gethostname()
        if here and lease.get("pid") == os.getpid():  # this process's own earlier run
            return
        live = _process_alive(lease.get("pid"), lease.get("pid_start")) if here else age < STALE_S
        if live:
            raise OutputBusy(
                f"{self.url} is being written by run {lease.get('run_id')} (pid {lease.get('pid')} on "
                f"{lease.get('host')}, heartbeat {age:.0f} s ago); wait for it to end or stop it, or use another --output"
            )

    def hold_lease(self, run_id: str) -> "Lease":
        """Write the lease of this driver and keep its heartbeat until ``Lease.release``."""
        return Lease(self, run_id)

    def write_manifest(self, data: dict) -> None:
        self.write_json(self.MANIFEST, data)

    def write_success(self, data: dict) -> None:
        """Mark the output complete; ``data`` (JSON) says what it holds."""
        self.write_json(self.SUCCESS, data)

    def clear_success(self) -> None:
        self.remove(self.SUCCESS)

    def write_json(self, name: str, data: dict, retried: bool = True) -> None:
        """Write ``OUTPUT/name`` atomically; ``retried=False``: one attempt (the lease heartbeat)."""
        fs, root = self._fs()
        blob = json.dumps(data, indent=2, sort_keys=True).encode()

        def write() -> None:
            if is_local(fs):
                fs.makedirs(root, exist_ok=True)
            self._atomic_write(fs, f"{root}/{name}", blob)

        self._retry(write, f"writing {name} of") if retried else write()

    def remove(self, name: str) -> None:
        fs, root = self._fs()

        def remove() -> None:
            try:
                fs.rm_file(f"{root}/{name}")
            except FileNotFoundError:
                pass

        self._retry(remove, f"removing {name} of")

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
        def listing() -> list[str]:
            try:  # refresh: s3fs caches listings, and other processes commit files
                return fs.ls(f"{root}/{self.PREDICTIONS}", detail=False, refresh=True)
            except FileNotFoundError:
                return []

        names = self._retry(listing, "listing committed files of")
        names = [n for n in names if posixpath.basename(n).startswith((self.PART_PREFIX, "." + self.PART_PREFIX))]
        return sorted(n for n in names if hidden or not posixpath.basename(n).startswith("."))

    def committed(self, threads: int = 16) -> pa.Table:
        """One row per committed image: ``image_uri``, ``status``, ``file`` (+ per-file counts)."""
        fs, root = self._fs()
        files = self._part_files(fs, root)

        def read(path: str) -> tuple[pa.Table, dict]:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                return parquet.read(columns=["image_uri", "status"]), parquet.schema_arrow.metadata or {}

        def load(path: str) -> tuple[pa.Table, dict]:
            try:
                table, meta = self._retry(lambda: read(path), "reading committed files of")
            except (pa.ArrowException, ValueError, KeyError) as exc:
                raise CorruptOutput(
                    f"{fs.unstrip_protocol(path) if '://' in self.url else path}: a committed file that cannot be read "
                    f"({type(exc).__name__}: {str(exc)[:200]}); delete it and rerun: its images will be processed again"
                ) from None
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
                raise Superseded(
                    f"{self.url}: run {run_id} was superseded by run {current} (another driver took this output over "
                    f"after this one's lease looked dead); not committing {name}: this run stops, its commits stay"
                )
            if is_local(fs):
                fs.makedirs(f"{root}/predictions", exist_ok=True)
            self._atomic_write(fs, f"{root}/{self.PREDICTIONS}/{name}", buffer.getvalue())

        self._retry(attempt, f"committing {name} to")
        return {"file": name, **counts}

    @staticmethod
    def _atomic_write(fs, path: str, blob: bytes) -> None:
        if is_local(fs):
            head, tail = posixpath.split(path)
            temp = f"{head}/.{tail}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        else:  # one PUT (or a completed multipart upload) is atomic on object stores
            fs.pipe_file(path, blob)


class Lease:
    """This driver's claim on an output: ``_lease.json`` rewritten every ``HEARTBEAT_S`` by a thread."""

    def __init__(self, output: OutputStore, run_id: str) -> None:
        self.output, self.stop = output, threading.Event()
        pid = os.getpid()
        self.record = {"run_id": run_id, "host": socket.gethostname(), "pid": pid, "pid_start": _start_time(pid)}
        self._beat()
        self.thread = threading.Thread(target=self._loop, name="output-lease", daemon=True)
        self.thread.start()

    def _beat(self, retried: bool = True) -> None:
        self.output.write_json(OutputStore.LEASE, {**self.record, "heartbeat": time.time()}, retried=retried)

    def _loop(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self._beat(retried=False)  # one attempt: release() must not wait out a retry window
            except Exception:  # a missed beat only makes the lease look older; the commits report outages
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the lease: one attempt, never raising, so that a run
        ending in a storage outage reports the outage (a lease left behind by a process that
        has exited blocks no one on its host, and others for ``STALE_S``)."""
        self.stop.set()
        self.thread.join()
        fs, root = self.output._fs()
        try:
            if json.loads(fs.cat_file(f"{root}/{OutputStore.LEASE}")).get("run_id") == self.record["run_id"]:
                fs.rm_file(f"{root}/{OutputStore.LEASE}")
        except Exception:
            pass


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), tells a reused pid apart;
    -1 for a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return -1 if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_alive(pid, start) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or _start_time(pid) in (None, start)
