"""``yolact-batch export``: a dbolya/yolact ``.pth`` checkpoint to ONNX."""

from __future__ import annotations

import argparse
import sys
import time


def add_command(subparsers) -> None:
    e = subparsers.add_parser("export", help="export a dbolya/yolact .pth checkpoint to ONNX")
    e.add_argument("--checkpoint", required=True, help="dbolya/yolact .pth file")
    e.add_argument("--config", required=True, help="reference config name, e.g. yolact_base, yolact_resnet50")
    e.add_argument("--output", "-o", required=True, help="ONNX file to write")
    e.add_argument("--contract", choices=("graph", "raw"), default="graph", help="graph: NMS in the model (default)")
    g = e.add_argument_group("graph contract: detection settings built into the model (reference defaults)")
    g.add_argument("--score-threshold", type=float, default=0.0, help="drop detections scoring <= this (0)")
    g.add_argument("--conf-threshold", type=float, default=0.05, help="minimum prior confidence (0.05)")
    g.add_argument("--iou-threshold", type=float, default=0.5, help="Fast NMS IoU threshold (0.5)")
    g.add_argument("--top-k", type=int, default=200, help="candidates per class entering NMS (200)")
    g.add_argument("--max-detections", type=int, default=100, help="detections per image (100)")
    g.add_argument("--cross-class-nms", action="store_true", help="one NMS over all classes")
    e.add_argument(
        "--deform-conv", choices=("onnx", "decomposed"), default="onnx",
        help="YOLACT++ deformable convs: ONNX DeformConv (opset 19, onnxruntime>=1.30; default) "
        "or decomposed into standard ops (opset 17, any runtime, slower)",
    )  # fmt: skip
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from yolact_batch.torchnet.onnx_export import export_onnx
    except ImportError as exc:
        raise SystemExit(f"error: export needs torch and onnx: pip install 'yolact-batch[export]' ({exc})") from None
    from yolact_batch.core.settings import DetectSettings

    detect = DetectSettings(
        conf_threshold=args.conf_threshold, iou_threshold=args.iou_threshold, top_k=args.top_k,
        max_detections=args.max_detections, cross_class_nms=args.cross_class_nms,
    )  # fmt: skip
    start = time.perf_counter()
    path = export_onnx(
        args.checkpoint, args.config, args.output,
        contract=args.contract, detect=detect, score_threshold=args.score_threshold, deform_conv=args.deform_conv,
    )  # fmt: skip
    print(f"export: wrote {path} ({args.contract} contract) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0
