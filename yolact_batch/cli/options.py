"""Options shared by several commands, and the typed values they become.

The detection options are derived from ``InferenceRequest``'s fields (one option per field,
its help text from the field), so a new setting needs no change here.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from yolact_batch.backends.factory import BACKENDS, BackendOptions
from yolact_batch.backends.torch import COMPILE_MODES, PRECISIONS
from yolact_batch.core.settings import NMS_METHODS, InferenceRequest
from yolact_batch.io.storage import StorageOptions

_CHOICES = {"nms": NMS_METHODS}


def _base_type(annotation) -> type:
    """``int`` for ``int | None`` and so on (the annotations are strings: postponed evaluation)."""
    hint = typing.get_type_hints(InferenceRequest)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    return args[0]


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """``--score-threshold``, ``--classes``, ... : one option per ``InferenceRequest`` field."""
    g = parser.add_argument_group("detection settings (defaults reproduce the reference evaluation)")
    for f in dataclasses.fields(InferenceRequest):
        flag, kind, help = "--" + f.name.replace("_", "-"), _base_type(f.name), f.metadata["help"]
        if kind is bool:
            g.add_argument(flag, dest=f.name, action="store_true", default=None, help=help)
        elif f.name == "classes":
            g.add_argument(flag, dest=f.name, type=_comma_list, help=help)
        else:
            g.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=_CHOICES.get(f.name), help=help)


def request_from_args(args: argparse.Namespace) -> InferenceRequest:
    """The ``InferenceRequest`` the options of ``add_inference_options`` describe."""
    return InferenceRequest(**{f.name: getattr(args, f.name) for f in dataclasses.fields(InferenceRequest)})


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """How to load and run the model: backend, providers, threads, batch size, sidecar."""
    g = parser.add_argument_group("model runtime")
    g.add_argument("--backend", choices=BACKENDS, default="onnx", help="inference backend (onnx)")
    g.add_argument("--providers", type=_comma_list, default=("cpu",),
                   help="ONNX Runtime providers, comma separated: cpu, cuda, tensorrt")  # fmt: skip
    g.add_argument("--intra-op-threads", type=int, help="ONNX Runtime threads per model (default: its own)")
    g.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    g.add_argument("--engine-cache", help="tensorrt: folder or URL of built engines (segment: default OUTPUT/_engines)")
    g.add_argument("--sidecar", help="JSON/TOML description of an ONNX model without yolact_batch metadata")
    t = parser.add_argument_group("torch backend (--backend torch: a .pth checkpoint or our .pt model file)")
    t.add_argument("--config", help="config of an official .pth, e.g. yolact_base (default: from the weights)")
    t.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu, cuda or cuda:N (auto)")
    t.add_argument("--precision", choices=PRECISIONS, default="fp32", help="network precision; the head is fp32 (fp32)")
    t.add_argument("--compile", choices=COMPILE_MODES, default="off",
                   help="off, cuda-graphs (one graph per batch size) or compile (torch.compile) (off)")  # fmt: skip


def backend_from_args(args: argparse.Namespace) -> BackendOptions:
    """The ``BackendOptions`` the options of ``add_model_options`` describe."""
    return BackendOptions(
        backend=args.backend, providers=args.providers, intra_op_threads=args.intra_op_threads,
        batch_size=args.batch_size, engine_cache=args.engine_cache, config=args.config, device=args.device,
        precision=args.precision, compile=args.compile,
    )  # fmt: skip


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """Object-storage options; credentials never go on the command line."""
    o = parser.add_argument_group("object storage (credentials come from the AWS/GCP environment and config files)")
    o.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    o.add_argument("--anonymous", action="store_true", help="public buckets: no credentials")
    o.add_argument("--profile", help="AWS profile name")
    o.add_argument("--region", help="AWS region name")


def storage_from_args(args: argparse.Namespace) -> StorageOptions:
    """The ``StorageOptions`` the options of ``add_storage_options`` describe."""
    return StorageOptions(
        endpoint_url=args.endpoint_url, anonymous=args.anonymous, profile=args.profile, region=args.region
    )


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())
