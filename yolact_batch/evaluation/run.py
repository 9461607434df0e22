"""``evaluate``: predictions (our Parquet output or a COCO results JSON) against COCO ground truth."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Collection, Sequence

from yolact_batch.core.coco import coco_results
from yolact_batch.evaluation.coco_eval import (
    IOU_TYPES,
    CocoEvaluation,
    check_evaluator,
    evaluate_coco,
    ground_truth_coco,
)
from yolact_batch.evaluation.report import check_plotting, summary_dict, write_report
from yolact_batch.io.image_match import ImageMatcher
from yolact_batch.io.results_io import iter_batches, load_json
from yolact_batch.io.storage import StorageOptions, filesystem

REPORT_DIR = "report"  # evaluate_output's default: OUTPUT/report
_READ_COLUMNS = ["image_uri", "image_id", "status", "instances"]


@dataclass(frozen=True)
class Predictions:
    """Predictions mapped onto ground-truth images.

    Attributes:
        results: COCO results entries (``image_id`` a ground-truth id, ``category_id``,
            ``score``, ``bbox`` and/or ``segmentation``).
        image_ids: ground-truth images the predictions cover (a row, even without
            instances, for Parquet; at least one result for a results JSON).
        rows: rows read (Parquet; 0 for a results JSON).
        error_rows: rows whose image could not be processed.
    """

    results: list
    image_ids: frozenset
    rows: int = 0
    error_rows: int = 0


def _names_error(what: str, names: list) -> ValueError:
    shown = ", ".join(str(n) for n in names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    return ValueError(f"{what} ({len(names)}): {shown}")


def _is_results_json(source: str, storage: StorageOptions) -> bool:
    fs, path = filesystem(source, storage)
    return path.lower().endswith(".json") and not fs.isdir(path)


def read_predictions(
    source: str,
    matcher: ImageMatcher,
    *,
    storage: StorageOptions = StorageOptions(),
    allow_incomplete: bool = False,
) -> Predictions:
    """Predictions of a Parquet output (streamed a record batch at a time) or of a COCO
    results JSON (``image_id`` an id, or a file name matched like a row's ``image_uri``).

    Raises ``ValueError`` naming the predictions whose image is not in the ground truth,
    and the images that appear in more than one row.
    """
    unknown: list = []
    if _is_results_json(source, storage):
        data = load_json(source, storage)
        if not isinstance(data, list):
            raise ValueError(f"{source}: a COCO results JSON is a list of entries, got {type(data).__name__}")
        results, seen = [], set()
        for r in data:
            v = r["image_id"]
            gid = matcher.by_file_name(v) if isinstance(v, str) else matcher.by_id(v)
            if gid is None:
                unknown.append(v)
                continue
            seen.add(gid)
            results.append({**r, "image_id": gid})
        if unknown:
            raise _names_error("results for images not in the ground truth", sorted(set(unknown), key=str))
        return Predictions(results, frozenset(seen))
    results, seen, repeated, rows, errors = [], set(), [], 0, 0
    for batch in iter_batches(source, columns=_READ_COLUMNS, storage=storage, allow_incomplete=allow_incomplete):
        for row in batch.to_pylist():
            rows += 1
            errors += row["status"] != "ok"
            gid = matcher.match(row["image_id"], row["image_uri"])
            if gid is None:
                uri, image_id = row["image_uri"], row["image_id"]
                unknown.append(uri if image_id is None else f"{uri} (id {image_id})")
                continue
            if gid in seen:
                repeated.append(f"{row['image_uri']} (ground-truth id {gid})")
            seen.add(gid)
            results.extend(coco_results(gid, row["instances"]))
    if unknown:
        raise _names_error("rows for images not in the ground truth", unknown)
    if repeated:
        raise _names_error("images with more than one row", repeated)
    return Predictions(results, frozenset(seen), rows, errors)


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate`` computed and wrote.

    Attributes:
        evaluations: per IoU type, pycocotools' numbers (``CocoEvaluation``).
        summary: the content of summary.json.
        report_dir: where the report was written.
        files: ``{key: file name}`` of the files written under ``report_dir``.
    """

    evaluations: dict
    summary: dict
    report_dir: str
    files: dict

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{iou_type: {"AP": ..., ...}}`` (NaN where undefined)."""
        return {t: dict(e.stats) for t, e in self.evaluations.items()}


def evaluate(
    predictions: str,
    ground_truth: str | dict,
    report_dir: str,
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    match: str = "auto",
    image_ids: Collection[int] | None = None,
    plots: bool = True,
    evaluator: str = "pycocotools",
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> EvaluationReport:
    """Evaluate predictions against COCO ground truth and write the report.

    Args:
        predictions: our Parquet output (job folder, folder of parts or one file) or a COCO
            results JSON (``.json``), local path or URL.
        ground_truth: COCO instances JSON (path or URL), or its parsed content.
        report_dir: folder for summary.json, per_class_ap.{csv,md}, pr_curves_*.png,
            per_class_ap_*.png, coco_eval_*.txt and report.md.
        iou_types: any of ``"bbox"``, ``"segm"``.
        match: how rows find their ground-truth image (``ImageMatcher.mode``): ``"auto"``,
            ``"id"`` or ``"file-name"``.
        image_ids: evaluate only these ground-truth images (default all of them: an image
            without predictions counts as misses).
        plots: write the PNG charts (needs matplotlib).
        evaluator: ``"pycocotools"`` or ``"faster-coco-eval"`` (equal numbers, faster).
        allow_incomplete: read a job output that has no ``_SUCCESS`` marker.
        storage: object storage options for every path.

    Predictions are read a record batch at a time; what stays in memory is the COCO results
    of the ground-truth images (pycocotools needs them all at once).
    """
    iou_types = tuple(dict.fromkeys(iou_types))
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise ValueError(f"iou_types must be among {IOU_TYPES}, got {list(iou_types)}")
    evaluator_name = check_evaluator(evaluator)
    if plots:
        check_plotting()
    # pycocotools rewrites ground-truth annotations in place (polygons -> RLE): never the caller's.
    dataset = load_json(ground_truth, storage) if isinstance(ground_truth, str) else copy.deepcopy(ground_truth)
    gt = ground_truth_coco(dataset)
    matcher = ImageMatcher(tuple(dataset["images"]), match)
    if image_ids is not None:
        missing = sorted(set(image_ids) - set(gt.getImgIds()))
        if missing:
            raise _names_error("image_ids not in the ground truth", missing)
    preds = read_predictions(predictions, matcher, storage=storage, allow_incomplete=allow_incomplete)
    evaluations: dict[str, CocoEvaluation] = {
        t: evaluate_coco(gt, preds.results, t, image_ids=image_ids, evaluator=evaluator) for t in iou_types
    }
    evaluated = set(gt.getImgIds()) if image_ids is None else set(image_ids)
    counts = {
        "ground_truth_images": len(gt.getImgIds()),
        "evaluated_images": len(evaluated),
        "images_without_predictions": len(evaluated - preds.image_ids),
        "rows": preds.rows,
        "error_rows": preds.error_rows,
        "predictions": len(preds.results),
    }
    inputs = {
        "predictions": predictions, "ground_truth": ground_truth if isinstance(ground_truth, str) else "(in memory)",
    }  # fmt: skip
    summary = summary_dict(evaluations, counts, inputs, evaluator_name)
    names = {int(c["id"]): c["name"] for c in dataset["categories"]}
    files = write_report(report_dir, evaluations, summary, names, plots=plots, storage=storage)
    return EvaluationReport(evaluations, summary, report_dir, files)


def evaluate_output(
    output_uri: str,
    ground_truth: str | dict,
    report_dir: str | None = None,
    *,
    iou_types: Sequence[str] = IOU_TYPES,
    match: str = "auto",
    plots: bool = True,
    evaluator: str = "pycocotools",
    allow_incomplete: bool = False,
    storage: StorageOptions = StorageOptions(),
) -> EvaluationReport:
    """Evaluate a job output folder; the report goes to ``report_dir`` (default ``OUTPUT/report``).

    For the end of a ``segment --ground-truth`` job, on the driver, once the Parquet parts
    are written (``allow_incomplete=True`` when it runs before ``_SUCCESS`` exists). Call
    ``check_evaluator(evaluator)`` and, with plots, ``check_plotting()`` when the job starts
    so a missing package fails before the inference. Other arguments: see :func:`evaluate`.
    """
    report_dir = report_dir or f"{output_uri.rstrip('/')}/{REPORT_DIR}"
    return evaluate(
        output_uri, ground_truth, report_dir, iou_types=iou_types, match=match, plots=plots, evaluator=evaluator,
        allow_incomplete=allow_incomplete, storage=storage,
    )  # fmt: skip
