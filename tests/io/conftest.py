"""Fixtures the I/O tests share with others: COCO ground truth (evaluation) and the S3 server (job)."""

from tests.evaluation.conftest import gt_dataset, gt_file, reference_results  # noqa: F401 (fixtures)
from tests.job.conftest import s3_server  # noqa: F401 (a fixture)
