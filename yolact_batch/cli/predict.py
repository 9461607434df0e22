"""``yolact-batch predict``: a model on local images, no Ray, one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from yolact_batch.cli.options import (
    add_inference_options,
    add_model_options,
    add_suffix_option,
    backend_from_args,
    request_from_args,
)


def add_command(subparsers) -> None:
    p = subparsers.add_parser("predict", help="run a model on local images (no Ray), write JSON lines")
    p.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    p.add_argument("--model", required=True, help="model path or URL")
    p.add_argument("--output", "-o", default="-", help="JSON lines file (default: stdout)")
    add_suffix_option(p)
    add_model_options(p)
    add_inference_options(p)
    p.set_defaults(func=cmd_predict)


def list_images(inputs: Sequence[str], options) -> tuple:
    """Work items of every image under ``inputs`` (files, folders searched recursively), listed as
    ``segment`` lists them (``io.sources.list_inputs``), and the entries not read."""
    import pyarrow as pa

    from yolact_batch.io.inventory import Skipped
    from yolact_batch.io.sources import InputError, list_inputs

    tables, skipped, seen = [], Skipped(), set()
    for item in inputs:
        try:
            listing = list_inputs(item, options)
        except InputError as exc:
            raise SystemExit(f"error: {exc}") from None
        skipped.merge(listing.skipped)
        uris = listing.items["image_uri"].to_pylist()
        tables.append(listing.items.filter(pa.array([uri not in seen for uri in uris], pa.bool_())))
        seen.update(uris)
    return pa.concat_tables(tables), skipped


def cmd_predict(args: argparse.Namespace) -> int:
    from yolact_batch.core.preprocess import ImageDecodeError
    from yolact_batch.io.reads import fetch
    from yolact_batch.io.schema import error_row, ok_row
    from yolact_batch.io.sources import SourceOptions
    from yolact_batch.model import YolactModel

    items, skipped = list_images(args.images, SourceOptions(format="images", image_suffixes=args.image_suffixes))
    model = YolactModel(
        args.model, request=request_from_args(args), backend=backend_from_args(args), sidecar=args.sidecar
    )
    start, errors, count, total = time.perf_counter(), 0, 0, items.num_rows
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    try:
        for first in range(0, total, model.batch_size):
            chunk = items.slice(first, model.batch_size)
            data, failures = fetch(chunk)
            images, good = [], []
            for row, blob, failure in zip(chunk.to_pylist(), data, failures):
                where = dict(image_uri=row["image_uri"], image_id=row["image_id"], model=model.ref)
                try:
                    if failure is not None:
                        raise OSError(failure)
                    images.append(model.load_image(blob))
                    good.append(where)
                except (OSError, ImageDecodeError) as exc:
                    errors += 1
                    out.write(json.dumps(error_row(**where, error=str(exc))) + "\n")
            for where, dets in zip(good, model(images) if images else []):
                count += len(dets)
                out.write(json.dumps(ok_row(dets, **where)) + "\n")
            print(f"\rpredict: {first + chunk.num_rows}/{total} images", end="", file=sys.stderr, flush=True)
    finally:
        if out is not sys.stdout:
            out.close()
    elapsed = time.perf_counter() - start
    print(
        f"\npredict: {total} images ({errors} errors), {count} instances in {elapsed:.1f}s "
        f"({total / elapsed:.2f} img/s) -> {args.output}",
        file=sys.stderr,
    )
    if skipped.total:
        print(f"predict: {skipped.total} input entries not read: {skipped.line()}", file=sys.stderr)
    return 0
