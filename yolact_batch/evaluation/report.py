"""The evaluation report: summary.json, per-class AP (CSV + Markdown), PR curves and AP bars
(PNG), pycocotools' printout and a report.md linking them; written through fsspec."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Mapping

import numpy as np

from yolact_batch.evaluation.coco_eval import STAT_NAMES, CocoEvaluation
from yolact_batch.io.storage import StorageOptions, filesystem

PER_CLASS_COLUMNS = ("AP", "AP50", "AP75")


def check_plotting() -> None:
    """Fail now, not after reading the predictions, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"evaluation plots need matplotlib: pip install 'yolact-batch[viz]' ({exc})") from None


def _json_value(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def summary_dict(evaluations: Mapping[str, CocoEvaluation], counts: dict, inputs: dict, evaluator: str) -> dict:
    """summary.json content: the 12 named metrics per IoU type (null where undefined) and counts."""
    return _json_value({
        "metrics": {t: dict(e.stats) for t, e in evaluations.items()},
        "counts": counts,
        "inputs": inputs,
        "evaluator": evaluator,
    })  # fmt: skip


def per_class_rows(evaluations: Mapping[str, CocoEvaluation], names: Mapping[int, str]) -> list[dict]:
    """One dict per category: id, name, ground-truth instances, detections, AP/AP50/AP75 per IoU type."""
    first = next(iter(evaluations.values()))
    columns = {
        f"{t}_{col}": e.class_ap(iou)
        for t, e in evaluations.items()
        for col, iou in zip(PER_CLASS_COLUMNS, (None, 0.5, 0.75))
    }
    return [
        {
            "category_id": cid,
            "category": names.get(cid, str(cid)),
            "gt_instances": int(first.gt_instances[k]),
            "detections": int(first.detections[k]),
            **{name: float(values[k]) for name, values in columns.items()},
        }
        for k, cid in enumerate(first.category_ids)
    ]


def _fmt(v, digits: int = 3) -> str:
    return "" if isinstance(v, float) and math.isnan(v) else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def per_class_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["category_id"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out.getvalue()


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) or "-" for v in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def per_class_markdown(rows: list[dict]) -> str:
    header = list(rows[0]) if rows else ["category_id"]
    return "# Per-class AP (area all, 100 detections; - : no ground truth)\n\n" + markdown_table(
        header, [[r[h] for h in header] for r in rows]
    )


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def pr_curves_png(e: CocoEvaluation, names: Mapping[int, str], top_classes: int = 10) -> bytes:
    """Left: precision-recall averaged over classes at IoU .50, .75 and .50:.95; right: the
    classes with the most ground truth at IoU .50."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    recall = e.recall_thresholds
    for iou, label in ((0.5, "IoU=.50"), (0.75, "IoU=.75"), (None, "IoU=.50:.95")):
        ap = float(np.nanmean(e.class_ap(iou))) if np.isfinite(e.class_ap(iou)).any() else float("nan")
        left.plot(recall, e.mean_pr_curve(iou), label=f"{label} (AP {ap:.3f})")
    left.set_title(f"{e.iou_type}: mean over classes with ground truth")
    order = [k for k in np.argsort(-e.gt_instances, kind="stable")[:top_classes] if e.gt_instances[k] > 0]
    ap50 = e.class_ap(0.5)
    for k in order:
        cid = e.category_ids[k]
        label = f"{names.get(cid, cid)} (n={e.gt_instances[k]}, AP50 {ap50[k]:.2f})"
        right.plot(recall, e.class_pr_curve(cid, 0.5), label=label)
    right.set_title(f"{e.iou_type}: IoU=.50, {len(order)} classes with most ground truth")
    for ax in (left, right):
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left" if ax is left else "best", fontsize=8)
    return _png(fig)


def class_ap_png(e: CocoEvaluation, names: Mapping[int, str]) -> bytes:
    """Horizontal bars of AP (IoU .50:.95) per class with ground truth, best at the top."""
    from matplotlib.figure import Figure

    ap = e.class_ap()
    keep = [k for k in np.argsort(-np.nan_to_num(ap, nan=-1), kind="stable") if np.isfinite(ap[k])]
    width, height = 8.0, max(3.0, 0.22 * len(keep) + 1.2)
    fig = Figure(figsize=(width, height))  # fixed margins in inches: constrained layout costs a second draw
    ax = fig.add_axes((1.5 / width, 0.6 / height, 1 - 1.8 / width, 1 - 1.0 / height))
    y = np.arange(len(keep))
    ax.barh(y, [ap[k] for k in keep], color="tab:blue")
    ax.set_yticks(y, [names.get(e.category_ids[k], str(e.category_ids[k])) for k in keep], fontsize=8)
    ax.set_ylim(len(keep) - 0.5, -0.5)  # best at the top, no empty margins
    for yi, k in zip(y, keep):
        ax.text(ap[k] + 0.01, yi, f"{ap[k]:.2f}", va="center", fontsize=7)
    ax.set(xlim=(0, 1.08), xlabel="AP @ IoU=.50:.95")
    ax.set_title(f"{e.iou_type}: per-class AP ({len(keep)} classes with ground truth, mean {e.stats['AP']:.3f})")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _nan_if_null(v):
    return float("nan") if v is None else v


def report_markdown(summary: dict, files: Mapping[str, str]) -> str:
    counts, metrics = summary["counts"], summary["metrics"]
    types = list(metrics)
    lines = [
        "# COCO evaluation",
        "",
        f"- predictions: `{summary['inputs']['predictions']}`",
        f"- ground truth: `{summary['inputs']['ground_truth']}`",
        f"- evaluator: {summary['evaluator']}",
        f"- images evaluated: {counts['evaluated_images']} ({counts['images_without_predictions']} without "
        f"predictions, counted as misses); rows with errors: {counts['error_rows']}",
        f"- predictions: {counts['predictions']}",
        "",
        "## Summary (" + ", ".join(f"[{t}]({files[f'coco_eval_{t}']})" for t in types) + ": the evaluator's output)",
        "",
        markdown_table(["metric", *types], [[n, *(_nan_if_null(metrics[t][n]) for t in types)] for n in STAT_NAMES]),
        "## Precision-recall curves",
        "",
        *(f"![{t} precision-recall]({files[f'pr_curves_{t}']})\n" for t in types if f"pr_curves_{t}" in files),
        "## Per-class AP",
        "",
        f"Table: [{files['per_class_md']}]({files['per_class_md']}) ([CSV]({files['per_class_csv']}))",
        "",
        *(f"![{t} per-class AP]({files[f'per_class_ap_{t}']})\n" for t in types if f"per_class_ap_{t}" in files),
    ]
    return "\n".join(lines)


def write_report(
    report_dir: str,
    evaluations: Mapping[str, CocoEvaluation],
    summary: dict,
    names: Mapping[int, str],
    *,
    plots: bool = True,
    storage: StorageOptions = StorageOptions(),
) -> dict[str, str]:
    """Write every report file under ``report_dir``; returns ``{key: file name}``."""
    fs, root = filesystem(report_dir, storage)
    fs.makedirs(root, exist_ok=True)
    files: dict[str, str] = {}

    def put(key: str, name: str, data: str | bytes) -> None:
        with fs.open(f"{root.rstrip('/')}/{name}", "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        files[key] = name

    rows = per_class_rows(evaluations, names)
    put("summary", "summary.json", json.dumps(summary, indent=2) + "\n")
    put("per_class_csv", "per_class_ap.csv", per_class_csv(rows))
    put("per_class_md", "per_class_ap.md", per_class_markdown(rows))
    for t, e in evaluations.items():
        put(f"coco_eval_{t}", f"coco_eval_{t}.txt", e.log)
        if plots:
            put(f"pr_curves_{t}", f"pr_curves_{t}.png", pr_curves_png(e, names))
            put(f"per_class_ap_{t}", f"per_class_ap_{t}.png", class_ap_png(e, names))
    put("report", "report.md", report_markdown(summary, files))
    return files
