"""Fixtures the I/O tests share with others: COCO ground truth (evaluation) and the S3 server (job);
the pre-labeling consumers' environments, started building as soon as tests that use them are collected."""

from tests.evaluation.conftest import gt_dataset, gt_file, reference_results  # noqa: F401 (fixtures)
from tests.job.conftest import s3_server  # noqa: F401 (a fixture)


def pytest_collection_finish(session):
    from tests.io.consumers import build_in_background

    build_in_background(
        name for item in session.items for name in getattr(getattr(item, "module", None), "USES_CONSUMERS", ())
    )
