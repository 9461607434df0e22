"""The COCO ground-truth fixtures of the evaluation tests, for the COCO file exports' tests."""

from tests.evaluation.conftest import gt_dataset, gt_file, reference_results  # noqa: F401 (fixtures)
