import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import golden_case, golden_image_bytes
from yolact_batch.core.configs import get_config
from yolact_batch.core.preprocess import ImageDecodeError, decode_image, preprocess, to_bgr

CFG = get_config("yolact_resnet50")


@pytest.mark.parametrize("image_id", [165518, 184324, 205401, 376322])
def test_preprocess_is_bit_exact(image_id):
    arrays, _ = golden_case("yolact_resnet50", image_id)
    x = preprocess(decode_image(golden_image_bytes(image_id)), CFG)
    assert x.dtype == np.float32 and x.shape == (3, 550, 550)
    np.testing.assert_array_equal(x, arrays["input"][0])


def _encode(ext, image):
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


RNG = np.random.default_rng(0)
COLOR = RNG.integers(0, 255, (37, 53, 3), dtype=np.uint8)


def test_grayscale_png_becomes_three_equal_channels():
    gray = COLOR[:, :, 0]
    out = decode_image(_encode(".png", gray))
    assert out.shape == (37, 53, 3) and np.all(out == gray[:, :, None])


def test_alpha_is_dropped_not_composited():
    bgra = np.dstack([COLOR, np.full(COLOR.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_encode(".png", bgra)), COLOR)


def test_16_bit_png_is_reduced_to_8_bits_like_imread(tmp_path):
    deep = COLOR.astype(np.uint16) * 257 + 3
    path = tmp_path / "deep.png"
    path.write_bytes(_encode(".png", deep))
    out = decode_image(path.read_bytes())
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.imread(str(path)))  # the reference's reader
    assert np.abs(out.astype(int) - COLOR).max() <= 1


@pytest.mark.parametrize(
    "data,cause",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "unrecognised image format"),
        (_encode(".jpg", COLOR)[:200], "truncated JPEG"),
    ],
)
def test_bad_bytes_raise_with_cause(data, cause):
    with pytest.raises(ImageDecodeError, match=cause):
        decode_image(data)


def test_decompression_bomb_refused_from_header():
    big = _encode(".png", np.zeros((300, 400), np.uint8))
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(big, max_pixels=100_000)


def test_to_bgr_accepts_arrays():
    assert to_bgr(COLOR[:, :, 0]).shape == (37, 53, 3)
    assert to_bgr(np.dstack([COLOR, COLOR[:, :, :1]])).shape == (37, 53, 3)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_bgr(COLOR.astype(np.float32))


def test_darknet_transform_is_rgb_over_255():
    image = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    x = preprocess(image, get_config("yolact_darknet53"))
    resized = cv2.resize(image.astype(np.float32), (550, 550))
    np.testing.assert_array_equal(x[0], resized[:, :, 2] / np.float32(255))  # R first


def test_pil_bomb_limit_becomes_our_error():
    # A PNG header claiming 20000 x 20000 pixels (400 Mpx), over PIL's own 179 Mpx refusal.
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(data)


def reference_preprocess(image, config):
    """The transform written out as the reference writes it (numpy broadcasts): the slow oracle."""
    size = config.input_size
    resized = cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    if config.normalize == "unit":
        normalized = resized / np.float32(255)
    else:
        normalized = (resized - np.array(config.mean_bgr, np.float32)) / np.array(config.std_bgr, np.float32)
    return np.ascontiguousarray(normalized[:, :, ::-1].transpose(2, 0, 1))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 900),
    width=st.integers(1, 900),
    seed=st.integers(0, 2**16),
    smooth=st.booleans(),
    name=st.sampled_from(["yolact_resnet50", "yolact_darknet53"]),
)
def test_prop_preprocess_equals_the_reference_transform(height, width, seed, smooth, name):
    # Narrow images included: there a 1-channel resize would round differently from the 3-channel one.
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if smooth:
        image = cv2.GaussianBlur(image, (0, 0), 3)
    config = get_config(name)
    np.testing.assert_array_equal(preprocess(image, config), reference_preprocess(image, config))


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (31, 7), (407, 54), (860, 11), (550, 550), (1200, 1600)])
def test_preprocess_sizes_table(size):
    image = RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(image, CFG), reference_preprocess(image, CFG))


def test_preprocess_writes_into_a_batch_row():
    image = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    batch = np.full((2, 3, 550, 550), np.nan, np.float32)
    row = batch[1]
    assert preprocess(image, CFG, out=row) is row
    np.testing.assert_array_equal(batch[1], reference_preprocess(image, CFG))
    assert np.isnan(batch[0]).all()
    with pytest.raises(ValueError, match="float32\\[3, 550, 550\\]"):
        preprocess(image, CFG, out=np.zeros((3, 550, 549), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):  # OpenCV would write into a copy
        preprocess(image, CFG, out=np.zeros((3, 550, 1100), np.float32)[:, :, ::2])
