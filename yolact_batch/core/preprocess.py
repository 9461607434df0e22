"""Image decoding and the reference's input transform.

Decoding follows the reference's ``cv2.imread(path)`` (``IMREAD_COLOR``): grayscale is
replicated to 3 channels, alpha is dropped (not composited), 16-bit images are reduced to
8 bits, CMYK JPEGs are converted, and the EXIF orientation is applied. Inputs that
OpenCV would only half-decode (a truncated JPEG gives a grey bottom and a warning) or
that are too large are rejected with an ``ImageDecodeError`` that names the cause; data
after a JPEG's end-of-image marker (phone "motion photos") is ignored, as ``cv2.imread``
does. Formats OpenCV does not read (TGA, HEIC, ...) are refused as such, not as corrupt.
"""

from __future__ import annotations

import io
import re

import cv2
import numpy as np

from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.settings import DEFAULT_MAX_PIXELS

# Readers as "Media I/O" of cv2.getBuildInformation() names them -> the suffixes cv2.imread reads with each.
_READERS = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "AVIF": (".avif",),
    "TIFF": (".tif", ".tiff"),
    "JPEG 2000": (".jp2",),
    "GIF": (".gif",),
    "HDR": (".hdr", ".pic"),
    "SUNRASTER": (".sr", ".ras"),
    "PXM": (".pbm", ".pgm", ".ppm", ".pxm", ".pnm"),
    "PFM": (".pfm",),
    "OpenEXR": (".exr",),
}
# PIL format names of what OpenCV reads: a file of another format PIL knows is "unsupported", not "corrupt".
_OPENCV_FORMATS = {"JPEG", "PNG", "WEBP", "AVIF", "TIFF", "JPEG2000", "GIF", "BMP", "DIB", "PPM", "SUN", "HDR"}
# Peak bytes per pixel while one image is decoded and preprocessed: BGR uint8 (3) and its float32
# copy (12) that cv2.resize reads; measured 15.1 on a 144 Mpx JPEG (ru_maxrss).
DECODE_BYTES_PER_PIXEL = 16


def decodable_suffixes() -> tuple[str, ...]:
    """File suffixes of the formats this OpenCV build reads (``cv2.imread``), sorted."""
    info = cv2.getBuildInformation()
    media = info[info.find("Media I/O") : info.find("Video I/O")]
    found = [".bmp", ".dib"]  # built in
    for name, suffixes in _READERS.items():
        match = re.search(rf"^\s*{re.escape(name)}:\s*(\S+)", media, re.M)
        if match and match.group(1) != "NO":
            found.extend(suffixes)
    return tuple(sorted(found))


def decode_peak_bytes(max_pixels: int) -> int:
    """Memory one decode + preprocess of the largest accepted image needs at its peak."""
    return DECODE_BYTES_PER_PIXEL * max_pixels


class ImageDecodeError(ValueError):
    """The bytes are not an image this pipeline can use; the message names why."""


def _header(data: bytes, max_pixels: int) -> tuple[tuple[int, int], str] | None:
    """((width, height), PIL format) from the image header without decoding pixels; None if PIL can't tell."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size, img.format or ""
    except Image.DecompressionBombError as exc:
        # PIL refuses past its own limit before telling the size; ours may be higher.
        if max_pixels <= 2 * (Image.MAX_IMAGE_PIXELS or 0):
            raise ImageDecodeError(f"decompression bomb guard: {exc}") from None
        return None
    except Exception:
        return None


def _jpeg_is_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the first scan; what follows it is ignored.

    Marker segments are skipped by their lengths up to the first start-of-scan (so an EXIF
    thumbnail's own end marker does not count); in entropy-coded data a 0xFF byte is always
    stuffed or a marker, so ``FF D9`` there is the real end of the image.
    """
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xD9:
            return True
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        elif marker == 0xDA:
            scan = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
            # Most files end with the marker: no need to search the entropy-coded data, whose
            # many stuffed 0xFF bytes make the search cost a tenth of the decode.
            return (data.endswith(b"\xff\xd9") and len(data) - 2 >= scan) or data.find(b"\xff\xd9", scan) >= 0
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to ``uint8[H, W, 3]`` BGR, like ``cv2.imread(path)``.

    Raises:
        ImageDecodeError: empty, truncated, unrecognised or too large input.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    header = _header(data, max_pixels)
    size, fmt = header if header is not None else (None, "")
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageDecodeError(
            f"image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression bomb guard; raise max_pixels to allow it)"
        )
    if data[:2] == b"\xff\xd8" and not _jpeg_is_complete(data):
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        if size is not None and fmt not in _OPENCV_FORMATS:
            raise ImageDecodeError(
                f"{fmt or 'this'} format is not one OpenCV reads (the reference decodes with "
                "cv2.imread); convert it to PNG or JPEG"
            )
        kind = "unrecognised image format" if size is None else "corrupt image data"
        raise ImageDecodeError(f"{kind}: OpenCV could not decode {len(data):,} bytes")
    if image.dtype != np.uint8:  # IMREAD_COLOR already gives 8 bits; keep the guarantee explicit
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    return image


def preprocess(image: np.ndarray, config: ModelConfig, out: np.ndarray | None = None) -> np.ndarray:
    """The reference's input transform, bit for bit.

    float32 -> ``cv2.resize`` to the square input size (bilinear, aspect ratio not kept)
    -> ``(x - mean) / std`` per BGR channel (``x / 255`` for DarkNet) -> BGR to RGB -> CHW.

    Args:
        image: ``uint8[H, W, 3]`` BGR image.
        out: ``float32[3, S, S]`` to write the result into (a row of a batch), or None.

    Returns:
        ``float32[3, S, S]`` with ``S = config.input_size`` (``out`` when given).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"preprocess expects a BGR image of shape (H, W, 3), got {image.shape}")
    size = config.input_size
    if out is None:
        out = np.empty((3, size, size), np.float32)
    elif out.shape != (3, size, size) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"preprocess out must be a C-contiguous float32[3, {size}, {size}], got {out.dtype}{list(out.shape)}"
        )
    # The resize stays the reference's 3-channel call (a 1-channel resize rounds differently on
    # narrow images). One OpenCV pass then moves its BGR channels to the RGB planes, where the
    # normalisation runs on contiguous memory: the same float32 operations as the reference's,
    # without numpy's slow broadcast over a last axis of 3.
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    cv2.mixChannels([resized], [out[0], out[1], out[2]], [0, 2, 1, 1, 2, 0])  # writes into out's planes
    for channel in range(3):
        plane = out[2 - channel]
        if config.normalize == "unit":
            np.divide(plane, np.float32(255), out=plane)
        else:
            np.subtract(plane, np.float32(config.mean_bgr[channel]), out=plane)
            np.divide(plane, np.float32(config.std_bgr[channel]), out=plane)
    return out


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Accept an in-memory array (``HxW`` gray, ``HxWx3`` BGR, ``HxWx4`` BGRA, uint8/uint16)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"images must be uint8 or uint16 arrays, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"images must be HxW, HxWx3 or HxWx4 arrays, got shape {image.shape}")
