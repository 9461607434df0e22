"""``evaluate``, ``export-coco``, ``export-labelstudio``, ``export-yolo`` and ``overlays``
subcommands: argparse in, explicit arguments out.

``cli.main.build_parser`` calls :func:`add_command`; each ``cmd_*`` turns parsed options into one
call of ``evaluation.evaluate``, ``io.coco_files`` (``export_results`` / ``export_dataset`` /
``export_datumaro``), ``io.labelstudio.export_labelstudio``, ``io.yolo_seg.export_yolo`` or
``evaluation.overlays.render_overlays``. The pre-labeling exports share ``add_prelabel_options``.
"""

from __future__ import annotations

import argparse
import math
import sys

from yolact_batch.cli.options import add_prelabel_options, add_storage_options, prelabel_from_args, storage_from_args


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--predictions", "-p", required=True,
        help="job output folder (predictions/*.parquet), a folder of .parquet files or one file",
    )  # fmt: skip
    p.add_argument("--allow-incomplete", action="store_true", help="read an output that has no _SUCCESS marker")
    add_storage_options(p)


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _prefix(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {text!r}")
    return old, new


def _ids(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer image ids, got {text!r}") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from yolact_batch.evaluation import STAT_NAMES, evaluate

    report = evaluate(
        args.predictions, args.ground_truth, args.output,
        iou_types=args.iou_types, match=args.match, image_ids=args.image_ids, plots=not args.no_plots,
        evaluator=args.evaluator, allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip
    metrics = report.metrics
    print("| metric | " + " | ".join(metrics) + " |")
    print("|---" * (len(metrics) + 1) + "|")
    for name in STAT_NAMES:
        values = ("-" if math.isnan(m[name]) else f"{m[name]:.3f}" for m in metrics.values())
        print(f"| {name} | " + " | ".join(values) + " |")
    counts = report.summary["counts"]
    print(
        f"evaluate: {counts['evaluated_images']} images ({counts['images_without_predictions']} without predictions), "
        f"{counts['predictions']} predictions -> {args.output.rstrip('/')}/{report.files['report']}",
        file=sys.stderr,
    )
    return 0


def cmd_export_results(args: argparse.Namespace) -> int:
    from yolact_batch.io.coco_files import export_results

    n = export_results(
        args.predictions, args.output, score_threshold=args.score_threshold, iou_type=args.iou_type,
        ground_truth=args.ground_truth, match=args.match,
        allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip
    print(f"export-coco results: {n} entries -> {args.output}", file=sys.stderr)
    return 0


def _coco_dataset_options(args: argparse.Namespace) -> dict:
    from yolact_batch.io.coco_files import COCO_CATEGORIES

    return dict(
        settings=prelabel_from_args(args), polygons=args.polygons, tolerance=args.tolerance,
        categories=COCO_CATEGORIES if args.all_coco_categories else (), image_root=args.image_root,
        allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip


def cmd_export_dataset(args: argparse.Namespace) -> int:
    from yolact_batch.io.coco_files import export_dataset

    report = export_dataset(args.predictions, args.output, **_coco_dataset_options(args))
    print(report.line("export-coco dataset"), file=sys.stderr)
    return 0


def cmd_export_cvat(args: argparse.Namespace) -> int:
    from yolact_batch.io.coco_files import export_datumaro

    report = export_datumaro(args.predictions, args.output, images=args.images, **_coco_dataset_options(args))
    print(report.line("export-coco cvat"), file=sys.stderr)
    return 0


def cmd_export_labelstudio(args: argparse.Namespace) -> int:
    from yolact_batch.io.labelstudio import LabelStudioOptions, export_labelstudio

    options = LabelStudioOptions(
        regions="polygon" if args.polygons else "brush", tolerance=args.tolerance,
        image_prefixes=tuple(args.image_prefix), tasks_per_file=args.tasks_per_file,
        max_file_bytes=int(args.max_file_mb * 1e6),
    )  # fmt: skip
    report = export_labelstudio(
        args.predictions, args.output, settings=prelabel_from_args(args), options=options,
        extra_labels=args.extra_labels or (), allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip
    print(report.line("export-labelstudio"), file=sys.stderr)
    return 0


def cmd_export_yolo(args: argparse.Namespace) -> int:
    from yolact_batch.io.yolo_seg import YoloOptions, export_yolo

    report = export_yolo(
        args.predictions, args.output, settings=prelabel_from_args(args),
        options=YoloOptions(tolerance=args.tolerance, images=args.images), labels=args.names or (),
        allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip
    print(report.line("export-yolo"), file=sys.stderr)
    return 0


def cmd_overlays(args: argparse.Namespace) -> int:
    from yolact_batch.evaluation.overlays import render_overlays

    result = render_overlays(
        args.predictions, args.output, count=args.count, images=args.images, seed=args.seed,
        score_threshold=args.score_threshold, images_dir=args.images_dir, tile_size=args.tile_size,
        allow_incomplete=args.allow_incomplete, storage=storage_from_args(args),
    )  # fmt: skip
    for uri, reason in result.skipped:
        print(f"overlays: skipped {uri}: {reason}", file=sys.stderr)
    print(f"overlays: {len(result.images)} images, contact sheet {result.contact_sheet or '(none)'}", file=sys.stderr)
    return 0 if result.images or not result.skipped else 2


def add_command(subparsers) -> None:
    """Register ``evaluate``, ``export-coco {results,dataset}`` and ``overlays`` on ``subparsers``."""
    from yolact_batch.evaluation.coco_eval import EVALUATORS, IOU_TYPES
    from yolact_batch.io.image_match import MATCH_MODES
    from yolact_batch.io.prelabel import IMAGE_MODES

    match_help = "map rows to ground-truth images: auto (file name when it names one, else image_id), id, file-name"

    e = subparsers.add_parser(
        "evaluate", help="COCO evaluation (pycocotools) of a Parquet output or results JSON, with a report",
        description="--predictions also takes a COCO results JSON (.json). "
        "Ground-truth images without predictions count as misses.",
    )  # fmt: skip
    _add_output_options(e)
    e.set_defaults(func=cmd_evaluate)
    e.add_argument("--ground-truth", "-g", required=True, help="COCO instances JSON")
    e.add_argument("--output", "-o", required=True, help="report folder (summary.json, AP tables, charts)")
    e.add_argument("--iou-types", nargs="+", choices=IOU_TYPES, default=list(IOU_TYPES), help="default: bbox segm")
    e.add_argument("--match", choices=MATCH_MODES, default="auto", help=match_help)
    e.add_argument("--image-ids", type=_ids, help="evaluate only these ground-truth images (comma separated)")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG charts (no matplotlib needed)")
    e.add_argument(
        "--evaluator", choices=EVALUATORS, default="pycocotools",
        help="faster-coco-eval: the same numbers, faster (pip install faster-coco-eval)",
    )  # fmt: skip

    x = subparsers.add_parser("export-coco", help="COCO results JSON or COCO dataset (pre-labels) of an output")
    kinds = x.add_subparsers(dest="kind", required=True)
    r = kinds.add_parser("results", help="COCO results JSON, for any COCO evaluator")
    _add_output_options(r)
    r.add_argument("--output", "-o", required=True, help="JSON file to write")
    r.add_argument("--score-threshold", type=float, default=0.0, help="keep instances scoring above this (0)")
    r.add_argument("--iou-type", choices=("both", "bbox", "segm"), default="both",
                   help="both: bbox and segmentation per entry (drop bbox before a segm evaluation)")  # fmt: skip
    r.add_argument("--ground-truth", "-g", help="COCO instances JSON whose image ids to use (rows without image_id)")
    r.add_argument("--match", choices=MATCH_MODES, default="auto", help=match_help)
    r.set_defaults(func=cmd_export_results)
    d = kinds.add_parser("dataset", help="COCO dataset JSON, pre-labels as annotations (Roboflow, any COCO reader)")
    c = kinds.add_parser("cvat", help="COCO dataset folder that datumaro and CVAT import (annotations/, images/)")
    for p, output_help in ((d, "JSON file to write"), (c, "dataset folder (zip it for CVAT's COCO 1.0 import)")):
        _add_output_options(p)
        add_prelabel_options(p)
        p.add_argument("--output", "-o", required=True, help=output_help)
        p.add_argument("--polygons", action="store_true", help="masks as polygons (outer contours) instead of RLE")
        p.add_argument("--tolerance", type=float, default=0.0, help="polygon simplification, pixels (0: exact outline)")
        p.add_argument("--all-coco-categories", action="store_true", help="list all 80 COCO categories")
        p.add_argument("--image-root", help="file_name relative to this prefix of image_uri (default: base name)")
    d.set_defaults(func=cmd_export_dataset)
    c.add_argument(
        "--images", choices=IMAGE_MODES, default="none", help="copy or symlink the images into images/ (none)"
    )
    c.set_defaults(func=cmd_export_cvat)

    ls = subparsers.add_parser("export-labelstudio", help="Label Studio tasks with predictions + labeling config")
    _add_output_options(ls)
    add_prelabel_options(ls)
    ls.add_argument("--output", "-o", required=True, help="folder for tasks-NNNNN.json and labeling_config.xml")
    ls.add_argument(
        "--polygons", action="store_true", help="polygon regions (editable outlines) instead of brush masks"
    )
    ls.add_argument("--tolerance", type=float, default=1.0, help="polygon simplification, pixels (1)")
    ls.add_argument(
        "--image-prefix", action="append", default=[], type=_prefix, metavar="OLD=NEW",
        help="rewrite image URIs starting with OLD (repeatable), e.g. /data/images/=/data/local-files/?d=images/",
    )  # fmt: skip
    ls.add_argument("--tasks-per-file", type=int, default=5000, help="tasks per JSON file (5000)")
    ls.add_argument("--max-file-mb", type=float, default=50.0, help="start a new task file before this size (50 MB)")
    ls.add_argument("--extra-labels", type=_names, help="labels to list in the config besides the model's")
    ls.set_defaults(func=cmd_export_labelstudio)

    y = subparsers.add_parser("export-yolo", help="Ultralytics YOLO segmentation dataset (data.yaml, images/, labels/)")
    _add_output_options(y)
    add_prelabel_options(y)
    y.add_argument("--output", "-o", required=True, help="dataset folder")
    y.add_argument("--tolerance", type=float, default=1.0, help="polygon simplification, pixels (1)")
    y.add_argument("--images", choices=IMAGE_MODES, default="copy", help="copy (default), symlink or none")
    y.add_argument("--names", type=_names, help="class list of data.yaml, in order (default: the labels found)")
    y.set_defaults(func=cmd_export_yolo)

    o = subparsers.add_parser("overlays", help="draw masks, boxes, classes, scores on sample images")
    _add_output_options(o)
    o.add_argument("--output", "-o", required=True, help="folder for the PNGs")
    which = o.add_mutually_exclusive_group()
    which.add_argument("--count", "-n", type=int, default=16, help="sample this many images (16)")
    which.add_argument("--images", nargs="+", help="draw these images: ids, base names or URIs")
    o.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    o.add_argument("--score-threshold", type=float, default=0.3, help="draw instances scoring above this (0.3)")
    o.add_argument("--images-dir", help="read source images from this folder by base name instead of image_uri")
    o.add_argument("--tile-size", type=int, default=320, help="contact sheet cell size in pixels (320)")
    o.set_defaults(func=cmd_overlays)
