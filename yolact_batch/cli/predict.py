"""``yolact-batch predict``: a model on local images, no Ray, one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from yolact_batch.cli.options import add_inference_options, add_model_options, backend_from_args, request_from_args


def add_command(subparsers) -> None:
    p = subparsers.add_parser("predict", help="run a model on local images (no Ray), write JSON lines")
    p.add_argument("images", nargs="+", help="image files or directories (searched recursively)")
    p.add_argument("--model", required=True, help="model path or URL")
    p.add_argument("--output", "-o", default="-", help="JSON lines file (default: stdout)")
    add_model_options(p)
    add_inference_options(p)
    p.set_defaults(func=cmd_predict)


def list_images(inputs: Sequence[str]) -> list[Path]:
    """The image files named by ``inputs`` (files, or directories searched recursively)."""
    from yolact_batch.io.sources import IMAGE_SUFFIXES

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


def cmd_predict(args: argparse.Namespace) -> int:
    from yolact_batch.core.preprocess import ImageDecodeError
    from yolact_batch.io.schema import error_row, ok_row
    from yolact_batch.io.sources import image_id_from_name
    from yolact_batch.model import YolactModel

    files = list_images(args.images)
    model = YolactModel(
        args.model, request=request_from_args(args), backend=backend_from_args(args), sidecar=args.sidecar
    )
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
                    row = error_row(
                        image_uri=str(path), image_id=image_id_from_name(str(path)), error=str(exc), model=model.ref
                    )
                    out.write(json.dumps(row) + "\n")
            for path, dets in zip(good, model(images) if images else []):
                count += len(dets)
                row = ok_row(dets, image_uri=str(path), image_id=image_id_from_name(str(path)), model=model.ref)
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
