"""Fixtures the I/O tests share with others: COCO ground truth (evaluation) and the S3 server (job),
the S3 server behind an outage proxy (``s3``); the pre-labeling consumers' environments, started
building as soon as tests that use them are collected."""

import pytest

from tests.evaluation.conftest import gt_dataset, gt_file, reference_results  # noqa: F401 (fixtures)
from tests.job.conftest import (
    AWS_ENV,
    S3Server,
    s3_server,  # noqa: F401 (a fixture)
)
from tests.job.tcp_proxy import OutageProxy


def pytest_collection_finish(session):
    from tests.io.consumers import build_in_background

    build_in_background(
        name for item in session.items for name in getattr(getattr(item, "module", None), "USES_CONSUMERS", ())
    )


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """(server, proxy): a fresh S3 server, and a proxy in front of it whose clients see the outages a test makes."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    server = S3Server(tmp_path / "s3-state")
    server.start()
    proxy = OutageProxy(server.port)
    try:
        yield server, proxy
    finally:
        proxy.close()
        server.stop()
