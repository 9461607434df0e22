"""Fixtures the I/O tests share with others: COCO ground truth (evaluation) and the S3 server (job)."""

import pytest  # noqa: E402

from tests.evaluation.conftest import gt_dataset, gt_file, reference_results  # noqa: F401 (fixtures)
from tests.job.conftest import (  # noqa: E402
    AWS_ENV,
    S3Server,
    s3_server,  # noqa: F401 (a fixture)
)
from tests.job.tcp_proxy import OutageProxy  # noqa: E402


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
