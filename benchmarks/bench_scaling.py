"""Scaling across nodes: the same `segment` job on 1 vs 2 worker nodes of 1 CPU each.

Each configuration is a fresh local cluster of separate ``ray start`` processes
(``tests/cluster/ray_nodes.py``): a head with 0 CPUs (it runs the driver only) and N worker
nodes with ``--num-cpus 1``, each bound to its own core (``taskset``) so that "1 CPU"
is physical, as on a 1-vCPU machine. Jobs go through ``ray job submit --working-dir . -- python
jobs/segment.py`` over local files, one model actor per node (``--actors N``), one ONNX Runtime
thread each. Model: the golden yolact_resnet50 graph model (``bench_job.golden_model``; about
1.3 s per image on one free core, against tens of milliseconds for decoding, masks and RLE), over
COCO val2017 images.

* ``img_s``: the job's own figure (``_SUCCESS``: images / wall time of ``run``; listing, model
  validation on the driver, Ray Data and actor start-up included).
* ``steady_img_s``: the marginal rate, start-up excluded: on the same cluster a short job of
  ``SHORT`` images runs first, then (images - SHORT) / (wall time - the short job's wall time).
  (Commit times cannot give it: mask and commit tasks run in bursts behind the model.)
* ``ratio`` / ``steady_ratio``: 2 nodes over 1 node (2.0 would be linear).
* ``node_cores``: CPU time the worker nodes' processes got from submission to ``SUCCEEDED`` /
  that time, that is the cores the nodes actually had (at most 1 per node); ``node_cpu_s_per_image``: the work
  per image, wherever it ran. ``ratio`` is about the ratio of ``node_cores`` over the ratio of
  ``node_cpu_s_per_image``: the first says what the machine gave, the second what distribution
  cost (a second model load, idle waits). ``nodes_with_actor``: the nodes a model actor ran on
  (Ray places the actors; 2 on 2 nodes means one each).

What limits the ratio: start-up that does not shrink with nodes (driver, listing, one model load
per actor, Ray Data planning: ``img_s`` only), the pipeline's fill and drain (the last batches
run on one node while the other idles), and the cores themselves: here as many as nodes, shared
with the head, the driver and whatever else runs on the machine (``node_cores``, ``load_avg``).

Prints one JSON line. Usage: ``python benchmarks/bench_scaling.py [--images 40]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, require_shared  # first: puts the repository on sys.path
from bench_job import golden_model

from tests.cluster.ray_nodes import LocalCluster, RayNode

STAGES = [
    "--batch-size",
    "2",
    "--read-block",
    "2",
    "--commit-size",
    "2",
    "--intra-op-threads",
    "1",
    "--cpus-per-actor",
    "0.5",
    "--decode-cpus",
    "0.25",
    "--io-cpus",
    "0.125",
]
SHORT = 4  # images of the short job whose wall time is the fixed cost
TICKS = os.sysconf("SC_CLK_TCK")


def node_env() -> dict[str, str]:
    """This environment, with Ray's token auth off: the cluster and `ray job submit` must agree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


class CpuMeter:
    """CPU seconds the processes of ``nodes`` use while it runs (``seconds``; ``wall``: how long
    it ran), from ``/proc`` every 0.5 s (a process that exits loses at most its last 0.5 s)."""

    def __init__(self, nodes: list[RayNode]) -> None:
        self.nodes, self.first, self.last, self.wall = nodes, {}, {}, 0.0
        self.actor_nodes: set[str] = set()  # the nodes a model actor was seen on
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[tuple[int, int], int]:
        ticks = {}
        for node in self.nodes:
            if node.pids("ModelActor"):
                self.actor_nodes.add(node.name)
            for pid, start in node.processes().items():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                ticks[pid, start] = int(fields[11]) + int(fields[12])  # utime + stime
        return ticks

    def _run(self) -> None:
        while not self.done.wait(0.5):
            self.last.update(self._sample())

    def __enter__(self) -> CpuMeter:
        self.first = self._sample()
        self.wall = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.last.update(self._sample())
        self.wall = time.perf_counter() - self.wall

    @property
    def seconds(self) -> float:
        return sum(t - self.first.get(key, 0) for key, t in self.last.items()) / TICKS


def run_jobs(nodes: int, cores: list[int], model: Path, images: Path, count: int, root: Path) -> dict:
    """On a fresh cluster of ``nodes`` worker nodes (node i on core ``cores[i]``): a short job of
    ``SHORT`` images, then the job of ``count`` images; their throughput figures."""
    with LocalCluster(root / f"ray{nodes}", env=node_env()) as cluster:
        cluster.start_head(num_cpus=0)
        workers = cluster.add_workers(nodes, num_cpus=1, cores=[{core} for core in cores[:nodes]])
        short = _job(cluster, nodes, model, images, SHORT, root / f"out{nodes}-short")
        with CpuMeter(workers) as cpu:
            full = _job(cluster, nodes, model, images, count, root / f"out{nodes}")
    return {
        "images": full["images"],
        "img_s": full["images_per_s"],
        "steady_img_s": (full["images"] - short["images"]) / (full["wall_s"] - short["wall_s"]),
        "node_cores": cpu.seconds / cpu.wall,
        "node_cpu_s_per_image": cpu.seconds / full["images"],
        "nodes_with_actor": len(cpu.actor_nodes),
    }


def _job(cluster: LocalCluster, nodes: int, model: Path, images: Path, count: int, out: Path) -> dict:
    """``ray job submit`` the job, wait for it; its ``_SUCCESS``."""
    job = cluster.submit(
        [
            "python",
            "jobs/segment.py",
            "--input",
            str(images),
            "--model",
            str(model),
            "--output",
            str(out),
            "--limit",
            str(count),
            "--actors",
            str(nodes),
            *STAGES,
        ],
        working_dir=REPO,
    )
    status = cluster.wait_job(job, timeout=1800)
    if status != "SUCCEEDED":
        raise RuntimeError(f"the job on {nodes} node(s) ended {status}:\n{cluster.job_logs(job)[-5000:]}")
    return json.loads((out / "_SUCCESS").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="COCO val2017 images per run (40)")
    args = parser.parse_args()
    images = require_shared("coco_val2017_subset/val2017")
    model = golden_model()
    cores = sorted(os.sched_getaffinity(0))
    cores = [cores[0], cores[1 % len(cores)]]
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        one = run_jobs(1, cores, model, images, args.images, Path(tmp))
        two = run_jobs(2, cores, model, images, args.images, Path(tmp))
    assert one["images"] == two["images"] == args.images, (one, two)
    figures = {
        f"{name}_{label}": round(run[name], 3)
        for label, run in (("1_node", one), ("2_nodes", two))
        for name in ("img_s", "steady_img_s", "node_cores", "node_cpu_s_per_image", "nodes_with_actor")
    }
    print(
        json.dumps(
            {
                "bench": "scaling",
                "model": "yolact_resnet50 (golden weights, graph contract)",
                "images": args.images,
                "cpus_per_node": 1,
                **figures,
                "ratio": round(two["img_s"] / one["img_s"], 3),
                "steady_ratio": round(two["steady_img_s"] / one["steady_img_s"], 3),
                "machine_cores": os.cpu_count(),
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
