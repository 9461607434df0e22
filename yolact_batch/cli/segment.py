"""``yolact-batch segment``: the distributed job (Ray Data), images in -> Parquet with RLE masks."""

from __future__ import annotations

import argparse
import sys

from yolact_batch.cli.options import (
    add_inference_options,
    add_model_options,
    add_storage_options,
    add_suffix_option,
    backend_from_args,
    request_from_args,
    storage_from_args,
)  # fmt: skip


def add_command(subparsers) -> None:
    g = subparsers.add_parser(
        "segment", help="distributed job (Ray Data): images in object storage -> Parquet with RLE masks"
    )
    add_segment_options(g)
    g.set_defaults(func=cmd_segment)


def _actors(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def add_segment_options(parser: argparse.ArgumentParser) -> None:
    """Every option of the ``segment`` job (also used by ``jobs/segment.py``)."""
    from yolact_batch.io.sources import FORMATS

    parser.add_argument(
        "--input", required=True, help="images: directory/prefix, glob, manifest, tar shards, Parquet, COCO json"
    )
    parser.add_argument("--model", required=True, help="model path or URL (read once per model actor)")
    parser.add_argument("--output", required=True, help="output directory or prefix (predictions/, _SUCCESS)")
    s = parser.add_argument_group("input")
    s.add_argument("--input-format", choices=FORMATS, default="auto", help="what --input is (default: from the URL)")
    add_suffix_option(s)
    s.add_argument("--image-root", help="COCO input: directory or prefix of the annotation's file_name entries")
    s.add_argument("--image-column", help="Parquet input: image-bytes column (default: the only binary column)")
    s.add_argument("--uri-column", help="Parquet input: column naming each image (default FILE#row=N)")
    s.add_argument("--id-column", help="Parquet input: integer image-id column (default image_id when present)")
    s.add_argument("--limit", type=int, help="process only the first N images of the sorted listing")
    c = parser.add_argument_group("cluster and stage sizes")
    c.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    c.add_argument("--actors", type=_actors, default=(1, 1), help="model actors: N, or MIN-MAX to autoscale (1)")
    c.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per model actor; 0 = CPU inference (0)")
    c.add_argument("--cpus-per-actor", type=float, default=1.0, help="logical CPUs reserved per model actor (1)")
    c.add_argument("--actor-memory", type=float, help="GiB of memory reserved per model actor (default: none)")
    c.add_argument("--read-block", type=int, default=16, help="images per read task (16)")
    c.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode and per mask/RLE task (1)")
    c.add_argument("--io-cpus", type=float, default=0.25, help="CPUs per read and per commit task (0.25)")
    c.add_argument(
        "--commit-size", type=int, default=256, help="images per committed Parquet file: the resume unit (256)"
    )
    c.add_argument("--stall-timeout", type=float, default=1800.0, help="fail after this many seconds without progress")
    c.add_argument(
        "--overwrite", action="store_true", help="delete existing predictions (any model/settings) and start over"
    )
    parser.add_argument(
        "--ground-truth", help="COCO instances.json: evaluate the output when the job ends (report in OUTPUT/report)"
    )
    add_model_options(parser)
    add_inference_options(parser)
    add_storage_options(parser)


def config_from_args(args: argparse.Namespace):
    """The ``JobConfig`` the options of ``add_segment_options`` describe."""
    from yolact_batch.io.sources import SourceOptions
    from yolact_batch.job.config import JobConfig, Resources

    return JobConfig(
        input=args.input, output=args.output, model=args.model, sidecar=args.sidecar,
        source=SourceOptions(format=args.input_format, image_root=args.image_root, image_column=args.image_column,
                             uri_column=args.uri_column, id_column=args.id_column,
                             image_suffixes=args.image_suffixes),
        storage=storage_from_args(args),
        inference=request_from_args(args),
        resources=Resources(
            backend=backend_from_args(args), actors=args.actors, gpus_per_actor=args.gpus_per_actor,
            cpus_per_actor=args.cpus_per_actor, actor_memory_gb=args.actor_memory, read_block=args.read_block,
            decode_cpus=args.decode_cpus, io_cpus=args.io_cpus, commit_size=args.commit_size,
            stall_timeout_s=args.stall_timeout,
        ),
        limit=args.limit, overwrite=args.overwrite, address=args.address,
    )  # fmt: skip


def cmd_segment(args: argparse.Namespace) -> int:
    from yolact_batch.job.plan import run

    config = config_from_args(args)
    if args.ground_truth:  # fail now, not after the job, when evaluation cannot run
        from yolact_batch.evaluation.coco_eval import check_evaluator
        from yolact_batch.evaluation.report import check_plotting
        from yolact_batch.io.storage import filesystem

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
