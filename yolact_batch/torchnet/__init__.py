"""Torch twin of the YOLACT network and its ONNX exporter (needs the ``export`` extra: torch, onnx)."""

from yolact_batch.torchnet.checkpoint import load_checkpoint
from yolact_batch.torchnet.network import Yolact, build_network
from yolact_batch.torchnet.onnx_export import export_onnx

__all__ = ["Yolact", "build_network", "export_onnx", "load_checkpoint"]
