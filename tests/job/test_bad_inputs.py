"""Bad input never kills the job: a manifest of broken, odd and good images, run on the cluster.

Policy: decoding follows ``cv2.imread(path, IMREAD_COLOR)`` like the reference: grayscale and
16-bit images are converted, alpha is dropped, CMYK is converted, the EXIF orientation is
applied, and the content decides the format, not the extension. Whatever cannot be decoded
becomes a row with ``status="error"`` whose ``error`` names the cause.
"""

import io
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.job.conftest import jpeg_images, read_rows, run_segment, success

RNG = np.random.default_rng(0)
PICTURE = Image.fromarray((RNG.random((60, 80, 3)) * 255).astype(np.uint8))  # 80 wide, 60 high


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a huge image with almost no data: a decompression bomb."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encoded(PICTURE, "JPEG", exif=exif.tobytes())


GOOD = jpeg_images(4)
JPEG = next(iter(GOOD.values()))
# name -> (bytes, expected error text) for inputs that must become error rows
BROKEN = {
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "truncated JPEG (no end-of-image marker)"),
    "empty.jpg": (b"", "empty file (0 bytes)"),
    "notes.jpg": (b"these are not the pixels you are looking for\n", "unrecognised image format"),
    "random.png": (RNG.bytes(4096), "unrecognised image format"),
    "error_page.jpg": (b"<html><body>403 Forbidden</body></html>", "unrecognised image format"),
    "bomb.png": (png_claiming(20000, 20000), "decompression bomb"),
    "truncated.png": (encoded(PICTURE, "PNG")[:300], "corrupt image data"),
}
# name -> (bytes, (height, width)) for inputs that must be processed
ODD = {
    "gray16.png": (
        cv2.imencode(".png", (np.arange(60 * 80).reshape(60, 80) * 13).astype(np.uint16))[1].tobytes(),
        (60, 80),
    ),
    "cmyk.jpg": (encoded(PICTURE.convert("CMYK"), "JPEG"), (60, 80)),
    "gray.jpg": (encoded(PICTURE.convert("L"), "JPEG"), (60, 80)),
    "alpha.png": (encoded(PICTURE.convert("RGBA"), "PNG"), (60, 80)),
    "exif_rotated.jpg": (rotated_exif(), (80, 60)),  # EXIF orientation applied, like cv2.imread
    "png_named.jpg": (encoded(PICTURE, "PNG"), (60, 80)),
    "jpeg_named.png": (encoded(PICTURE, "JPEG"), (60, 80)),
    "one_pixel.png": (encoded(Image.new("RGB", (1, 1)), "PNG"), (1, 1)),
    "picture.bmp": (encoded(PICTURE, "BMP"), (60, 80)),
    "picture.tiff": (encoded(PICTURE, "TIFF"), (60, 80)),
    "picture.webp": (encoded(PICTURE, "WEBP"), (60, 80)),
}


@pytest.fixture(scope="module")
def bad_job(tmp_path_factory, ray_cluster, model_path):
    root = tmp_path_factory.mktemp("bad")
    folder = root / "mixed"
    folder.mkdir()
    for name, blob in {**GOOD, **{n: b for n, (b, _) in BROKEN.items()}, **{n: b for n, (b, _) in ODD.items()}}.items():
        (folder / name).write_bytes(blob)
    (folder / "folder.jpg").mkdir()  # a directory where an image was expected
    entries = sorted(p.name for p in folder.iterdir()) + ["deleted.jpg"]  # listed, never there
    (root / "manifest.txt").write_text("".join(f"mixed/{e}\n" for e in entries))
    shutil.copy(model_path, root / "model.onnx")
    out = root / "out"
    # Relative paths: the driver resolves them, Ray's workers run elsewhere.
    result = run_segment(
        "--input",
        "manifest.txt",
        "--model",
        "model.onnx",
        "--output",
        "out",
        "--address",
        ray_cluster.address,
        "--batch-size",
        "4",
        "--commit-size",
        "8",
        "--actors",
        "1",
        "--cpus-per-actor",
        "0.5",
        "--stall-timeout",
        "120",
        cwd=root,
    )
    rows = {r["image_uri"].rsplit("/", 1)[1]: r for r in read_rows(out)}
    assert all(r["image_uri"].startswith(f"{root}/mixed/") for r in rows.values())
    return result, rows, entries, out


def test_the_job_exits_0_with_one_row_per_entry(bad_job):
    result, rows, entries, out = bad_job
    assert result.returncode == 0 and sorted(rows) == sorted(entries)
    assert len(BROKEN) + len(ODD) + 2 >= 12  # kinds of bad or odd input in the corpus
    counts = success(out)
    assert counts["images"] == len(entries) and counts["images_error"] == len(BROKEN) + 2


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_undecodable_file_gets_an_error_row_naming_the_cause(bad_job, name):
    row = bad_job[1][name]
    assert row["status"] == "error" and BROKEN[name][1] in row["error"], row["error"]
    assert row["instances"] == [] and row["width"] is None and row["height"] is None


def test_files_gone_or_replaced_after_listing_are_error_rows(bad_job):
    rows = bad_job[1]
    assert "not found (missing from the storage, or deleted after listing)" in rows["deleted.jpg"]["error"]
    assert rows["folder.jpg"]["status"] == "error" and rows["folder.jpg"]["error"].startswith("read failed")


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_but_valid_images_are_processed(bad_job, name):
    row = bad_job[1][name]
    assert row["status"] == "ok" and row["error"] is None
    assert (row["height"], row["width"]) == ODD[name][1]


def test_good_images_keep_their_instances(bad_job):
    rows = bad_job[1]
    for name in GOOD:
        assert rows[name]["status"] == "ok" and len(rows[name]["instances"]) > 0
        assert rows[name]["image_id"] == int(name[:12])
