"""The README's main command: the whole product on the embedded default, in a few minutes.

1. generates a small held-out set of the synthetic shapes data (COCO format, deterministic),
2. runs the distributed ``segment`` job on it: local Ray, local files, ONNX Runtime on CPU,
   the bundled model (``yolact_batch/models/yolact_shapes.onnx``),
3. evaluates the Parquet output against the ground truth (COCO mAP report with curves),
4. draws overlays of a sample of images and a contact sheet,
and prints where the Parquet, the report and the pictures are.

    python jobs/demo.py [--images 48] [--output demo_out]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from yolact_batch.backends.factory import BackendOptions
from yolact_batch.core.synthetic import SHAPES_SEED, make_dataset
from yolact_batch.evaluation.overlays import render_overlays
from yolact_batch.evaluation.run import evaluate_output
from yolact_batch.io.sources import SourceOptions
from yolact_batch.job.config import JobConfig, Resources
from yolact_batch.job.plan import run

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "yolact_batch" / "models" / "yolact_shapes.onnx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the demo: data, segment job, evaluation, overlays.")
    parser.add_argument("--images", type=int, default=48, help="held-out synthetic images to segment (48)")
    parser.add_argument("--output", type=Path, default=Path("demo_out"), help="folder for everything (demo_out)")
    args = parser.parse_args(argv)
    if not BUNDLED_MODEL.is_file():
        raise SystemExit(f"error: the bundled model is missing at {BUNDLED_MODEL}; reinstall from a full checkout")

    start = time.perf_counter()
    out = args.output.resolve()
    # The held-out ("val") split of the data the model was trained on; image i is the same for any count.
    truth = make_dataset(out / "data", split="val", num_images=args.images, seed=SHAPES_SEED)
    print(f"demo: {args.images} held-out synthetic images -> {truth.parent}", file=sys.stderr)

    job = JobConfig(
        input=str(truth),
        output=str(out / "run"),
        model=str(BUNDLED_MODEL),
        source=SourceOptions(format="coco", image_root=str(truth.parent)),
        resources=Resources(backend=BackendOptions(batch_size=8), read_block=8),
        overwrite=True,  # a demo rerun starts over
    )
    run(job)
    report = evaluate_output(job.output, str(truth))
    pictures = render_overlays(job.output, str(out / "overlays"), count=8, score_threshold=0.3)

    metrics = report.metrics
    print(
        f"\ndemo finished in {time.perf_counter() - start:.0f}s\n"
        f"  box AP  {metrics['bbox']['AP']:.3f} (AP50 {metrics['bbox']['AP50']:.3f})\n"
        f"  mask AP {metrics['segm']['AP']:.3f} (AP50 {metrics['segm']['AP50']:.3f})\n"
        f"  predictions (Parquet): {job.output}/predictions/\n"
        f"  report:                {report.report_dir}/report.md\n"
        f"  overlays:              {out / 'overlays'}/ (contact sheet: {pictures.contact_sheet})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
