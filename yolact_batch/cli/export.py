"""``yolact-batch export``: a dbolya/yolact ``.pth`` checkpoint (official or custom-trained) to ONNX."""

from __future__ import annotations

import argparse
import sys
import time

_DETECT_FLAGS = ("conf_threshold", "iou_threshold", "top_k", "max_detections", "cross_class_nms")


def add_command(subparsers) -> None:
    e = subparsers.add_parser(
        "export", help="export a dbolya/yolact .pth checkpoint (official or custom-trained) to ONNX",
        description="The network (backbone, YOLACT++ parts, anchors per location, classes, prototypes) is read "
        "from the weights; what they cannot tell comes from the options below, official values by default.",
    )  # fmt: skip
    e.add_argument("--checkpoint", required=True, help="dbolya/yolact .pth file")
    e.add_argument("--output", "-o", required=True, help="ONNX file to write")
    e.add_argument("--contract", choices=("graph", "raw"), default="graph", help="graph: NMS in the model (default)")
    c = e.add_argument_group("what the weights cannot tell (defaults: the official config for the network)")
    c.add_argument(
        "--config", help="start from this official config (yolact_base, yolact_im700...); checked against the weights"
    )
    c.add_argument("--class-names", help="COCO JSON (its categories and ids), a text file (one name per line) or a,b,c")
    c.add_argument("--overrides", help="JSON/TOML of the reference's config keys: max_size, backbone.pred_scales, ...")
    c.add_argument("--input-size", type=int, help="network input side (the reference's max_size; default 550)")
    g = e.add_argument_group("detection settings: built into a graph model, defaults of a raw one (reference values)")
    g.add_argument("--score-threshold", type=float, default=0.0, help="graph: drop detections scoring <= this (0)")
    g.add_argument("--conf-threshold", type=float, help="minimum prior confidence (0.05; overrides: nms_conf_thresh)")
    g.add_argument("--iou-threshold", type=float, help="Fast NMS IoU threshold (0.5; overrides: nms_thresh)")
    g.add_argument("--top-k", type=int, help="candidates per class entering NMS (200; overrides: nms_top_k)")
    g.add_argument("--max-detections", type=int, help="detections per image (100; overrides: max_num_detections)")
    g.add_argument("--cross-class-nms", action="store_true", default=None, help="one NMS over all classes")
    e.add_argument(
        "--deform-conv", choices=("onnx", "decomposed"), default="onnx",
        help="YOLACT++ deformable convs: ONNX DeformConv (opset 19, onnxruntime>=1.30; default) "
        "or decomposed into standard ops (opset 17, any runtime, slower)",
    )  # fmt: skip
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from yolact_batch.torchnet.checkpoint import config_for_checkpoint
        from yolact_batch.torchnet.onnx_export import export_onnx
    except ImportError as exc:
        raise SystemExit(f"error: export needs torch and onnx: pip install 'yolact-batch[export]' ({exc})") from None
    from yolact_batch.core.overrides import ConfigOverrides, read_overrides
    from yolact_batch.io.class_names import read_class_names

    overrides = read_overrides(args.overrides) if args.overrides else ConfigOverrides()
    if args.input_size is not None:
        if args.input_size < 32:
            raise ValueError(f"--input-size must be >= 32, got {args.input_size}")
        overrides = overrides.merged(ConfigOverrides(input_size=args.input_size, origin="--input-size"))
    classes = read_class_names(args.class_names) if args.class_names else None
    resolved = config_for_checkpoint(
        args.checkpoint, config_name=args.config, overrides=overrides,
        class_names=classes.names if classes else None, category_ids=classes.category_ids if classes else None,
        class_origin=classes.origin if classes else "--class-names",
    )  # fmt: skip
    print(f"export: {args.checkpoint}\n{resolved.describe()}", file=sys.stderr)
    detect = overrides.detect_settings(**{k: getattr(args, k) for k in _DETECT_FLAGS})
    start = time.perf_counter()
    path = export_onnx(
        args.checkpoint, resolved.config, args.output,
        contract=args.contract, detect=detect, score_threshold=args.score_threshold, deform_conv=args.deform_conv,
    )  # fmt: skip
    print(f"export: wrote {path} ({args.contract} contract) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0
