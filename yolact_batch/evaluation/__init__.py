"""COCO evaluation of our Parquet output or a COCO results JSON, and its report.

``evaluate`` / ``evaluate_output`` read predictions (streamed), map them to ground-truth
images (``ImageMatcher``), run pycocotools per IoU type (``evaluate_coco``) and write the
report (``write_report``). No Ray.
"""

from yolact_batch.evaluation.coco_eval import (
    EVALUATORS,
    IOU_TYPES,
    STAT_NAMES,
    CocoEvaluation,
    check_evaluator,
    evaluate_coco,
    ground_truth_coco,
)  # fmt: skip
from yolact_batch.evaluation.report import check_plotting, write_report
from yolact_batch.evaluation.run import (
    EvaluationReport,
    Predictions,
    evaluate,
    evaluate_output,
    read_predictions,
)
from yolact_batch.io.image_match import MATCH_MODES, ImageMatcher

__all__ = [
    "EVALUATORS", "IOU_TYPES", "MATCH_MODES", "STAT_NAMES", "CocoEvaluation", "EvaluationReport", "ImageMatcher",
    "Predictions", "check_evaluator", "check_plotting", "evaluate", "evaluate_coco", "evaluate_output",
    "ground_truth_coco", "read_predictions", "write_report",
]  # fmt: skip
