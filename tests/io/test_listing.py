"""What ``list_inputs`` reads from awkward inputs, with real files: every entry accounted for,
one entry never stops the listing, one image per file, ids only from unambiguous COCO names."""

import io
import os
import tarfile
import threading

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yolact_batch.io.reads import fetch
from yolact_batch.io.sources import (
    IMAGE_SUFFIXES,
    InputError,
    SourceOptions,
    image_id_from_name,
    image_suffixes,
    list_inputs,
)

JPEG = cv2.imencode(".jpg", np.full((20, 30, 3), 90, np.uint8))[1].tobytes()


def touch(path, data=JPEG):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(listing):
    return [u.rsplit("/", 1)[1] for u in listing.items["image_uri"].to_pylist()]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("000000184324.jpg", 184324),
        ("s3://b/val2017/000000184324.jpg", 184324),
        ("shard.tar#000000000139.jpg", 139),
        ("COCO_val2014_000000000042.jpg", 42),
        ("000000184324.png", 184324),
        ("2023.01.05.jpg", None),  # a date, not an id (was 2023, shared with 2023.01.06.jpg)
        ("2023.01.06.jpg", None),
        ("12.5.jpg", None),
        ("12.jpg", None),  # not a COCO name: 12 digits
        ("0000001843245.jpg", None),
        ("²²²²²²²²²²²².jpg", None),  # digits int() refuses
        ("١٢٣٤٥٦٧٨٩٠١٢.jpg", None),  # Arabic-Indic digits int() would accept
        ("000000184324", None),
        ("000000184324.jpg.tmp", None),
        ("x/000000184324_mask.png", None),
        ("images.parquet#row=3", None),
    ],
)
def test_image_id_comes_only_from_an_unambiguous_coco_name(name, expected):
    assert image_id_from_name(name) == expected


def test_image_suffixes_follow_what_opencv_reads_and_can_be_widened_or_narrowed():
    for suffix in (".jpg", ".jpeg", ".jfif", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".webp", ".gif", ".jp2"):
        assert suffix in IMAGE_SUFFIXES, suffix
    assert ".tga" not in IMAGE_SUFFIXES and ".heic" not in IMAGE_SUFFIXES  # OpenCV has no reader for them
    assert image_suffixes(".JPG, png") == (".jpg", ".png")
    widened = image_suffixes("+.heic,-gif")
    assert ".heic" in widened and ".gif" not in widened and ".jpg" in widened
    with pytest.raises(InputError, match="not both"):
        image_suffixes("+.heic,.jpg")
    with pytest.raises(InputError, match="lower-case"):
        SourceOptions(image_suffixes=("jpg",))


def test_a_folder_of_awkward_entries_lists_the_images_and_reports_the_rest(tmp_path):
    root = tmp_path / "in[1]"  # a real folder whose name has glob characters
    for name in ("a.jpg", "x.jfif", "frame.ppm", "².jpg", "2023.01.05.jpg", "2023.01.06.jpg"):
        touch(root / name)
    touch(root / "pic.tga")
    touch(root / "notes.txt", b"text")
    touch(root / "shard.tar", b"")
    touch(root / "table.parquet", b"")
    touch(root / "._a.jpg", b"\0\5\x16\7")
    os.mkfifo(root / "fifo.jpg")
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    (root / os.fsdecode(b"\xff\xfe.jpg")).write_bytes(JPEG)
    listing = list_inputs(str(root))
    assert names(listing) == ["2023.01.05.jpg", "2023.01.06.jpg", "a.jpg", "frame.ppm", "x.jfif", "².jpg"]
    assert listing.items["image_id"].to_pylist() == [None] * 6
    assert listing.skipped.to_dict() == {
        "Parquet file (read them with --input-format parquet)": {"count": 1, "examples": ["table.parquet"]},
        "dangling link": {"count": 1, "examples": ["dangling.jpg"]},
        "hidden": {"count": 1, "examples": ["._a.jpg"]},
        "name not UTF-8": {"count": 1, "examples": ["\\xff\\xfe.jpg"]},
        "not an image suffix (--image-suffixes widens the list)": {"count": 2, "examples": ["notes.txt", "pic.tga"]},
        "special file": {"count": 1, "examples": ["fifo.jpg"]},
        "tar shard (read shards with --input-format tar)": {"count": 1, "examples": ["shard.tar"]},
    }
    narrow = list_inputs(str(root), SourceOptions(image_suffixes=(".ppm",)))
    assert (
        names(narrow) == ["frame.ppm"]
        and narrow.skipped.counts["not an image suffix (--image-suffixes widens the list)"] == 7
    )


def test_a_path_that_exists_is_not_a_pattern_and_a_pattern_skips_special_files(tmp_path):
    touch(tmp_path / "[x]" / "a.jpg")
    touch(tmp_path / "x" / "b.jpg")  # what "[x]" would match as a pattern
    assert names(list_inputs(str(tmp_path / "[x]"))) == ["a.jpg"]
    os.mkfifo(tmp_path / "x" / "c.jpg")
    (tmp_path / "x" / os.fsdecode(b"\xff.jpg")).write_bytes(JPEG)
    pattern = list_inputs(str(tmp_path / "x" / "*.jpg"))
    assert names(pattern) == ["b.jpg"] and pattern.skipped.counts == {"special file": 1, "name not UTF-8": 1}


def test_a_single_special_file_is_refused_with_one_line(tmp_path):
    os.mkfifo(tmp_path / "f.jpg")
    with pytest.raises(InputError, match=r"f.jpg: not a regular file \(a FIFO"):
        list_inputs(str(tmp_path / "f.jpg"))
    os.symlink(tmp_path / "gone.jpg", tmp_path / "d.jpg")
    with pytest.raises(InputError, match=r"d.jpg: a dangling link \(its target does not exist\)"):
        list_inputs(str(tmp_path / "d.jpg"))


def test_name_derived_ids_shared_by_two_images_are_dropped(tmp_path):
    touch(tmp_path / "a" / "000000000001.jpg")
    touch(tmp_path / "b" / "000000000001.jpg")
    touch(tmp_path / "b" / "000000000002.jpg")
    listing = list_inputs(str(tmp_path))
    assert listing.items["image_id"].to_pylist() == [None, None, 2] and listing.ids_dropped == 2


def test_the_output_folder_inside_the_input_is_never_listed(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "out" / "overlays" / "a.png")
    listing = list_inputs(str(tmp_path), exclude=(str(tmp_path / "out"),))
    assert names(listing) == ["a.jpg"] and listing.skipped.counts == {"inside the output": 1}
    assert names(list_inputs(f"file://{tmp_path}", exclude=(f"file://{tmp_path}/out/",))) == ["a.jpg"]


def test_manifest_spellings_of_one_file_give_one_row(tmp_path):
    touch(tmp_path / "m" / "a.jpg")
    touch(tmp_path / "m" / "#b.jpg")
    d = tmp_path / "m"
    lines = [f"{d}//a.jpg", f"{d}/./a.jpg", f"file://{d}/a.jpg", f"{d}/sub/../a.jpg", "./a.jpg", "a.jpg"]
    (d / "list.txt").write_text("\n".join(lines) + "\n")
    listing = list_inputs(str(d / "list.txt"))
    assert listing.items["image_uri"].to_pylist() == [f"{d}/a.jpg"]
    assert listing.skipped.counts == {"listed more than once": 5}
    as_url = list_inputs(f"file://{d}/list.txt")
    assert as_url.items["image_uri"].to_pylist() == [f"file://{d}/a.jpg"]


def test_manifest_bom_comments_hash_names_and_bad_lines(tmp_path):
    d = tmp_path / "m"
    touch(d / "a.jpg")
    touch(d / "#b.jpg")
    (d / "list.txt").write_bytes(
        "\ufeffa.jpg\r\n#b.jpg\n# images to label\n#\nmissing.jpg\n".encode() + b"caf\xe9.jpg\n"
    )
    listing = list_inputs(str(d / "list.txt"))
    assert names(listing) == ["#b.jpg", "a.jpg", "missing.jpg"]
    assert listing.skipped.to_dict() == {"manifest line not UTF-8": {"count": 1, "examples": ["list.txt line 6"]}}
    data, errors = fetch(listing.items)
    assert errors[2] == f"read failed: {d}/missing.jpg not found (missing from the storage, or deleted after listing)"
    assert data[0] == data[1] == JPEG
    (d / "ids.txt").write_text("a.jpg\t7\n#b.jpg\t7\n")
    with pytest.raises(InputError, match="ids.txt line 2: image id 7 is also on line 1"):
        list_inputs(str(d / "ids.txt"))


def test_a_fifo_named_in_a_manifest_is_an_error_row_and_never_blocks(tmp_path):
    touch(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "f.jpg")
    (tmp_path / "list.txt").write_text("a.jpg\nf.jpg\n")
    items = list_inputs(str(tmp_path / "list.txt")).items
    result = {}
    reader = threading.Thread(target=lambda: result.update(out=fetch(items)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    data, errors = result["out"]
    assert data[0] == JPEG and errors[1] == f"read failed: {tmp_path}/f.jpg is a FIFO, not a regular file"


def test_tar_members_that_are_not_images_are_counted(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, blob in (("000000000001.jpg", JPEG), ("000000000001.json", b"{}"), ("000000000002.ppm", JPEG)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    listing = list_inputs(str(tmp_path / "s.tar"))
    assert names(listing) == ["s.tar#000000000001.jpg", "s.tar#000000000002.ppm"]
    assert listing.skipped.to_dict() == {
        "tar member not an image": {"count": 1, "examples": ["s.tar#000000000001.json"]}
    }


def test_a_mixed_folder_read_as_tar_reports_the_images_it_does_not_read(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        info = tarfile.TarInfo("a.jpg")
        info.size = len(JPEG)
        tar.addfile(info, io.BytesIO(JPEG))
    touch(tmp_path / "loose.jpg")
    pq.write_table(pa.table({"image": pa.array([JPEG], pa.binary())}), tmp_path / "t.parquet")
    listing = list_inputs(str(tmp_path), SourceOptions(format="tar"))
    assert names(listing) == ["s.tar#a.jpg"]
    assert listing.skipped.counts == {"not a tar file": 1, "Parquet file (read them with --input-format parquet)": 1}


def test_an_s3_prefix_reports_hidden_keys_and_leaves_out_the_output(s3):
    server, proxy = s3
    fs = server.filesystem()
    fs.mkdir("bucket")
    for key in (
        "in/000000000001.jpg",
        "in/sub/a.ppm",
        "in/._a.jpg",
        "in/.cache/x.jpg",
        "in/.cache/y.jpg",
        "in/out/overlays/a.png",
        "in/out/b.png",
        "in/notes.txt",
    ):
        fs.pipe(f"bucket/{key}", JPEG)
    from yolact_batch.io.storage import StorageOptions

    listing = list_inputs(
        "s3://bucket/in/", storage=StorageOptions(endpoint_url=server.endpoint), exclude=("s3://bucket/in/out",)
    )
    assert listing.items["image_uri"].to_pylist() == ["s3://bucket/in/000000000001.jpg", "s3://bucket/in/sub/a.ppm"]
    assert listing.items["image_id"].to_pylist() == [1, None]
    assert listing.skipped.to_dict() == {
        "hidden": {"count": 2, "examples": ["._a.jpg", ".cache/"]},
        "inside the output": {"count": 1, "examples": ["out/"]},
        "not an image suffix (--image-suffixes widens the list)": {"count": 1, "examples": ["notes.txt"]},
    }
