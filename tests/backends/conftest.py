"""GPU tests in this folder run only where TensorRT >= 10, cuda-python and a CUDA device all exist."""

from __future__ import annotations

import pytest


def tensorrt_gpu_missing() -> str | None:
    """Why TensorRT can't run here (None when it can)."""
    from yolact_batch.backends.tensorrt import import_cudart, import_tensorrt

    try:
        import_tensorrt()
        cudart = import_cudart()
    except ImportError as exc:
        return str(exc).split(";")[0]
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # a broken driver install raises from the bindings
        return f"the CUDA runtime is unusable ({type(exc).__name__}: {exc})"
    if int(err) != 0 or count < 1:
        return f"no CUDA device (cudaGetDeviceCount: {getattr(err, 'name', err)}, count {count})"
    return None


@pytest.fixture(scope="session")
def tensorrt_gpu() -> None:
    """Skip the requesting test, with the reason, unless TensorRT can run on a GPU here."""
    reason = tensorrt_gpu_missing()
    if reason:
        pytest.skip(f"needs TensorRT >= 10, cuda-python and a CUDA GPU: {reason}")
