"""The torch backend on a CUDA GPU: pinned uploads on a side stream, two batches in flight.

Imported only when ``TorchBackend`` runs on CUDA. Per batch, ``_submit`` enqueues without
waiting: the host copy into pinned memory, the upload on the upload stream, the forward on
the compute stream (after the upload's event), and the download into pinned host tensors on
the download stream (after the compute's event). ``pipelined`` keeps two batches submitted,
so the next batch's upload and compute are queued while this batch's results are read back
and handed over. Downloads go into fresh pinned tensors from torch's caching host allocator:
the numpy arrays returned view them without a copy, and the memory is reused once they are
released.

CUDA graphs (``compile="cuda-graphs"``): one graph per batch size, captured on first use
after three warm-up runs; a replay's outputs are cloned on the device (a few MB at HBM
speed) so the next replay cannot overwrite them before they are downloaded.

TF32 is switched off for float32 convolutions and matmuls (process-wide), so fp32 on the GPU
is comparable with the golden reference; fp16/bf16 use the tensor cores anyway.

Never executed on a GPU while this was written (no GPU was lent): see README, "GPU paths".
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from yolact_batch.backends.engine_plan import pipelined

DEPTH = 2  # batches in flight
WARMUP_RUNS = 3  # before a CUDA graph is captured (cuDNN autotuning, lazy initialisation)


def disable_tf32(torch) -> None:
    """Exact float32 convolutions and matmuls on Ampere and later (the default allows TF32 convs)."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):  # torch >= 2.9
        cudnn_conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


class CudaRunner:
    """Batches through ``program`` on ``device``; ``stream`` yields each batch's output arrays.

    Args:
        program: the ``torchnet.inference.InferenceProgram`` (moved to ``device`` here).
        device: ``"cuda"`` or ``"cuda:N"``.
        compile: ``"off"``, ``"cuda-graphs"`` or ``"compile"`` (see ``TorchOptions``).
    """

    def __init__(self, program, device: str, *, compile: str = "off") -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        disable_tf32(torch)
        torch.backends.cudnn.benchmark = True  # shapes repeat per batch size: tune once each
        self._program = program.to(self.device).eval()
        self._forward = torch.compile(self._program, dynamic=False) if compile == "compile" else self._program
        self._graphs: dict[int, tuple] = {} if compile == "cuda-graphs" else None
        self._upload = torch.cuda.Stream(self.device)
        self._compute = torch.cuda.Stream(self.device)
        self._download = torch.cuda.Stream(self.device)

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
        yield from pipelined(batches, self._submit, self._finish, DEPTH)

    def _submit(self, images: np.ndarray, slot: int):
        """Enqueue one batch's upload, forward and download; returns (host tensors, download event)."""
        if not len(images):
            return None  # TorchBackend fills in the empty outputs
        torch = self._torch
        graph = self._graph(len(images)) if self._graphs is not None else None
        pinned = torch.empty(images.shape, dtype=torch.float32, pin_memory=True)
        pinned.copy_(torch.from_numpy(images))
        with torch.cuda.stream(self._upload):
            staged = pinned.to(self.device, non_blocking=True)
            uploaded = torch.cuda.Event()
            uploaded.record(self._upload)
        with torch.cuda.stream(self._compute), torch.inference_mode():
            self._compute.wait_event(uploaded)
            staged.record_stream(self._compute)  # allocated on the upload stream, read here
            if graph is None:
                outputs = self._forward(staged)
            else:
                static_in, captured, static_out = graph
                static_in.copy_(staged)
                captured.replay()
                outputs = [o.clone() for o in static_out]
            computed = torch.cuda.Event()
            computed.record(self._compute)
        with torch.cuda.stream(self._download):
            self._download.wait_event(computed)
            hosts = []
            for out in outputs:
                out.record_stream(self._download)
                host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                host.copy_(out, non_blocking=True)
                hosts.append(host)
            downloaded = torch.cuda.Event()
            downloaded.record(self._download)
        return hosts, downloaded

    @staticmethod
    def _finish(job) -> list[np.ndarray] | None:
        if job is None:
            return None
        hosts, downloaded = job
        downloaded.synchronize()
        return [h.numpy() for h in hosts]

    def _graph(self, batch: int) -> tuple:
        """(static input, CUDA graph, static outputs) for ``batch`` images, captured on first use."""
        if batch not in self._graphs:
            torch = self._torch
            side = self._program.network.config.input_size
            static_in = torch.zeros((batch, 3, side, side), dtype=torch.float32, device=self.device)
            torch.cuda.synchronize(self.device)  # nothing of an earlier batch may still run
            with torch.cuda.stream(self._compute), torch.inference_mode():
                for _ in range(WARMUP_RUNS):
                    self._program(static_in)
            self._compute.synchronize()
            captured = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(captured):
                static_out = self._program(static_in)
            self._graphs[batch] = (static_in, captured, static_out)
        return self._graphs[batch]

    def close(self) -> None:
        """Drop the program, graphs and streams; cached device memory goes back to the driver."""
        torch = self._torch
        torch.cuda.synchronize(self.device)
        self._program = self._forward = self._graphs = None
        torch.cuda.empty_cache()
