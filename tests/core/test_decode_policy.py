"""Decode what ``cv2.imread`` decodes, refuse only what it cannot, and declare the memory a
decode needs (real files: written to disk and read back with ``cv2.imread`` as the oracle)."""

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from yolact_batch.core.preprocess import (
    DECODE_BYTES_PER_PIXEL,
    ImageDecodeError,
    decodable_suffixes,
    decode_image,
    decode_peak_bytes,
)

RNG = np.random.default_rng(5)
PICTURE = (RNG.random((48, 64, 3)) * 255).astype(np.uint8)


def pil_bytes(fmt, **kw):
    buffer = io.BytesIO()
    Image.fromarray(PICTURE[:, :, ::-1]).save(buffer, fmt, **kw)
    return buffer.getvalue()


def imread(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


JPEG = cv2.imencode(".jpg", PICTURE)[1].tobytes()


@pytest.mark.parametrize(
    "tail",
    [b"", b"\0\0\r\n", b"MotionPhoto_Data" + bytes(range(256)) * 40, b"\xff\xd8\xff\xe0junk"],
    ids=["plain", "padding", "motion-photo", "second-soi"],
)
def test_a_jpeg_with_data_after_its_end_decodes_as_imread_does(tmp_path, tail):
    data = JPEG + tail
    expected = imread(tmp_path, data, ".jpg")
    assert expected is not None
    np.testing.assert_array_equal(decode_image(data), expected)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_truncated_jpeg_is_still_refused(cut):
    for data in (JPEG, pil_bytes("JPEG", progressive=True), pil_bytes("JPEG", exif=Image.Exif().tobytes())):
        with pytest.raises(ImageDecodeError, match="truncated JPEG"):
            decode_image(data[: int(len(data) * cut)])


@pytest.mark.parametrize(
    "fmt, suffix",
    [
        ("PPM", ".ppm"),
        ("GIF", ".gif"),
        ("JPEG2000", ".jp2"),
        ("BMP", ".bmp"),
        ("TIFF", ".tif"),
        ("WEBP", ".webp"),
        ("JPEG", ".jfif"),
    ],
)
def test_formats_opencv_reads_are_decoded_exactly(tmp_path, fmt, suffix):
    data = pil_bytes(fmt)
    assert suffix in decodable_suffixes()
    np.testing.assert_array_equal(decode_image(data), imread(tmp_path, data, suffix))


def test_a_valid_tga_is_called_unsupported_not_corrupt(tmp_path):
    data = pil_bytes("TGA")
    assert imread(tmp_path, data, ".tga") is None and ".tga" not in decodable_suffixes()
    with pytest.raises(ImageDecodeError, match="TGA format is not one OpenCV reads .* convert it to PNG or JPEG"):
        decode_image(data)


MEASURE = """
import sys
from yolact_batch.core.configs import get_config
from yolact_batch.core.preprocess import decode_image, preprocess


def status(key):  # kB -> bytes, from /proc/self/status
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024


data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark (VmHWM) to the current RSS
before = status("VmRSS")
image = decode_image(data)
preprocess(image, get_config("yolact_resnet50"))
print(status("VmHWM") - before)
"""


def test_the_declared_decode_memory_covers_a_real_decode_of_a_large_image(tmp_path):
    height, width = 5000, 6000  # 30 Mpx: the peak scales with pixels (measured 15.1 B/px at 144 Mpx)
    image = np.zeros((height, width, 3), np.uint8)
    image[::7] = 200
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), image)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    peak = int(out.stdout.split()[-1])
    assert 0.5 * decode_peak_bytes(height * width) < peak <= decode_peak_bytes(height * width)
    assert DECODE_BYTES_PER_PIXEL * 178_956_970 == decode_peak_bytes(178_956_970)
