"""Decode tasks declare memory that covers the largest image they accept (principle 8)."""

import pytest

from yolact_batch.core.configs import get_config
from yolact_batch.core.preprocess import decode_peak_bytes
from yolact_batch.core.settings import DEFAULT_MAX_PIXELS
from yolact_batch.job.config import Resources
from yolact_batch.job.pipeline import check_capacity, decode_memory

CFG = get_config("yolact_resnet50")


def test_the_declared_memory_grows_with_the_largest_accepted_image():
    default = decode_memory(16, CFG, DEFAULT_MAX_PIXELS)
    assert default >= decode_peak_bytes(DEFAULT_MAX_PIXELS) + 16 * 3 * CFG.input_size**2 * 4
    assert 2.9 * 2**30 < default < 3.1 * 2**30  # ~3.2 GB for 179 Mpx (the README says so)
    small = decode_memory(16, CFG, 12_000_000)
    assert default - small == decode_peak_bytes(DEFAULT_MAX_PIXELS) - decode_peak_bytes(12_000_000)


def test_a_decode_task_no_node_can_hold_is_refused_with_the_fix():
    need = decode_memory(16, CFG, DEFAULT_MAX_PIXELS)
    check_capacity(Resources(), {"CPU": 4.0}, need, largest_node_memory=need)
    with pytest.raises(
        RuntimeError,
        match=r"a decode task declares 3.0 GiB .* the largest node has 2.0 GiB for tasks: "
        r"lower --max-pixels",
    ):
        check_capacity(Resources(), {"CPU": 4.0}, need, largest_node_memory=2 * 2**30)
