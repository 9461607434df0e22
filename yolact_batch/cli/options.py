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
from yolact_batch.io.prelabel import PrelabelSettings, parse_pairs
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
    o.add_argument(
        "--io-retry-window", type=float, default=120.0,
        help="seconds a failing storage call is retried before the run fails (120; see README Bad input policy)",
    )  # fmt: skip


def add_suffix_option(parser) -> None:
    """``--image-suffixes``: what is listed as an image in folders and tar shards."""
    from yolact_batch.io.sources import IMAGE_SUFFIXES, image_suffixes

    parser.add_argument(
        "--image-suffixes", type=image_suffixes, default=None,
        help="file suffixes read as images in folders and tar shards: a list (.jpg,.png), or changes to the default "
        f"(+.heic,-.gif); default: what this OpenCV reads ({' '.join(IMAGE_SUFFIXES)})",
    )  # fmt: skip


def storage_from_args(args: argparse.Namespace) -> StorageOptions:
    """The ``StorageOptions`` the options of ``add_storage_options`` describe."""
    return StorageOptions(
        endpoint_url=args.endpoint_url, anonymous=args.anonymous, profile=args.profile, region=args.region,
        retry_window_s=args.io_retry_window,
    )  # fmt: skip


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _pair(value_type):
    """argparse type of one ``NAME=VALUE`` option value."""

    def parse(text: str):
        try:
            return parse_pairs([text], "option", value_type)[0]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("option: ")) from None

    return parse


def add_prelabel_options(parser: argparse.ArgumentParser) -> None:
    """The controls every pre-labeling export shares (``io.prelabel.PrelabelSettings``)."""
    g = parser.add_argument_group("pre-labels (which predictions are exported, and under which label names)")
    g.add_argument("--score-threshold", type=float, default=0.0, help="keep instances scoring above this (0)")
    g.add_argument("--class-threshold", action="append", default=[], type=_pair(float), metavar="CLASS=T",
                   help="score threshold of one class, overriding --score-threshold (repeatable)")  # fmt: skip
    g.add_argument(
        "--min-area", type=int, default=1, help="keep masks of at least this many pixels (1: drop empty masks)"
    )
    g.add_argument("--top-n", type=int, help="keep at most the N best-scoring instances per image")
    g.add_argument("--classes", type=_comma_list, help="export only these classes (our names, comma separated)")
    g.add_argument("--rename", action="append", default=[], type=_pair(str), metavar="OURS=THEIRS",
                   help="the target project's label for one of our classes (repeatable)")  # fmt: skip


def prelabel_from_args(args: argparse.Namespace) -> PrelabelSettings:
    """The ``PrelabelSettings`` the options of ``add_prelabel_options`` describe."""
    return PrelabelSettings(
        score_threshold=args.score_threshold, class_thresholds=tuple(args.class_threshold), min_area=args.min_area,
        top_n=args.top_n, classes=args.classes, rename=tuple(args.rename),
    )  # fmt: skip
