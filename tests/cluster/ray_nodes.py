"""A multi-node Ray cluster on this machine made of real ``ray start --block`` processes.

    with LocalCluster(tmp_path / "ray", env=env) as cluster:
        cluster.start_head(num_cpus=0)
        worker, = cluster.add_workers(1, num_cpus=2)
        job = cluster.submit(["python", "jobs/segment.py", ...], working_dir=REPO)
        cluster.wait_job(job, timeout=120)       # -> "SUCCEEDED" (or raises with the job's log)
        worker.kill()                            # node loss: SIGKILL to all of its processes

Each node is one ``ray start --block`` process started in its own session; the GCS, raylet,
dashboard, agents and workers it spawns are its descendants (Ray 2.60 puts each worker in a
process group of its own, so a node is its process tree, not one group). ``stop()`` sends
SIGTERM to each ``ray start`` (it ends the processes it started) and SIGKILLs whatever the
cluster started that is still alive after a timeout, by PID (checked against the process start time, so
a reused PID is never hit). Never ``ray stop``: it ends every Ray process of the machine.

Every port is picked free, worker ports come from the OS, and ``--temp-dir`` is a folder of the
cluster's own (short: Ray's socket paths must fit in 107 bytes, deleted by ``stop``), so clusters
of parallel test runs do not collide.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's CLI: nodes run the venv's Python


_PICKED: set[int] = set()


def free_port() -> int:
    """A port free on every interface, below the kernel's ephemeral range (so that no socket
    bound to port 0 and no outgoing connection takes it before Ray binds it), never picked before."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(20000, low)
        if port in _PICKED:
            continue
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port


class NodeExited(RuntimeError):
    """A ``ray start`` process ended while the cluster waited for it."""


# --- processes, read from /proc -----------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time in clock ticks) of a live process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), int(fields[19])) if fields[0] not in ("Z", "X") else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tree(root: int) -> dict[int, int]:
    """``{pid: start time}`` of ``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[1]
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in starts and pid not in found:
            found[pid] = starts[pid]
            todo.extend(children.get(pid, []))
    return found


def _naming(text: str) -> dict[int, int]:
    """``{pid: start time}`` of live processes whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and text in _cmdline(int(entry.name)) and (stat := _stat(int(entry.name))):
            found[int(entry.name)] = stat[1]
    return found


def _alive(processes: dict[int, int]) -> dict[int, int]:
    """The entries of ``{pid: start time}`` that are still the same live process."""
    return {pid: start for pid, start in processes.items() if (stat := _stat(pid)) and stat[1] == start}


def _kill(processes: dict[int, int]) -> None:
    for pid in _alive(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- nodes and the cluster ----------------------------------------------------------------


@dataclass
class RayNode:
    """One ``ray start --block`` process and everything it started."""

    name: str
    process: subprocess.Popen
    log: Path
    seen: dict[int, int] = field(default_factory=dict)  # {pid: start time} of every process observed

    def processes(self) -> dict[int, int]:
        """``{pid: start time}`` of the node's live processes (also remembered for ``stop``)."""
        current = _tree(self.process.pid) if self.process.poll() is None else {}
        self.seen.update(current)
        return current

    def survivors(self) -> dict[int, int]:
        """The processes ever observed on this node that are still alive."""
        return _alive(self.seen)

    def pids(self, title: str = "") -> list[int]:
        """Live PIDs of this node whose command line contains ``title``."""
        return sorted(pid for pid in self.processes() if title in _cmdline(pid))

    def kill(self) -> int:
        """Node loss: SIGKILL every process of the node at once; returns how many were killed."""
        victims = self.processes()
        _kill(victims)
        self.process.wait(timeout=30)
        return len(victims)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM ``ray start`` (it ends its children), then SIGKILL what is left."""
        self.processes()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while _alive(self.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        _kill(self.seen)
        self.process.wait(timeout=10)


class LocalCluster:
    """A head and worker nodes as separate ``ray start`` processes on this machine.

    Args:
        root: a folder for the nodes' logs.
        env: the environment of every node (their tasks and jobs inherit it).
        object_store_memory: bytes of object store per node.
    """

    def __init__(self, root: Path, env: dict[str, str], object_store_memory: int = 400 * 2**20) -> None:
        self.root = Path(root)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        # The venv's bin first: `ray job submit ... -- python jobs/segment.py` runs this Python.
        # No drain on SIGTERM: it waits up to 30 s for leases that a test cluster need not hand over.
        self.env = {
            **env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        self.object_store_memory = object_store_memory
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        self.failed: list[RayNode] = []  # nodes that did not come up (stopped too, with the others)
        self.gcs_port = free_port()
        self.dashboard_port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def nodes(self) -> list[RayNode]:
        return [*self.workers, *([self.head] if self.head else []), *self.failed]

    def _start(self, name: str, args: list[str], cores: set[int] | None = None) -> RayNode:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        ports = [
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        ]
        command = [
            RAY,
            "start",
            "--block",
            *args,
            "--temp-dir",
            str(self.temp_dir),
            "--disable-usage-stats",
            "--object-store-memory",
            str(self.object_store_memory),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            *[a for p in ports for a in (p, str(free_port()))],
        ]
        if cores:  # taskset execs the command: the node's PID stays that of `ray start`
            command = ["taskset", "--cpu-list", ",".join(map(str, sorted(cores))), *command]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root, start_new_session=True
            )
        return RayNode(name, process, log)

    def start_head(self, num_cpus: float = 0, timeout: float = 90.0) -> RayNode:
        """``ray start --head`` (dashboard and job server included); waits until jobs can be submitted."""

        def args() -> list[str]:
            self.gcs_port, self.dashboard_port = free_port(), free_port()
            return [
                "--head",
                "--port",
                str(self.gcs_port),
                "--num-cpus",
                str(num_cpus),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(self.dashboard_port),
                "--ray-client-server-port",
                str(free_port()),
            ]

        def ready() -> bool:
            return self._get("/api/version") is not None and self.alive_nodes() == 1

        self.head = self._up("head", args, ready, None, timeout)
        return self.head

    def add_workers(
        self, count: int, num_cpus: float, cores: list[set[int]] | None = None, timeout: float = 90.0
    ) -> list[RayNode]:
        """``count`` x ``ray start --address HEAD``, one after the other (raylets starting together
        on one machine can collide on ports); waits until the cluster counts each alive.

        ``cores[i]``: the CPU cores the i-th new node and all its processes may run on (its
        logical ``num_cpus`` made physical, like a machine of that size); default: any core.
        """

        def args() -> list[str]:
            return ["--address", self.address, "--num-cpus", str(num_cpus)]

        nodes = []
        for i in range(count):
            alive = 2 + sum(w.process.poll() is None for w in self.workers)
            node = self._up(
                f"worker{len(self.workers) + 1}",
                args,
                lambda n=alive: self.alive_nodes() == n,
                cores[i] if cores else None,
                timeout,
            )
            self.workers.append(node)
            nodes.append(node)
        return nodes

    def _up(self, name: str, args, ready, cores: set[int] | None, timeout: float, attempts: int = 2) -> RayNode:
        """Start a node and wait for ``ready()``. A ``ray start`` that exits during start-up (seen
        on a loaded machine: a port taken meanwhile, a raylet slow to register) is tried again."""
        attempt = 1
        while True:
            node = self._start(name if attempt == 1 else f"{name}.{attempt}", args(), cores)
            try:
                self._wait(ready, timeout, f"{name} to start", [n for n in (self.head, node) if n])
                return node
            except BaseException as exc:
                self.failed.append(node)  # stopped with the cluster
                if not isinstance(exc, NodeExited) or node.process.poll() is None or attempt == attempts:
                    raise
                attempt += 1

    def alive_nodes(self) -> int:
        nodes = self._get("/nodes?view=summary") or {}
        summary = nodes.get("data", {}).get("summary", [])
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def _wait(self, predicate, timeout: float, what: str, nodes: list[RayNode]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in nodes:
                if node.process.poll() is not None:
                    raise NodeExited(
                        f"ray start ({node.name}) exited {node.process.returncode}:\n" + node.log.read_text()[-3000:]
                    )
            if predicate():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def _get(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(self.dashboard + path, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, entrypoint: list[str], working_dir: Path, timeout: float = 120.0) -> str:
        """``ray job submit --no-wait --working-dir DIR -- ENTRYPOINT``; returns the submission id."""
        job = f"test-{uuid.uuid4().hex[:10]}"
        command = [
            RAY,
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--submission-id",
            job,
            "--no-wait",
            "--working-dir",
            str(working_dir),
            "--",
            *entrypoint,
        ]
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, env=self.env, cwd=working_dir, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"ray job submit exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return job

    def job_status(self, job: str) -> str:
        info = self._get(f"/api/jobs/{job}")
        return info["status"] if info else "UNKNOWN"

    def job_logs(self, job: str) -> str:
        """The job's driver output (also saved as ``ROOT/JOB.log``)."""
        logs = (self._get(f"/api/jobs/{job}/logs") or {}).get("logs", "")
        (self.root / f"{job}.log").write_text(logs)
        return logs

    def wait_job(self, job: str, timeout: float) -> str:
        """Wait for a terminal status; returns it (raises with the job's log past ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job_status(job)
            if status in TERMINAL:
                return status
            time.sleep(0.5)
        raise TimeoutError(f"job {job} still {self.job_status(job)} after {timeout}s:\n{self.job_logs(job)[-5000:]}")

    # --- shutdown ---------------------------------------------------------------------------

    def processes(self) -> dict[int, int]:
        """``{pid: start time}`` of every live process this cluster started: the nodes' process
        trees, and any process that names the cluster's temp dir (one whose parent died)."""
        for node in self.nodes:
            node.processes()
        return _alive({**_naming(str(self.temp_dir)), **self._seen()})

    def _seen(self) -> dict[int, int]:
        return {pid: start for node in self.nodes for pid, start in node.seen.items()}

    def stop(self) -> None:
        """Stop the workers, then the head; afterwards nothing this cluster started is alive."""
        before = self.processes()
        for node in self.nodes:
            node.stop()
        _kill({**before, **self._seen(), **_naming(str(self.temp_dir))})
        shutil.rmtree(self.temp_dir, ignore_errors=True)
