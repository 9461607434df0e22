"""``yolact-batch`` command line: the only place that parses argv."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a model."""
    g = parser.add_argument_group("inference (defaults reproduce the reference evaluation)")
    g.add_argument("--providers", default="cpu", help="ONNX Runtime providers, comma separated: cpu, cuda, tensorrt")
    g.add_argument("--sidecar", help="JSON/TOML description of an ONNX model without yolact_batch metadata")
    g.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    g.add_argument("--score-threshold", type=float, default=0.0, help="keep scores above this (0; 0.3 for pre-labeling)")
    g.add_argument("--classes", help="keep only these classes: comma-separated names or COCO category ids")
    g.add_argument("--mask-threshold", type=float, default=0.5, help="mask pixel on above this (0.5)")
    g.add_argument("--max-detections", type=int, help="detections per image (model default: 100)")
    g.add_argument("--top-k", type=int, help="candidates per class entering NMS (raw models; 200)")
    g.add_argument("--conf-threshold", type=float, help="minimum prior confidence (raw models; 0.05)")
    g.add_argument("--iou-threshold", type=float, help="NMS IoU threshold (raw models; 0.5)")
    g.add_argument("--cross-class-nms", action="store_true", default=None, help="one NMS over all classes (raw models)")
    g.add_argument("--nms", choices=("fast", "greedy"), help="NMS method (raw models; fast)")


def model_kwargs(args: argparse.Namespace) -> dict:
    """YolactModel keyword arguments from parsed inference options."""
    return dict(
        providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()),
        sidecar=args.sidecar,
        batch_size=args.batch_size,
        score_threshold=args.score_threshold,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        mask_threshold=args.mask_threshold,
        max_detections=args.max_detections,
        top_k=args.top_k,
        conf_threshold=args.conf_threshold,
        iou_threshold=args.iou_threshold,
        cross_class_nms=args.cross_class_nms,
        nms=args.nms,
    )


def _list_images(inputs: Sequence[str]) -> list[Path]:
    from yolact_batch.sources import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            raise SystemExit(f"error: {item}: no such file or directory")
    if not files:
        raise SystemExit(f"error: no images found in {list(inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def image_id_from_name(path: Path) -> int | None:
    """COCO-style file names (``000000184324.jpg``) carry their image id; others have none."""
    return int(path.stem) if path.stem.isdigit() else None


def cmd_predict(args: argparse.Namespace) -> int:
    from yolact_batch.model import YolactModel
    from yolact_batch.preprocess import ImageDecodeError
    from yolact_batch.schema import error_row, ok_row

    files = _list_images(args.images)
    model = YolactModel(args.model, **model_kwargs(args))
    start, errors, count = time.perf_counter(), 0, 0
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    try:
        for first in range(0, len(files), model.batch_size):
            chunk = files[first : first + model.batch_size]
            images, good = [], []
            for path in chunk:
                try:
                    images.append(model.load_image(path.read_bytes()))
                    good.append(path)
                except (OSError, ImageDecodeError) as exc:
                    errors += 1
                    row = error_row(image_uri=str(path), image_id=image_id_from_name(path), error=str(exc), model=model.ref)
                    out.write(json.dumps(row) + "\n")
            for path, dets in zip(good, model(images) if images else []):
                count += len(dets)
                row = ok_row(dets, image_uri=str(path), image_id=image_id_from_name(path), model=model.ref)
                out.write(json.dumps(row) + "\n")
            done = first + len(chunk)
            print(f"\rpredict: {done}/{len(files)} images", end="", file=sys.stderr, flush=True)
    finally:
        if out is not sys.stdout:
            out.close()
    elapsed = time.perf_counter() - start
    print(
        f"\npredict: {len(files)} images ({errors} errors), {count} instances in {elapsed:.1f}s "
        f"({len(files) / elapsed:.2f} img/s) -> {args.output}",
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from yolact_batch.export.onnx_export import export_onnx
    except ImportError as exc:
        raise SystemExit(f"error: export needs torch and onnx: pip install 'yolact-batch[export]' ({exc})")
    from yolact_batch.settings import DetectSettings

    detect = DetectSettings(
        conf_threshold=args.conf_threshold, iou_threshold=args.iou_threshold, top_k=args.top_k,
        max_detections=args.max_detections, cross_class=args.cross_class_nms,
    )
    start = time.perf_counter()
    path = export_onnx(
        args.checkpoint, args.config, args.output,
        contract=args.contract, detect=detect, score_threshold=args.score_threshold,
    )
    print(f"export: wrote {path} ({args.contract} contract) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0


def _actors(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    """Options of the distributed ``segment`` job (also used by ``jobs/segment.py``)."""
    from yolact_batch.preprocess import DEFAULT_MAX_PIXELS
    from yolact_batch.sources import FORMATS

    parser.add_argument("--input", required=True, help="images: directory/prefix, glob, manifest, tar shards, Parquet, COCO json")
    parser.add_argument("--model", required=True, help="ONNX model path or URL (read once per model actor)")
    parser.add_argument("--output", required=True, help="output directory or prefix (predictions/, _SUCCESS)")
    s = parser.add_argument_group("input")
    s.add_argument("--input-format", choices=FORMATS, default="auto", help="what --input is (default: from the URL)")
    s.add_argument("--image-root", help="COCO input: directory or prefix of the annotation's file_name entries")
    s.add_argument("--image-column", help="Parquet input: image-bytes column (default: the only binary column)")
    s.add_argument("--uri-column", help="Parquet input: column naming each image (default FILE#row=N)")
    s.add_argument("--id-column", help="Parquet input: integer image-id column (default image_id when present)")
    s.add_argument("--limit", type=int, help="process only the first N images of the sorted listing")
    s.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="reject larger images (decompression bombs)")
    c = parser.add_argument_group("cluster and stage sizes")
    c.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    c.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx", help="inference backend (onnx)")
    c.add_argument("--engine-cache", help="tensorrt: folder or URL of built engines (default OUTPUT/_engines)")
    c.add_argument("--actors", type=_actors, default=(1, 1), help="model actors: N, or MIN-MAX to autoscale (1)")
    c.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per model actor; 0 = CPU inference (0)")
    c.add_argument("--cpus-per-actor", type=float, default=1.0, help="logical CPUs reserved per model actor (1)")
    c.add_argument("--actor-memory", type=float, help="GiB of memory reserved per model actor (default: none)")
    c.add_argument("--intra-op-threads", type=int, help="ONNX Runtime threads per actor (default: its own)")
    c.add_argument("--read-block", type=int, default=16, help="images per read task (16)")
    c.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode and per mask/RLE task (1)")
    c.add_argument("--io-cpus", type=float, default=0.25, help="CPUs per read and per commit task (0.25)")
    c.add_argument("--commit-size", type=int, default=256, help="images per committed Parquet file: the resume unit (256)")
    c.add_argument("--stall-timeout", type=float, default=1800.0, help="fail after this many seconds without progress")
    c.add_argument("--overwrite", action="store_true", help="delete existing predictions (any model/settings) and start over")
    parser.add_argument("--ground-truth", help="COCO instances.json: evaluate the output when the job ends (report in OUTPUT/report)")
    add_storage_options(parser)


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """Object-storage options; credentials never go on the command line."""
    o = parser.add_argument_group("object storage (credentials come from the AWS/GCP environment and config files)")
    o.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    o.add_argument("--anonymous", action="store_true", help="public buckets: no credentials")
    o.add_argument("--profile", help="AWS profile name")
    o.add_argument("--region", help="AWS region name")


def storage_from_args(args: argparse.Namespace):
    """``StorageOptions`` from the options ``add_storage_options`` added."""
    from yolact_batch.storage import StorageOptions

    return StorageOptions(endpoint_url=args.endpoint_url, anonymous=args.anonymous, profile=args.profile, region=args.region)


def cmd_segment(args: argparse.Namespace) -> int:
    from yolact_batch.job import InferenceOptions, JobConfig, Resources, run
    from yolact_batch.sources import SourceOptions

    kw = model_kwargs(args)
    config = JobConfig(
        input=args.input, output=args.output, model=args.model,
        source=SourceOptions(format=args.input_format, image_root=args.image_root, image_column=args.image_column,
                             uri_column=args.uri_column, id_column=args.id_column),
        storage=storage_from_args(args),
        inference=InferenceOptions(
            sidecar=kw["sidecar"], score_threshold=kw["score_threshold"],
            classes=tuple(kw["classes"]) if kw["classes"] else None, mask_threshold=kw["mask_threshold"],
            max_detections=kw["max_detections"], top_k=kw["top_k"], conf_threshold=kw["conf_threshold"],
            iou_threshold=kw["iou_threshold"], cross_class_nms=kw["cross_class_nms"], nms=kw["nms"],
            max_pixels=args.max_pixels,
        ),
        resources=Resources(
            backend=args.backend, providers=kw["providers"], engine_cache=args.engine_cache,
            batch_size=kw["batch_size"], actors=args.actors,
            gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor, actor_memory_gb=args.actor_memory,
            intra_op_threads=args.intra_op_threads, read_block=args.read_block, decode_cpus=args.decode_cpus,
            io_cpus=args.io_cpus, commit_size=args.commit_size, stall_timeout_s=args.stall_timeout,
        ),
        limit=args.limit, overwrite=args.overwrite, address=args.address,
    )
    if args.ground_truth:  # fail now, not after the job, when evaluation cannot run
        from yolact_batch.evaluation.coco_eval import check_evaluator
        from yolact_batch.evaluation.report import check_plotting

        from yolact_batch.storage import filesystem

        check_evaluator("pycocotools")
        check_plotting()
        fs, path = filesystem(args.ground_truth, config.storage)
        if not fs.isfile(path):
            raise FileNotFoundError(f"{args.ground_truth}: ground-truth file not found")
    try:
        run(config)
    except ImportError as exc:  # an optional package a URL needs, e.g. gcsfs for gs://
        raise RuntimeError(str(exc)) from None
    if args.ground_truth:
        from yolact_batch.evaluation.run import evaluate_output

        report = evaluate_output(args.output, args.ground_truth, storage=config.storage)
        scores = ", ".join(f"{t} AP {m['AP']:.3f}" for t, m in report.metrics.items())
        print(f"evaluate: {scores} -> {report.report_dir}/report.md", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolact-batch", description="Batch YOLACT instance segmentation")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="run a model on local images (no Ray), write JSON lines")
    p.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    p.add_argument("--model", required=True, help="ONNX model path or URL")
    p.add_argument("--output", "-o", default="-", help="JSON lines file (default: stdout)")
    add_inference_options(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("export", help="export an official .pth checkpoint to ONNX")
    e.add_argument("--checkpoint", required=True, help="official dbolya/yolact .pth file")
    e.add_argument("--config", required=True, help="reference config name, e.g. yolact_base, yolact_resnet50")
    e.add_argument("--output", "-o", required=True, help="ONNX file to write")
    e.add_argument("--contract", choices=("graph", "raw"), default="graph", help="graph: NMS in the model (default)")
    e.add_argument("--score-threshold", type=float, default=0.0, help="graph: drop detections scoring <= this (0)")
    e.add_argument("--conf-threshold", type=float, default=0.05)
    e.add_argument("--iou-threshold", type=float, default=0.5)
    e.add_argument("--top-k", type=int, default=200)
    e.add_argument("--max-detections", type=int, default=100)
    e.add_argument("--cross-class-nms", action="store_true")
    e.set_defaults(func=cmd_export)

    g = sub.add_parser("segment", help="distributed job (Ray Data): images in object storage -> Parquet with RLE masks")
    add_segment_options(g)
    add_inference_options(g)
    g.set_defaults(func=cmd_segment)

    from yolact_batch.report_cli import add_commands

    add_commands(sub)  # evaluate, export-coco, overlays
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
